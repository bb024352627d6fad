"""fuse(model): the same network, run by fewer and larger C kernels.

Four runs of layers are computed by one fused kernel pair instead of a call
per layer (--no-fuse keeps the layers one by one):

    Conv2d(1, C), BatchNorm, ReLU, MaxPool2d -> Conv2dBatchNormReLUMaxPool
                                 conv_batchnorm_relu_maxpool_forward/_backward
                                 (the first layer, one channel, no bias)
    BatchNorm, ReLU, MaxPool2d   -> BatchNormReLUMaxPool  batchnorm_relu_maxpool_forward/_backward
    Linear, ReLU                 -> LinearReLU            dense_relu_forward/_backward
    BatchNorm, ReLU              -> BatchNormReLU         batchnorm_forward/_backward, relu=1

Why: the fused kernel reads and writes the large activation tensors fewer
times (the ReLU is applied as the product or the normalization stores its
values; batch norm, ReLU and pool make one pass over the conv's output and
write only the pooled quarter, and in training where each window's gradient
will go; the first block never stores the conv's output at all, but
recomputes it, 9 multiply-adds a value). What it computes
is the same: the forward values are those of the layers one after another,
bit for bit, and the gradients equal theirs up to the order of a few sums
(tests/test_fuse.py). The first block's gradients are bit for bit those of
Conv2d followed by the fused tail BatchNormReLUMaxPool, whose sums it takes
in the same order.

A residual block's body is fused the same way, inside the block.

A fused layer holds the layers it replaces and uses their Parameters and
buffers, so the plain model and its fused plan train and save as one.
"""
from ._kernels import ffi, lib
from .layers import (
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Residual,
)
from .tensor import cached, check


class Fused(Module):
    """A run of layers computed by one kernel pair; ``parts`` are the layers."""

    def __init__(self, *parts):
        self.parts = parts

    @staticmethod
    def fits(*run):
        """Whether this run of layers (of the right types) may be fused; a
        pattern that needs more than the types says so"""
        return True

    def out_shape(self, shape):
        for layer in self.parts:
            shape = layer.out_shape(shape)
        return shape

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(map(repr, self.parts))})"


class LinearReLU(Fused):
    """Linear, then ReLU: max(inp . weight^T + bias, 0), the max taken as the
    GEMM stores each value (csrc/dense.c)."""

    kernel, label = "dense_relu", "dense_relu (fused)"

    def __init__(self, linear, relu):
        super().__init__(linear, relu)
        self.linear, self._out, self._dinp, self._inp, self._y = linear, {}, {}, None, None

    def forward(self, inp):
        lin = self.linear
        B, C, OC = inp.shape[0], lin.in_features, lin.out_features
        check(inp, (B, C), what="Linear input")
        out = self._buffer(self._out, (B, OC))
        lib.dense_relu_forward(out.ptr, inp.ptr, lin.weight.value.ptr, lin.bias.value.ptr,
                               B, C, OC)
        self._inp, self._y = inp, out
        return out

    def backward(self, dout):
        lin, inp = self.linear, self._inp
        B, C, OC = inp.shape[0], lin.in_features, lin.out_features
        check(dout, (B, OC), what="LinearReLU dout")
        dinp = self._buffer(self._dinp, (B, C)) if lin.input_grad else None
        # dout is masked in place by the ReLU's derivative (out > 0) first
        lib.dense_relu_backward(dinp.ptr if dinp else ffi.NULL, lin.weight.grad.ptr,
                                lin.bias.grad.ptr, dout.ptr, self._y.ptr, inp.ptr,
                                lin.weight.value.ptr, B, C, OC)
        return dinp


class BatchNormReLU(Fused):
    """BatchNorm (1d or 2d), then ReLU: the max taken as the normalized values
    are stored, and the ReLU's mask recomputed and applied in batch norm's
    backward (csrc/norm.c)."""

    kernel, label = "batchnorm", "batchnorm with relu=1 (fused)"

    def __init__(self, norm, relu):
        super().__init__(norm, relu)
        self.norm, self._out, self._dinp, self._inp = norm, {}, {}, None

    def forward(self, inp):
        bn, C = self.norm, self.norm.num_features
        if inp.shape[-1] != C:
            raise ValueError(f"BatchNorm input: expected {C} features last, got {inp.shape}")
        out = self._buffer(self._out, inp.shape)
        lib.batchnorm_forward(out.ptr, bn.mean.ptr, bn.invstd.ptr, bn.running_mean.ptr,
                              bn.running_var.ptr, inp.ptr, bn.gamma.value.ptr, bn.beta.value.ptr,
                              inp.size // C, C, bn.momentum, bn.eps, int(bn.training), 1)
        self._inp = inp
        return out

    def backward(self, dout):
        bn, inp = self.norm, self._inp
        if not bn.training:
            raise RuntimeError("BatchNorm.backward needs a forward in training mode")
        check(dout, inp.shape, what="BatchNormReLU dout")
        dinp = self._buffer(self._dinp, inp.shape)
        lib.batchnorm_backward(dinp.ptr, bn.gamma.grad.ptr, bn.beta.grad.ptr, dout.ptr,
                               inp.ptr, bn.mean.ptr, bn.invstd.ptr, bn.gamma.value.ptr,
                               bn.beta.value.ptr, inp.size // bn.num_features, bn.num_features, 1)
        return dinp


class Routes:
    """Where each 2x2 window of a fused tail sends its gradient, kept by a
    training forward for the backward (as PyTorch's max-pool keeps its
    indices; MaxPool2d here finds them again from its input): ``way`` the
    index (0-3) of the window's first maximum when it is > 0, else -1;
    ``zway`` that input's value, for batch norm's sums (csrc/fused.c)."""

    def __init__(self):
        self._way, self._zway, self.shape = {}, {}, None

    def for_forward(self, training, shape):
        """(way, zway) pointers for a forward of pooled ``shape``: buffers
        in training, NULL otherwise (and nothing kept)"""
        self.shape = tuple(shape) if training else None
        if not training:
            return ffi.NULL, ffi.NULL
        return cached(self._way, shape).ptr, cached(self._zway, shape).ptr

    def for_backward(self, shape, what):
        """(way, zway) of the last forward, which must have been in training
        and of this pooled shape (dout's, checked by the caller: the size the
        kernel reads)"""
        if self.shape != tuple(shape):
            raise RuntimeError(f"{what}.backward needs a forward in training mode of {shape}")
        return cached(self._way, shape).ptr, cached(self._zway, shape).ptr


class BatchNormReLUMaxPool(Fused):
    """BatchNorm2d, ReLU, MaxPool2d: the tail of a conv block in one pass over
    the conv's output; the forward keeps each window's route (Routes) and the
    backward recomputes the normalized values from inp (csrc/fused.c)."""

    kernel, label = "batchnorm_relu_maxpool", "batchnorm_relu_maxpool (fused)"

    def __init__(self, norm, relu, pool):
        super().__init__(norm, relu, pool)
        self.norm, self._out, self._dinp, self._inp = norm, {}, {}, None
        self.routes = Routes()

    def forward(self, inp):
        bn, (B, H, W, C) = self.norm, inp.shape
        if C != bn.num_features:
            raise ValueError(f"BatchNorm input: expected {bn.num_features} channels last, "
                             f"got {inp.shape}")
        out = self._buffer(self._out, (B, H // 2, W // 2, C))
        way, zway = self.routes.for_forward(bn.training, out.shape)
        lib.batchnorm_relu_maxpool_forward(
            out.ptr, way, zway, bn.mean.ptr, bn.invstd.ptr, bn.running_mean.ptr,
            bn.running_var.ptr, inp.ptr, bn.gamma.value.ptr, bn.beta.value.ptr, B, H, W, C,
            bn.momentum, bn.eps, int(bn.training))
        self._inp = inp
        return out

    def backward(self, dout):
        bn, inp = self.norm, self._inp
        if not bn.training:
            raise RuntimeError("BatchNorm.backward needs a forward in training mode")
        B, H, W, C = inp.shape
        check(dout, (B, H // 2, W // 2, C), what="BatchNormReLUMaxPool dout")
        way, zway = self.routes.for_backward(dout.shape, "BatchNormReLUMaxPool")
        dinp = self._buffer(self._dinp, inp.shape)
        lib.batchnorm_relu_maxpool_backward(
            dinp.ptr, bn.gamma.grad.ptr, bn.beta.grad.ptr, dout.ptr, way, zway, inp.ptr,
            bn.mean.ptr, bn.invstd.ptr, bn.gamma.value.ptr, B, H, W, C)
        return dinp


class Conv2dBatchNormReLUMaxPool(Fused):
    """The first conv block: Conv2d(1, C) without bias, BatchNorm2d, ReLU,
    MaxPool2d. The conv's output, the network's largest tensor, is never
    stored: each pass over it (the forward's two, the backward's gradient
    pass) recomputes the rows it needs from the one-channel image; the
    backward's sums come from the windows' Routes (csrc/fused.c). Only for a
    first layer (no input gradient)."""

    kernel, label = "conv_batchnorm_relu_maxpool", "conv_batchnorm_relu_maxpool (fused)"

    @staticmethod
    def fits(conv, *tail):
        """a one-channel conv without bias whose input gradient nobody needs"""
        return conv.in_channels == 1 and conv.bias is None and not conv.input_grad

    def __init__(self, conv, norm, relu, pool):
        super().__init__(conv, norm, relu, pool)
        self.conv, self.norm, self._out, self._inp = conv, norm, {}, None
        self.routes = Routes()

    def forward(self, inp):
        conv, bn, (B, H, W, _) = self.conv, self.norm, inp.shape
        check(inp, (B, H, W, 1), what="Conv2d input")
        C = conv.out_channels
        if bn.num_features != C:
            raise ValueError(f"BatchNorm input: expected {bn.num_features} channels, got {C}")
        out = self._buffer(self._out, (B, H // 2, W // 2, C))
        way, zway = self.routes.for_forward(bn.training, out.shape)
        lib.conv_batchnorm_relu_maxpool_forward(
            out.ptr, way, zway, bn.mean.ptr, bn.invstd.ptr, bn.running_mean.ptr,
            bn.running_var.ptr, inp.ptr, conv.weight.value.ptr, bn.gamma.value.ptr,
            bn.beta.value.ptr, B, H, W, C, conv.k, bn.momentum, bn.eps, int(bn.training))
        self._inp = inp
        return out

    def backward(self, dout):
        conv, bn, inp = self.conv, self.norm, self._inp
        if not bn.training:
            raise RuntimeError("BatchNorm.backward needs a forward in training mode")
        B, H, W, _ = inp.shape
        C = conv.out_channels
        check(dout, (B, H // 2, W // 2, C), what="Conv2dBatchNormReLUMaxPool dout")
        way, zway = self.routes.for_backward(dout.shape, "Conv2dBatchNormReLUMaxPool")
        lib.conv_batchnorm_relu_maxpool_backward(
            conv.weight.grad.ptr, bn.gamma.grad.ptr, bn.beta.grad.ptr, dout.ptr, way, zway,
            inp.ptr, conv.weight.value.ptr, bn.mean.ptr, bn.invstd.ptr, bn.gamma.value.ptr,
            B, H, W, C, conv.k)  # no dinp: a first layer has no use for it


# the runs fuse() looks for, the longest first: (layer types in a row, the fused layer)
PATTERNS = [((Conv2d, BatchNorm2d, ReLU, MaxPool2d), Conv2dBatchNormReLUMaxPool),
            ((BatchNorm2d, ReLU, MaxPool2d), BatchNormReLUMaxPool),
            ((Linear, ReLU), LinearReLU),
            ((BatchNorm, ReLU), BatchNormReLU)]


def _is(layer, kind):
    """Whether ``layer`` is a ``kind`` as written here: exactly that class (a
    subclass may compute something else), or any BatchNorm for BatchNorm."""
    return type(layer) is kind or (kind is BatchNorm and type(layer) in (BatchNorm1d,
                                                                        BatchNorm2d))


def without(fused):
    """PATTERNS without the one of this fused layer (tests and benchmarks
    compare a plan with and without it)"""
    return [(types, f) for types, f in PATTERNS if f is not fused]


def fuse_layers(layers, patterns=PATTERNS):
    """The layers with every run of ``patterns`` replaced by its fused layer."""
    out, i = [], 0
    while i < len(layers):
        if type(layers[i]) is Residual:  # its body fused the same way
            out.append(layers[i].with_body(fuse_layers(layers[i].body, patterns)))
            i += 1
            continue
        for types, fused in patterns:
            run = layers[i:i + len(types)]
            if len(run) == len(types) and all(map(_is, run, types)) and fused.fits(*run):
                out.append(fused(*run))
                i += len(types)
                break
        else:
            out.append(layers[i])
            i += 1
    return out


def fuse(model, patterns=PATTERNS):
    """The same network as ``model`` (a Sequential), its layers fused where
    ``patterns`` (a part of PATTERNS: tests and benchmarks) match: a
    Sequential over the same Parameters (the one block), buffers and input
    shape. Training either trains both."""
    plan = type(model)(*fuse_layers(model.layers, patterns), input_shape=model.input_shape,
                       parameters=model.parameters(), width=model.width)
    plan.spec, plan._plain = model.spec, model.plain
    return plan
