"""Layers: small objects with forward(x) -> y and backward(dy) -> dx.

Each layer calls its pair of C kernels (csrc/layers.c) and keeps what its
backward pass needs. Output buffers are allocated once per batch size and
reused, so a training step allocates nothing.

Adding a layer: two C functions in csrc/layers.c, their declarations in
csrc/pynn.h, one class here, one gradient-check test in tests/test_gradcheck.py.
"""
import math

from ._kernels import ffi, lib
from .tensor import Tensor, check


class Parameter:
    """A trainable tensor, its gradient, and whether weight decay applies."""

    def __init__(self, name, value, decay):
        self.name = name
        self.value = value
        self.grad = Tensor(value.shape)
        self.decay = decay

    def __repr__(self):
        return f"Parameter({self.name}, {self.value.shape})"


class Module:
    """Base class: a layer without parameters that passes shapes through."""

    def parameters(self):
        return []

    def _buffer(self, cache, shape):
        """The reusable output buffer for this shape (allocated on first use)."""
        buf = cache.get(shape)
        if buf is None:
            buf = cache[shape] = Tensor(shape)
        return buf

    def __repr__(self):
        return f"{type(self).__name__}()"


class Linear(Module):
    """out = inp @ weight.T + bias, with weight (out_features, in_features).

    Weights start He-uniform (right for ReLU-like activations), biases zero.
    ``input_grad=False`` skips dL/dinp: the first layer never needs it.
    ``relu=True`` fuses a following ReLU into this layer's C calls (Sequential
    sets it when a ReLU follows): one call each way instead of two, and the
    max(., 0) is applied while the GEMM stores its result.
    """

    def __init__(self, in_features, out_features, rng, input_grad=True):
        self.in_features, self.out_features = in_features, out_features
        bound = math.sqrt(6.0 / in_features)
        w = [rng.uniform(-bound, bound) for _ in range(out_features * in_features)]
        self.weight = Parameter("weight", Tensor.from_list(w, (out_features, in_features)), True)
        self.bias = Parameter("bias", Tensor((out_features,)), False)
        self.input_grad, self.relu = input_grad, False
        self._out, self._dinp, self._inp, self._y = {}, {}, None, None

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, inp):
        B, C, OC = inp.shape[0], self.in_features, self.out_features
        check(inp, (B, C), what="Linear input")
        out = self._buffer(self._out, (B, OC))
        kernel = lib.dense_relu_forward if self.relu else lib.dense_forward
        kernel(out.ptr, inp.ptr, self.weight.value.ptr, self.bias.value.ptr, B, C, OC)
        self._inp, self._y = inp, out
        return out

    def backward(self, dout):
        inp = self._inp
        B, C, OC = inp.shape[0], self.in_features, self.out_features
        check(dout, (B, OC), what="Linear dout")
        dinp = self._buffer(self._dinp, (B, C)) if self.input_grad else None
        w, dinp_ptr = self.weight, dinp.ptr if dinp else ffi.NULL
        if self.relu:  # dout is masked in place by the ReLU's derivative first
            lib.dense_relu_backward(dinp_ptr, w.grad.ptr, self.bias.grad.ptr, dout.ptr,
                                    self._y.ptr, inp.ptr, w.value.ptr, B, C, OC)
        else:
            lib.dense_backward(dinp_ptr, w.grad.ptr, self.bias.grad.ptr, dout.ptr, inp.ptr,
                               w.value.ptr, B, C, OC)
        return dinp

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"


class _Elementwise(Module):
    """An activation: out = f(inp) element by element, any shape."""

    def __init__(self):
        self._out, self._dinp, self._inp, self._y = {}, {}, None, None

    def forward(self, inp):
        out = self._buffer(self._out, inp.shape)
        self._f(out, inp)
        self._inp, self._y = inp, out
        return out

    def backward(self, dout):
        check(dout, self._inp.shape, what=f"{type(self).__name__} dout")
        dinp = self._buffer(self._dinp, dout.shape)
        self._df(dinp, dout)
        return dinp


class ReLU(_Elementwise):
    def _f(self, out, inp):
        lib.relu_forward(out.ptr, inp.ptr, inp.size)

    def _df(self, dinp, dout):
        lib.relu_backward(dinp.ptr, dout.ptr, self._inp.ptr, dout.size)


class LeakyReLU(_Elementwise):
    def __init__(self, slope=0.01):
        super().__init__()
        self.slope = slope

    def _f(self, out, inp):
        lib.leaky_relu_forward(out.ptr, inp.ptr, self.slope, inp.size)

    def _df(self, dinp, dout):
        lib.leaky_relu_backward(dinp.ptr, dout.ptr, self._inp.ptr, self.slope, dout.size)

    def __repr__(self):
        return f"LeakyReLU({self.slope})"


class Tanh(_Elementwise):
    def _f(self, out, inp):
        lib.tanh_forward(out.ptr, inp.ptr, inp.size)

    def _df(self, dinp, dout):
        lib.tanh_backward(dinp.ptr, dout.ptr, self._y.ptr, dout.size)


class Dropout(Module):
    """Inverted dropout: while training, each value is zeroed with probability
    p and the others are scaled by 1/(1-p), so nothing changes on average; in
    evaluation (Sequential.predict) values pass through untouched.

    Each training forward draws a new 64-bit mask seed from ``rng``; the mask
    itself is a hash of (seed, index) in C, recomputed by the backward pass.
    """

    def __init__(self, p, rng):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.rng, self.training, self.seed = p, rng, True, 0
        self._out, self._dinp = {}, {}

    def forward(self, inp):
        if not self.training or self.p == 0.0:
            return inp
        self.seed = self.rng.getrandbits(64)
        out = self._buffer(self._out, inp.shape)
        lib.dropout_forward(out.ptr, inp.ptr, self.p, self.seed, inp.size)
        return out

    def backward(self, dout):
        if not self.training or self.p == 0.0:
            return dout
        dinp = self._buffer(self._dinp, dout.shape)
        lib.dropout_backward(dinp.ptr, dout.ptr, self.p, self.seed, dout.size)
        return dinp

    def __repr__(self):
        return f"Dropout({self.p})"


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh}
