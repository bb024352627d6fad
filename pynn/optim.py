"""Optimizers: hold their state and update the parameters in C (csrc/optim.c).

On construction an optimizer moves its parameters into two flat arrays, one
for the weights (with weight decay) and one for the biases (without), and
points each Parameter's value and grad at its slice. A step is then two C
calls over contiguous memory, which the kernel splits across threads,
instead of one small call per tensor.
"""
from ._kernels import lib
from .tensor import Tensor


class Optimizer:
    def __init__(self, params, lr, weight_decay):
        self.params, self.lr, self.weight_decay = list(params), lr, weight_decay
        self.groups = []  # (values, grads, decay?) flat Tensors
        for decay in (True, False):
            group = [p for p in self.params if p.decay == decay]
            if not group:
                continue
            n = sum(p.value.size for p in group)
            values, grads, start = Tensor((n,)), Tensor((n,)), 0
            for p in group:
                stop = start + p.value.size
                p.value = values.rows(start, stop).view(p.value.shape).copy_(p.value)
                p.grad = grads.rows(start, stop).view(p.grad.shape)
                start = stop
            self.groups.append((values, grads, decay))
        self.reset()

    def decay(self, group_decays):
        return self.weight_decay if group_decays else 0.0


class SGD(Optimizer):
    """SGD with momentum (PyTorch's form) and L2 weight decay on weights."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.momentum = momentum
        super().__init__(params, lr, weight_decay)

    def reset(self):
        self.velocity = [Tensor(values.shape) for values, _, _ in self.groups]

    def step(self):
        for (values, grads, decay), v in zip(self.groups, self.velocity):
            lib.sgd_update(values.ptr, grads.ptr, v.ptr, values.size, self.lr, self.momentum,
                           self.decay(decay))


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW) on weights."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.betas, self.eps = betas, eps
        super().__init__(params, lr, weight_decay)

    def reset(self):
        self.t = 0
        self.m = [Tensor(values.shape) for values, _, _ in self.groups]
        self.v = [Tensor(values.shape) for values, _, _ in self.groups]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for (values, grads, decay), m, v in zip(self.groups, self.m, self.v):
            lib.adam_update(values.ptr, grads.ptr, m.ptr, v.ptr, values.size, self.lr, b1, b2,
                            self.eps, self.decay(decay), self.t)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
