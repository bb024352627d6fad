"""Optimizers: hold their state, call one C update per parameter (csrc/optim.c)."""
from ._kernels import lib
from .tensor import Tensor


class SGD:
    """SGD with momentum (PyTorch's form) and L2 weight decay on weights."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.params, self.lr = list(params), lr
        self.momentum, self.weight_decay = momentum, weight_decay
        self.reset()

    def reset(self):
        self.velocity = [Tensor(p.value.shape) for p in self.params]

    def step(self):
        for p, v in zip(self.params, self.velocity):
            wd = self.weight_decay if p.decay else 0.0
            lib.sgd_update(p.value.ptr, p.grad.ptr, v.ptr, p.value.size, self.lr,
                           self.momentum, wd)


class Adam:
    """Adam with decoupled weight decay (AdamW) on weights."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params, self.lr = list(params), lr
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.reset()

    def reset(self):
        self.t = 0
        self.m = [Tensor(p.value.shape) for p in self.params]
        self.v = [Tensor(p.value.shape) for p in self.params]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            wd = self.weight_decay if p.decay else 0.0
            lib.adam_update(p.value.ptr, p.grad.ptr, m.ptr, v.ptr, p.value.size, self.lr,
                            b1, b2, self.eps, wd, self.t)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
