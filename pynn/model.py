"""Sequential: layers applied in order; backward in reverse. build() makes one
from an --arch description; mlp() is the special case of dense layers only."""
import math

from . import arch as arch_tokens
from ._kernels import lib
from .arch import image_shape
from .config import BATCHNORM
from .errors import PynnError
from .layers import (
    ACTIVATIONS,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
)
from .tensor import Tensor, check


class Sequential:
    """Layers applied in order; backward in reverse.

    ``input_shape`` is the shape of one sample without the batch: (D,) for
    vectors, (H, W, C) for images. A batch arrives as (B, D) rows (as the CSV
    holds them) and is viewed as (B, H, W, C) before the first layer.

    Two optimizations, both invisible in the results: the first layer does
    not compute dL/d(input pixels), which nobody needs; and a Linear or a
    BatchNorm directly followed by a ReLU runs both as one fused C call each
    way (the ReLU is then skipped: ``steps`` lists what actually runs), and
    BatchNorm, ReLU, MaxPool2d in a row (a conv block's tail) run as one.
    """

    def __init__(self, *layers, input_shape=None):
        self.layers = list(layers)
        self.spec = None  # how build() made it (what a saved model file records)
        self.input_shape = tuple(input_shape) if input_shape else None
        if self.layers and isinstance(self.layers[0], (Linear, Conv2d)):
            self.layers[0].input_grad = False
        self.steps = []
        for layer in self.layers:
            prev = self.steps[-1] if self.steps else None
            if isinstance(layer, ReLU) and isinstance(prev, (Linear, BatchNorm)) and not prev.relu:
                prev.relu = True  # fused into the layer before
            elif (isinstance(layer, MaxPool2d) and isinstance(prev, BatchNorm) and prev.relu
                  and not prev.pool):
                prev.pool = True  # batch norm, ReLU and pool: one kernel
            else:
                self.steps.append(layer)

    def forward(self, x):
        if self.input_shape and x.shape[1:] != self.input_shape:
            x = x.view((x.shape[0],) + self.input_shape)
        for layer in self.steps:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.steps):
            dout = layer.backward(dout)
        return dout

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def buffers(self):
        return [b for layer in self.layers for b in layer.buffers()]

    def train(self, mode=True):
        """Training mode (dropout active, batch statistics) or, with False,
        evaluation mode."""
        for layer in self.layers:
            if hasattr(layer, "training"):
                layer.training = mode
        return self

    def input_width(self):
        """Values per input vector: H*W*C for images, else the first Linear's."""
        if self.input_shape:
            return math.prod(self.input_shape)
        return self.layers[0].in_features

    def is_conv(self):
        return any(isinstance(layer, Conv2d) for layer in self.layers)

    def predict(self, x, batch_size=None, flip=False, on_logits=None):
        """Class indices (int32 Tensor (N,)) for the rows of x (N, D), in
        evaluation mode (training mode is restored afterwards). Batches of
        1000 rows, or of 250 images for a CNN (its activations are larger).

        ``flip=True``: test-time augmentation; each image is also seen mirrored
        left-right, and the class is the argmax of the two logit vectors'
        sum. The rows must be square images (or the model's input_shape).
        ``on_logits(start, stop, logits)`` is called with each batch's logits
        (of the images as they are), e.g. to sum a loss."""
        batch_size = batch_size or (250 if self.is_conv() else 1000)
        n = x.shape[0]
        out = Tensor((n,), "int32")
        if flip:
            H, W, C = self.input_shape or image_shape(x.shape[1]) or (0, 0, 0)
            if H * W * C != x.shape[1]:
                raise PynnError(f"test-time flips need square images, not rows of {x.shape[1]}")
            mirrored, total = Tensor((min(n, batch_size), x.shape[1])), None
        modes = [(layer, layer.training) for layer in self.layers if hasattr(layer, "training")]
        self.train(False)
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                logits = self.forward(x.rows(start, stop))
                if on_logits:
                    on_logits(start, stop, logits)
                if flip:  # logits of the image + logits of its mirror image
                    if total is None:
                        total = Tensor((min(n, batch_size), logits.shape[1]))
                    b = stop - start
                    total_b, mirrored_b = total.rows(0, b), mirrored.rows(0, b)
                    total_b.copy_(logits)
                    lib.pynn_flip_images(mirrored_b.ptr, x.rows(start, stop).ptr, b, H, W, C)
                    flipped = check(self.forward(mirrored_b), total_b.shape)
                    lib.pynn_axpy(total_b.ptr, 1.0, flipped.ptr, total_b.size)
                    logits = total_b
                lib.pynn_argmax(out.rows(start, stop).ptr, logits.ptr, *logits.shape)
        finally:
            for layer, mode in modes:
                layer.training = mode
        return out

    def state(self):
        """Copies of every parameter value and buffer (to keep the best model)."""
        return [t.clone() for t in [p.value for p in self.parameters()] + self.buffers()]

    def load_state(self, state):
        for t, saved in zip([p.value for p in self.parameters()] + self.buffers(), state):
            t.copy_(saved)

    def summary(self):
        """(layer, output shape, parameter count) for each layer; the shapes
        are per sample (the batch left out)."""
        rows, shape = [], self.input_shape or (self.input_width(),)
        for layer in self.layers:
            shape = layer.out_shape(shape) if shape else None
            rows.append((repr(layer), shape, sum(p.value.size for p in layer.parameters())))
        return rows

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


# ---- build(): the layers an --arch list describes -------------------------

def build(arch, width, classes, activation, rng, dropout=0.0, batchnorm="conv", steepness=1.0):
    """The Sequential that ``arch`` (an --arch string) describes, for input
    vectors of ``width`` values and ``classes`` outputs. Convolutions read
    the vectors as square one-channel images (784 = 28 x 28).

    Layers in order: c -> Conv2d [+ BatchNorm2d] + activation; p -> MaxPool2d;
    f -> [Flatten] Linear [+ BatchNorm1d] + activation [+ Dropout(dropout)];
    d -> Dropout; then [Flatten] Linear(classes)."""
    tokens = arch_tokens.parse(arch)
    if batchnorm not in BATCHNORM:
        raise PynnError(f"--batchnorm {batchnorm}: not one of {', '.join(BATCHNORM)}")
    if activation == "sigmoid":  # the lecture's sigmoid, with its steepness lambda
        def act():
            return Sigmoid(steepness)
    else:
        act = ACTIVATIONS[activation]
    has_conv = arch_tokens.needs_images(tokens)
    shape = (width,)
    if has_conv:
        shape = image_shape(width)
        if shape is None:
            raise PynnError(f"--arch {arch}: convolutions need square images, but the "
                            f"vectors have {width} values (not a square number)")
    input_shape = shape
    layers = []

    def flat():
        nonlocal shape
        if len(shape) == 3:
            layers.append(Flatten())
            shape = (math.prod(shape),)

    for tok in tokens:
        if tok[0] == "c":
            if len(shape) != 3:
                raise PynnError(f"--arch {arch}: a convolution after a dense layer")
            norm = batchnorm in ("conv", "all")
            layers.append(Conv2d(shape[2], tok[1], tok[2], rng, bias=not norm))
            if norm:
                layers.append(BatchNorm2d(tok[1]))
            layers.append(act())
            shape = shape[:2] + (tok[1],)
        elif tok[0] == "p":
            if len(shape) != 3:
                raise PynnError(f"--arch {arch}: a pooling after a dense layer")
            if shape[0] < 2 or shape[1] < 2:
                raise PynnError(f"--arch {arch}: pools a {shape[0]}x{shape[1]} image below 1x1")
            layers.append(MaxPool2d())
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif tok[0] == "f":
            flat()
            layers.append(Linear(shape[0], tok[1], rng))
            if batchnorm == "all":
                layers.append(BatchNorm1d(tok[1]))
            layers.append(act())
            if dropout > 0.0:
                layers.append(Dropout(dropout, rng))
            shape = (tok[1],)
        else:
            layers.append(Dropout(tok[1], rng))
    flat()
    layers.append(Linear(shape[0], classes, rng))
    model = Sequential(*layers, input_shape=input_shape if has_conv else None)
    model.spec = {"arch": arch, "activation": activation, "batchnorm": batchnorm,
                  "steepness": steepness}
    return model


def mlp(sizes, activation, rng, dropout=0.0):
    """Sequential(Linear, act, [Dropout,] Linear, act, [Dropout,] ..., Linear)
    for sizes [D, h1, ..., V]: build() with dense layers only."""
    arch = ",".join(f"f{s}" for s in sizes[1:-1])
    return build(arch, sizes[0], sizes[-1], activation, rng, dropout, batchnorm="off")
