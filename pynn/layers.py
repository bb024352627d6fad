"""Layers: small objects with forward(x) -> y and backward(dy) -> dx.

Each layer calls its pair of C kernels (``kernel`` names it: the C functions
are <kernel>_forward and <kernel>_backward in csrc/) and keeps what its
backward pass needs. Output buffers are allocated once per batch size and
reused, so a training step allocates nothing.

These are the layers that run with --no-fuse, each as written here; by
default pynn/fuse.py runs some of them in runs of two to four through fused
kernels, which compute the same forward values and the same gradients up to
the order of a few sums.

Adding a layer: the README's checklist ("Adding a layer").
"""
import math

from ._kernels import ffi, lib
from .tensor import Tensor, cached, check


class Parameter:
    """A trainable tensor, its gradient, and whether weight decay applies.

    A layer made on its own holds its own memory; a Sequential moves every
    Parameter of its layers into one block (pynn.model.Parameters), once,
    when it is made: from then on value and grad stay where they are."""

    in_block = False  # True once a Sequential's Parameters block holds it

    def __init__(self, name, value, decay):
        self.name = name
        self.value = value
        self.grad = Tensor(value.shape)
        self.decay = decay

    def __repr__(self):
        return f"Parameter({self.name}, {self.value.shape})"


class Module:
    """Base class: a layer without parameters that passes shapes through.

    ``training`` is True while training, False while predicting
    (Sequential.train switches it): dropout and batch norm act on it."""

    kernel = None  # the C pair it calls: <kernel>_forward, <kernel>_backward
    training = True
    parts = ()  # the layers inside one (a fused run, a residual block's body)

    @property
    def label(self):
        """What the model table says computes it."""
        return self.kernel or "(no kernel)"

    def parameters(self):
        """Its Parameters: none of its own here, those of the layers inside it."""
        return [p for layer in self.parts for p in layer.parameters()]

    def buffers(self):
        """State that is not trained but belongs to the model (saved, loaded)."""
        return [b for layer in self.parts for b in layer.buffers()]

    def out_shape(self, shape):
        """The output shape (without the batch) for an input of this shape."""
        return shape

    def _buffer(self, cache, shape):
        """The reusable output buffer for this shape (allocated on first use)."""
        return cached(cache, shape)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Linear(Module):
    """out = inp @ weight.T + bias, with weight (out_features, in_features):
    the inner potential xi_j = sum_i w_ji x_i + w_j0 of the lecture.

    Weights start He-uniform (right for ReLU-like activations), biases zero.
    ``input_grad=False`` skips dL/dinp: the first layer never needs it.
    """

    kernel = "dense"

    def __init__(self, in_features, out_features, rng, input_grad=True):
        self.in_features, self.out_features = in_features, out_features
        bound = math.sqrt(6.0 / in_features)
        w = [rng.uniform(-bound, bound) for _ in range(out_features * in_features)]
        self.weight = Parameter("weight", Tensor.from_list(w, (out_features, in_features)), True)
        self.bias = Parameter("bias", Tensor((out_features,)), False)
        self.input_grad = input_grad
        self._out, self._dinp, self._inp = {}, {}, None

    def parameters(self):
        return [self.weight, self.bias]

    def out_shape(self, shape):
        return (self.out_features,)

    def forward(self, inp):
        B, C, OC = inp.shape[0], self.in_features, self.out_features
        check(inp, (B, C), what="Linear input")
        out = self._buffer(self._out, (B, OC))
        lib.dense_forward(out.ptr, inp.ptr, self.weight.value.ptr, self.bias.value.ptr, B, C, OC)
        self._inp = inp
        return out

    def backward(self, dout):
        """Backpropagation through xi = x W^T + b, given dout = dL/dxi (B, OC):

            dL/dW = dout^T x   (OC, C): dE/dw_ji = sum over rows of delta_j x_i
            dL/db = dout summed over the rows
            dL/dx = dout W     (B, C):  the deltas passed to the layer below
        """
        inp = self._inp
        B, C, OC = inp.shape[0], self.in_features, self.out_features
        check(dout, (B, OC), what="Linear dout")
        dinp = self._buffer(self._dinp, (B, C)) if self.input_grad else None
        w = self.weight
        lib.dense_backward(dinp.ptr if dinp else ffi.NULL, w.grad.ptr, self.bias.grad.ptr,
                           dout.ptr, inp.ptr, w.value.ptr, B, C, OC)
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
    """max(xi, 0)"""

    kernel = "relu"

    def _f(self, out, inp):
        lib.relu_forward(out.ptr, inp.ptr, inp.size)

    def _df(self, dinp, dout):
        lib.relu_backward(dinp.ptr, dout.ptr, self._inp.ptr, dout.size)


class LeakyReLU(_Elementwise):
    """xi if xi > 0, else slope * xi"""

    kernel = "leaky_relu"

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
    """tanh(xi) = (1 - e^(-2 xi)) / (1 + e^(-2 xi)); its derivative 1 - tanh^2
    comes from the saved output"""

    kernel = "tanh"

    def _f(self, out, inp):
        lib.tanh_forward(out.ptr, inp.ptr, inp.size)

    def _df(self, dinp, dout):
        lib.tanh_backward(dinp.ptr, dout.ptr, self._y.ptr, dout.size)


class Sigmoid(_Elementwise):
    """The lecture's logistic sigmoid with steepness lambda:
    sigma(xi) = 1 / (1 + e^(-lambda xi)); its derivative is
    lambda sigma(xi) (1 - sigma(xi)), computed from the saved output."""

    kernel = "sigmoid"

    def __init__(self, steepness=1.0):
        super().__init__()
        self.steepness = steepness

    def _f(self, out, inp):
        lib.sigmoid_forward(out.ptr, inp.ptr, self.steepness, inp.size)

    def _df(self, dinp, dout):
        lib.sigmoid_backward(dinp.ptr, dout.ptr, self._y.ptr, self.steepness, dout.size)

    def __repr__(self):
        return f"Sigmoid({self.steepness:g})" if self.steepness != 1.0 else "Sigmoid()"


class Dropout(Module):
    """Inverted dropout: while training, each value is zeroed with probability
    p and the others are scaled by 1/(1-p), so nothing changes on average; in
    evaluation (Sequential.predict) values pass through untouched.

    Each training forward draws a new 64-bit mask seed from ``rng``; the mask
    itself is a hash of (seed, index) in C, recomputed by the backward pass.
    """

    kernel = "dropout"

    def __init__(self, p, rng):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.rng, self.seed = p, rng, 0
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


# --activation NAME: the class, made as NAME's layer for every hidden layer
# (Sigmoid gets --sigmoid-steepness). The command line's choices come from here.
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}


# ---- convolutional layers: images are (B, H, W, C), channels last (NHWC) ----

class Conv2d(Module):
    """out = conv(inp, weight) + bias: a k x k convolution, "same" zero padding,
    stride 1 (csrc/conv.c). inp is (B, H, W, in_channels), weight is
    (out_channels, k, k, in_channels), out is (B, H, W, out_channels).

    Weights start He-uniform over the k*k*in_channels inputs of an output.
    ``bias=False`` when a batch norm follows (its shift beta makes a bias
    redundant). ``input_grad=False`` skips dL/dinp (the first layer).
    """

    kernel = "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, rng, bias=True,
                 input_grad=True):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd and positive, got {kernel_size}")
        self.in_channels, self.out_channels, self.k = in_channels, out_channels, kernel_size
        fan_in = kernel_size * kernel_size * in_channels
        bound = math.sqrt(6.0 / fan_in)
        w = [rng.uniform(-bound, bound) for _ in range(out_channels * fan_in)]
        shape = (out_channels, kernel_size, kernel_size, in_channels)
        self.weight = Parameter("weight", Tensor.from_list(w, shape), True)
        self.bias = Parameter("bias", Tensor((out_channels,)), False) if bias else None
        self.input_grad = input_grad
        self._out, self._dinp, self._inp = {}, {}, None

    def parameters(self):
        return [self.weight] + ([self.bias] if self.bias else [])

    def out_shape(self, shape):
        return shape[:2] + (self.out_channels,)

    def forward(self, inp):
        B, H, W, C = inp.shape
        check(inp, (B, H, W, self.in_channels), what="Conv2d input")
        out = self._buffer(self._out, (B, H, W, self.out_channels))
        lib.conv2d_forward(out.ptr, inp.ptr, self.weight.value.ptr,
                           self.bias.value.ptr if self.bias else ffi.NULL,
                           B, H, W, C, self.out_channels, self.k)
        self._inp = inp
        return out

    def backward(self, dout):
        inp = self._inp
        B, H, W, C = inp.shape
        check(dout, (B, H, W, self.out_channels), what="Conv2d dout")
        dinp = self._buffer(self._dinp, inp.shape) if self.input_grad else None
        lib.conv2d_backward(dinp.ptr if dinp else ffi.NULL, self.weight.grad.ptr,
                            self.bias.grad.ptr if self.bias else ffi.NULL, dout.ptr, inp.ptr,
                            self.weight.value.ptr, B, H, W, C, self.out_channels, self.k)
        return dinp

    def __repr__(self):
        bias = "" if self.bias else ", bias=False"
        return f"Conv2d({self.in_channels}, {self.out_channels}, {self.k}{bias})"


class MaxPool2d(Module):
    """2x2 max-pool, stride 2: (B, H, W, C) -> (B, H//2, W//2, C). Ties go to
    the first maximum of a window (row by row), forward and backward."""

    kernel = "maxpool2x2"

    def __init__(self):
        self._out, self._dinp, self._inp = {}, {}, None

    def out_shape(self, shape):
        return (shape[0] // 2, shape[1] // 2, shape[2])

    def forward(self, inp):
        B, H, W, C = inp.shape
        out = self._buffer(self._out, (B, H // 2, W // 2, C))
        lib.maxpool2x2_forward(out.ptr, inp.ptr, B, H, W, C)
        self._inp = inp
        return out

    def backward(self, dout):
        B, H, W, C = self._inp.shape
        check(dout, (B, H // 2, W // 2, C), what="MaxPool2d dout")
        dinp = self._buffer(self._dinp, self._inp.shape)
        lib.maxpool2x2_backward(dinp.ptr, dout.ptr, self._inp.ptr, B, H, W, C)
        return dinp


class GlobalAvgPool2d(Module):
    """Global average pooling: (B, H, W, C) -> (B, C), each channel's mean over
    the H*W pixels; backward, every pixel gets dout / (H*W)."""

    kernel = "avgpool_global"

    def __init__(self):
        self._out, self._dinp, self._shape = {}, {}, None

    def out_shape(self, shape):
        return (shape[2],)

    def forward(self, inp):
        B, H, W, C = inp.shape
        out = self._buffer(self._out, (B, C))
        lib.avgpool_global_forward(out.ptr, inp.ptr, B, H * W, C)
        self._shape = inp.shape
        return out

    def backward(self, dout):
        B, H, W, C = self._shape
        check(dout, (B, C), what="GlobalAvgPool2d dout")
        dinp = self._buffer(self._dinp, self._shape)
        lib.avgpool_global_backward(dinp.ptr, dout.ptr, B, H * W, C)
        return dinp


class Residual(Module):
    """A residual block (He et al. 2016): out = relu(x + F(x)), F the ``body``,
    layers that keep the shape (the r64 token: conv, batch norm, activation,
    conv, batch norm). The body learns only what it adds to x, and the
    gradient reaches x both through F and around it (csrc/residual.c):

        dsum = dout * [out > 0],   dx = dsum + (dsum carried back through F)
    """

    kernel = "residual"

    def __init__(self, *body):
        self.body = list(body)
        self.plain = self  # the block of plain layers this one runs (fuse makes others)
        self._out, self._dsum, self._dinp, self._inp, self._y = {}, {}, {}, None, None

    @property
    def parts(self):
        """The layers inside (Sequential.modules switches their training mode)."""
        return self.body

    def with_body(self, body):
        """The same block run by other layers over the same Parameters (fuse)."""
        block = Residual(*body)
        block.plain = self.plain
        return block

    def forward(self, inp):
        fx = inp
        for layer in self.body:
            fx = layer.forward(fx)
        check(fx, inp.shape, what="Residual body output")
        out = self._buffer(self._out, inp.shape)
        lib.residual_forward(out.ptr, inp.ptr, fx.ptr, inp.size)
        self._inp, self._y = inp, out
        return out

    def backward(self, dout):
        check(dout, self._inp.shape, what="Residual dout")
        dsum = self._buffer(self._dsum, dout.shape)
        lib.relu_backward(dsum.ptr, dout.ptr, self._y.ptr, dout.size)  # out > 0 where the sum is
        dbody = dsum
        for layer in reversed(self.body):
            dbody = layer.backward(dbody)
        check(dbody, dout.shape, what="Residual body gradient")
        dinp = self._buffer(self._dinp, dout.shape)  # dsum again: the body may have changed it
        lib.residual_backward(dinp.ptr, dout.ptr, self._y.ptr, dbody.ptr, dout.size)
        return dinp

    def __repr__(self):
        return f"Residual({', '.join(map(repr, self.body))})"


class Flatten(Module):
    """(B, H, W, C) -> (B, H*W*C): a view, no copy (and back, backward)."""

    label = "(a view)"

    def out_shape(self, shape):
        return (math.prod(shape),)

    def forward(self, inp):
        self._shape = inp.shape
        return inp.view((inp.shape[0], inp.size // max(1, inp.shape[0])))

    def backward(self, dout):
        return dout.view(self._shape)


class BatchNorm(Module):
    """Batch normalization over the last axis (csrc/norm.c):
    y = gamma * (x - mean) / sqrt(var + eps) + beta, per feature of a (B, F)
    input or per channel of a (B, H, W, C) one (over the batch and all pixels).

    While training, mean and var are the batch's, and running estimates are
    kept (new = (1 - momentum) * old + momentum * batch value, as PyTorch);
    in evaluation (``training = False``) those are used. gamma and beta are
    trained without weight decay; the running statistics are state, not
    parameters (``buffers``: saved, loaded and kept with the best weights).
    """

    kernel = "batchnorm"

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        C = self.num_features = num_features
        self.momentum, self.eps = momentum, eps
        self.gamma = Parameter("gamma", Tensor((C,)).fill_(1.0), False)
        self.beta = Parameter("beta", Tensor((C,)), False)
        self.running_mean, self.running_var = Tensor((C,)), Tensor((C,)).fill_(1.0)
        self.mean, self.invstd = Tensor((C,)), Tensor((C,))  # of the last forward
        self._out, self._dinp, self._inp = {}, {}, None

    def parameters(self):
        return [self.gamma, self.beta]

    def buffers(self):
        return [self.running_mean, self.running_var]

    def forward(self, inp):
        C = self.num_features
        if inp.shape[-1] != C:
            raise ValueError(f"BatchNorm input: expected {C} features last, got {inp.shape}")
        out = self._buffer(self._out, inp.shape)
        lib.batchnorm_forward(out.ptr, self.mean.ptr, self.invstd.ptr, self.running_mean.ptr,
                              self.running_var.ptr, inp.ptr, self.gamma.value.ptr,
                              self.beta.value.ptr, inp.size // C, C, self.momentum, self.eps,
                              int(self.training), 0)
        self._inp = inp
        return out

    def backward(self, dout):
        if not self.training:
            raise RuntimeError("BatchNorm.backward needs a forward in training mode")
        C, inp = self.num_features, self._inp
        check(dout, inp.shape, what="BatchNorm dout")
        dinp = self._buffer(self._dinp, inp.shape)
        lib.batchnorm_backward(dinp.ptr, self.gamma.grad.ptr, self.beta.grad.ptr, dout.ptr,
                               inp.ptr, self.mean.ptr, self.invstd.ptr, self.gamma.value.ptr,
                               self.beta.value.ptr, inp.size // C, C, 0)
        return dinp

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features})"


class BatchNorm1d(BatchNorm):
    """Batch norm of a dense layer's (B, F) output: a mean per feature."""


class BatchNorm2d(BatchNorm):
    """Batch norm of a conv's (B, H, W, C) output: a mean per channel."""
