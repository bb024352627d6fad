"""Optimizers: hold their state and update the parameters in C (csrc/optim.c).

An optimizer takes a model's parameters (model.parameters(): one block of
values and one of gradients, pynn.model.Parameters, weights first): a step
is one C call over that contiguous memory, which the kernel splits across
threads, instead of one small call per tensor. Nothing is moved or copied.
"""
from ._kernels import lib
from .tensor import Tensor


class Optimizer:
    def __init__(self, params, lr, weight_decay):
        if not hasattr(params, "values"):
            raise TypeError("an optimizer takes model.parameters() (a Sequential's block of "
                            "parameters), not a list")
        self.params, self.lr, self.weight_decay = params, lr, weight_decay
        self.values, self.grads, self.n_decay = params.values, params.grads, params.n_decay
        self.reset()


class SGD(Optimizer):
    """SGD with momentum (PyTorch's form) and L2 weight decay on weights:

        g = dE/dw + weight_decay * w;   v = momentum * v + g;   w -= lr * v

    (momentum 0 and weight_decay 0: the lecture's plain gradient descent,
    w -= lr * dE/dw)."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.momentum = momentum
        super().__init__(params, lr, weight_decay)

    def reset(self):
        self.velocity = Tensor(self.values.shape)

    def step(self):
        lib.sgd_update(self.values.ptr, self.grads.ptr, self.velocity.ptr, self.values.size,
                       self.n_decay, self.lr, self.momentum, self.weight_decay)


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW) on weights; t counts steps from 1:

        m = b1 m + (1 - b1) g;           v = b2 v + (1 - b2) g^2     (g = dE/dw)
        mhat = m / (1 - b1^t);           vhat = v / (1 - b2^t)
        w -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * w)
    """

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
