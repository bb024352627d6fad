"""Sequential: layers applied in order; backward in reverse; their Parameters
in one block. build() makes one from an --arch description; mlp() is the
special case of dense layers only."""
import math

from . import arch as arch_tokens
from ._kernels import lib
from .arch import image_shape
from .config import BATCHNORM
from .errors import PynnError
from .layers import (
    ACTIVATIONS,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Residual,
    Sigmoid,
)
from .tensor import Tensor, check


class Parameters(list):
    """Every Parameter of a model, in layer order (as a list), their values in
    one block of memory and their gradients in another of the same layout
    (llm.c's params_memory and grads_memory): ``values``, ``grads``, flat
    Tensors. The weights come first (they get weight decay: the first
    ``n_decay`` values), then the biases and batch norm's gamma and beta
    (they do not).

    Made once, when the model is made: each Parameter's value and grad
    become views of the blocks (its values copied in) and stay so, so that
    an optimizer updates all of them in one C call and nothing moves later."""

    def __init__(self, params):
        super().__init__(params)
        if any(getattr(p, "in_block", False) for p in self):
            raise ValueError("these layers' parameters live in another model's block already: "
                             "make new layers, or pass parameters= that model's parameters()")
        ordered = [p for p in self if p.decay] + [p for p in self if not p.decay]
        n = sum(p.value.size for p in ordered)
        self.n_decay = sum(p.value.size for p in ordered if p.decay)
        self.values, self.grads = Tensor((n,)), Tensor((n,))
        start = 0
        for p in ordered:
            stop = start + p.value.size
            p.value = self.values.rows(start, stop).view(p.value.shape).copy_(p.value)
            p.grad = self.grads.rows(start, stop).view(p.grad.shape)
            p.in_block = True
            start = stop


class Sequential:
    """Layers applied in order; backward in reverse.

    ``input_shape`` is the shape of one sample without the batch: (D,) for
    vectors, (H, W, C) for images. A batch arrives as (B, D) rows (as the CSV
    holds them) and is viewed as (B, H, W, C) before the first layer.

    Making a Sequential moves its layers' Parameters into one block
    (Parameters), unless ``parameters`` gives the block of the model whose
    layers these are (pynn.fuse.fuse does). Each layer runs as written;
    fuse(model) makes the same network with fused kernels.
    """

    def __init__(self, *layers, input_shape=None, parameters=None, width=None):
        self.layers = list(layers)
        self.width = width  # values per input vector, when build() knows them
        self.spec = None  # how build() made it (what a saved model file records)
        self._plain = None  # the model of plain layers these come from (fuse sets it)
        self.input_shape = tuple(input_shape) if input_shape else None
        self.params = (parameters if parameters is not None else
                       Parameters(p for layer in self.layers for p in layer.parameters()))

    @property
    def plain(self):
        """The model of plain layers this one runs (itself, unless made by fuse)."""
        return self._plain or self

    def forward(self, x):
        """Each layer's forward in turn (x viewed as images first, for a CNN)."""
        if self.input_shape and x.shape[1:] != self.input_shape:
            x = x.view((x.shape[0],) + self.input_shape)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        """Backpropagation: each layer's backward in reverse order, from
        dout = dL/d(outputs); the layers write their parameters' gradients.
        Returns dL/d(inputs), or None when the first layer skips it
        (input_grad=False, as build() makes it: nobody needs it)."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def parameters(self):
        """The model's Parameters block (values and gradients, one each)."""
        return self.params

    def buffers(self):
        """The layers' non-trained state (batch norm's running statistics)."""
        return [b for layer in self.layers for b in layer.buffers()]

    def modules(self):
        """Every layer, and the layers inside a fused one or a residual block."""
        def walk(layers):
            for layer in layers:
                yield layer
                yield from walk(layer.parts)
        return list(walk(self.layers))

    def train(self, mode=True):
        """Training mode (dropout active, batch statistics) or, with False,
        evaluation mode."""
        for layer in self.modules():
            layer.training = mode
        return self

    def input_width(self):
        """Values per input vector: H*W*C for images, else the first Linear's."""
        if self.input_shape:
            return math.prod(self.input_shape)
        return self.plain.width or self.plain.layers[0].in_features

    def is_conv(self):
        return any(isinstance(layer, Conv2d) for layer in self.plain.modules())

    def predict(self, x, batch_size=None, flip=False, on_logits=None):
        """Class indices (int32 Tensor (N,)) for the rows of x (N, D), in
        evaluation mode (training mode is restored afterwards). Batches of
        1000 rows, or of 128 images for a CNN: its activations are larger, and
        128 (the batch the kernels were tuned for) predicted 12000
        images with flips in 0.73 s where 250 took 0.77 s (Intel Xeon, 2
        threads, medians of 8; faster in each of the 8 pairs). The logits
        do not depend on the batch size.

        ``flip=True``: test-time augmentation; each image is also seen mirrored
        left-right, and the class is the argmax of the two logit vectors'
        sum. The rows must be square images (or the model's input_shape).
        ``on_logits(start, stop, logits)`` is called with each batch's logits
        (of the images as they are), e.g. to sum a loss."""
        batch_size = batch_size or (128 if self.is_conv() else 1000)
        n = x.shape[0]
        out = Tensor((n,), "int32")
        if flip:
            H, W, C = self.input_shape or image_shape(x.shape[1]) or (0, 0, 0)
            if H * W * C != x.shape[1]:
                raise PynnError(f"test-time flips need square images, not rows of {x.shape[1]}")
            mirrored, total = Tensor((min(n, batch_size), x.shape[1])), None
        modes = [(layer, layer.training) for layer in self.modules()]
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
        """A copy of every parameter value and buffer (to keep the best model)."""
        return [self.params.values.clone()] + [b.clone() for b in self.buffers()]

    def load_state(self, state):
        """Put back what state() copied (the values, not the Tensors)."""
        for t, saved in zip([self.params.values] + self.buffers(), state):
            t.copy_(saved)

    def summary(self):
        """(layer, output shape, parameter count, kernel) for each layer of the
        plain model, the shapes per sample (the batch left out); kernel is the
        C pair that computes the layer here (its label): its own, or a fused
        one (see pynn.fuse), which the first layer of the run names and the
        others point to. A residual block is a row for its sum and ReLU (no
        parameters of its own), then its body's layers, indented."""
        rows = []

        def add(layers, steps, shape, indent):
            runs_in = {id(part): step for step in steps  # a residual block: itself
                       for part in ((step.plain,) if isinstance(step, Residual)
                                    else step.parts or (step,))}
            seen = set()
            for layer in layers:
                step = runs_in[id(layer)]
                kernel = "  (fused above)" if id(step) in seen else step.label
                seen.add(id(step))
                if isinstance(layer, Residual):
                    rows.append((indent + "Residual: relu(x + F(x)), F =", shape, 0, kernel))
                    add(layer.body, step.body, shape, indent + "  ")
                    continue
                shape = layer.out_shape(shape) if shape else None
                rows.append((indent + repr(layer), shape,
                             sum(p.value.size for p in layer.parameters()), kernel))

        add(self.plain.layers, self.layers, self.input_shape or (self.input_width(),), "")
        return rows

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


# ---- build(): the layers an --arch list describes -------------------------

class _Build:
    """What every token's layers are made with (build's arguments)."""

    def __init__(self, arch, rng, activation, steepness, dropout, batchnorm):
        self.arch, self.rng, self.dropout, self.batchnorm = arch, rng, dropout, batchnorm
        self.activation, self.steepness = ACTIVATIONS[activation], steepness

    def act(self):
        """A new layer of the activation (the sigmoid with its steepness lambda)"""
        return Sigmoid(self.steepness) if self.activation is Sigmoid else self.activation()

    def image(self, shape, what):
        if len(shape) != 3:
            raise PynnError(f"--arch {self.arch}: {what} of a flat vector (after f or g)")


def _conv(b, tok, shape):
    """c32, c32k5: Conv2d [+ BatchNorm2d] + activation"""
    b.image(shape, "a convolution")
    norm = b.batchnorm in ("conv", "all")
    layers = [Conv2d(shape[2], tok[1], tok[2], b.rng, bias=not norm)]
    layers += [BatchNorm2d(tok[1])] if norm else []
    return layers + [b.act()], shape[:2] + (tok[1],)


def _pool(b, tok, shape):
    """p: MaxPool2d"""
    b.image(shape, "a pooling")
    if shape[0] < 2 or shape[1] < 2:
        raise PynnError(f"--arch {b.arch}: pools a {shape[0]}x{shape[1]} image below 1x1")
    return [MaxPool2d()], (shape[0] // 2, shape[1] // 2, shape[2])


def _gap(b, tok, shape):
    """g: GlobalAvgPool2d, an image to its channel means"""
    b.image(shape, "a global average pooling")
    return [GlobalAvgPool2d()], (shape[2],)


def _residual(b, tok, shape):
    """r32: Residual(Conv2d [+ BatchNorm2d] + activation, Conv2d [+ BatchNorm2d]),
    relu(x + F(x)) (a ReLU after the sum, whatever the activation): x must have
    the block's channels already"""
    b.image(shape, "a residual block")
    if shape[2] != tok[1]:
        raise PynnError(f"--arch {b.arch}: r{tok[1]} adds its input to its output, but its "
                        f"input has {shape[2]} channel{'s' if shape[2] > 1 else ''} "
                        f"(a c{tok[1]} before it would give {tok[1]})")
    first, _ = _conv(b, ("c", tok[1], 3), shape)
    second, _ = _conv(b, ("c", tok[1], 3), shape)
    return [Residual(*first, *second[:-1])], shape  # the second conv's activation comes after the sum


def _dense(b, tok, shape):
    """f128: [Flatten] Linear [+ BatchNorm1d] + activation [+ Dropout]"""
    layers, shape = _flat(shape)
    layers.append(Linear(shape[0], tok[1], b.rng))
    layers += [BatchNorm1d(tok[1])] if b.batchnorm == "all" else []
    layers.append(b.act())
    layers += [Dropout(b.dropout, b.rng)] if b.dropout > 0.0 else []
    return layers, (tok[1],)


def _dropout(b, tok, shape):
    """d0.3: Dropout"""
    return [Dropout(tok[1], b.rng)], shape


def _flat(shape):
    """[Flatten()] when the shape is an image's, and the flat shape"""
    return ([Flatten()], (math.prod(shape),)) if len(shape) == 3 else ([], shape)


# an --arch token's letter -> the function that makes its layers (arch.py parses them)
TOKEN_LAYERS = {"c": _conv, "p": _pool, "g": _gap, "r": _residual, "f": _dense,
                "d": _dropout}


def build(arch, width, classes, activation, rng, dropout=0.0, batchnorm="conv", steepness=1.0):
    """The Sequential that ``arch`` (an --arch string) describes, for input
    vectors of ``width`` values and ``classes`` outputs. Convolutions read
    the vectors as square one-channel images (784 = 28 x 28).

    Each token's layers come from TOKEN_LAYERS, in order; then [Flatten]
    Linear(classes). A first Linear or Conv2d does not compute dL/d(input
    pixels), which nobody needs (input_grad=False). ``batchnorm`` is one of
    config.BATCHNORM; a run passes its --batchnorm (Config's default "all"),
    the "conv" here keeps a library call without dense batch norms."""
    tokens = arch_tokens.parse(arch)
    if batchnorm not in BATCHNORM:
        raise PynnError(f"--batchnorm {batchnorm}: not one of {', '.join(BATCHNORM)}")
    images = arch_tokens.needs_images(tokens)
    shape = image_shape(width) if images else (width,)
    if shape is None:
        raise PynnError(f"--arch {arch}: convolutions need square images, but the "
                        f"vectors have {width} values (not a square number)")
    b, input_shape, layers = _Build(arch, rng, activation, steepness, dropout, batchnorm), shape, []
    for tok in tokens:
        new, shape = TOKEN_LAYERS[tok[0]](b, tok, shape)
        layers += new
    flat, shape = _flat(shape)
    layers += flat + [Linear(shape[0], classes, rng)]
    if isinstance(layers[0], (Linear, Conv2d)):
        layers[0].input_grad = False
    model = Sequential(*layers, input_shape=input_shape if images else None, width=width)
    model.spec = {"arch": arch, "activation": activation, "batchnorm": batchnorm,
                  "steepness": steepness}
    return model


def mlp(sizes, activation, rng, dropout=0.0):
    """Sequential(Linear, act, [Dropout,] Linear, act, [Dropout,] ..., Linear)
    for sizes [D, h1, ..., V]: build() with dense layers only."""
    arch = ",".join(f"f{s}" for s in sizes[1:-1])
    return build(arch, sizes[0], sizes[-1], activation, rng, dropout, batchnorm="off")
