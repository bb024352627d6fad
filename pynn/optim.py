"""Optimizers: hold their state and update the parameters in C (csrc/optim.c).

On construction an optimizer moves its parameters into one flat array, the
weights first (they get weight decay) and then the biases (they do not), and
points each Parameter's value and grad at its slice. A step is then one C
call over contiguous memory, which the kernel splits across threads, instead
of one small call per tensor.
"""
from ._kernels import lib
from .tensor import Tensor


class Optimizer:
    def __init__(self, params, lr, weight_decay):
        self.params, self.lr, self.weight_decay = list(params), lr, weight_decay
        ordered = ([p for p in self.params if p.decay] +
                   [p for p in self.params if not p.decay])
        n = sum(p.value.size for p in ordered)
        self.n_decay = sum(p.value.size for p in ordered if p.decay)
        self.values, self.grads = Tensor((n,)), Tensor((n,))
        start = 0
        for p in ordered:
            stop = start + p.value.size
            p.value = self.values.rows(start, stop).view(p.value.shape).copy_(p.value)
            p.grad = self.grads.rows(start, stop).view(p.grad.shape)
            start = stop
        self.reset()


class SGD(Optimizer):
    """SGD with momentum (PyTorch's form) and L2 weight decay on weights."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.momentum = momentum
        super().__init__(params, lr, weight_decay)

    def reset(self):
        self.velocity = Tensor(self.values.shape)

    def step(self):
        lib.sgd_update(self.values.ptr, self.grads.ptr, self.velocity.ptr, self.values.size,
                       self.n_decay, self.lr, self.momentum, self.weight_decay)


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW) on weights."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.betas, self.eps = betas, eps
        super().__init__(params, lr, weight_decay)

    def reset(self):
        self.t = 0
        self.m, self.v = Tensor(self.values.shape), Tensor(self.values.shape)

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        lib.adam_update(self.values.ptr, self.grads.ptr, self.m.ptr, self.v.ptr,
                        self.values.size, self.n_decay, self.lr, b1, b2, self.eps,
                        self.weight_decay, self.t)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
