"""Sequential: layers applied in order; backward in reverse. mlp() builds one."""
from ._kernels import lib
from .layers import ACTIVATIONS, Dropout, Linear, ReLU
from .tensor import Tensor


class Sequential:
    """Layers applied in order; backward in reverse.

    Two optimizations, both invisible in the results: the first Linear does
    not compute dL/d(input pixels), which nobody needs; and a Linear directly
    followed by a ReLU runs both as one fused C call each way (the ReLU is
    then skipped: ``steps`` lists what actually runs).
    """

    def __init__(self, *layers):
        self.layers = list(layers)
        if self.layers and isinstance(self.layers[0], Linear):
            self.layers[0].input_grad = False
        self.steps = []
        for layer in self.layers:
            prev = self.steps[-1] if self.steps else None
            if isinstance(layer, ReLU) and isinstance(prev, Linear) and not prev.relu:
                prev.relu = True  # fused into the Linear
            else:
                self.steps.append(layer)

    def forward(self, x):
        for layer in self.steps:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.steps):
            dout = layer.backward(dout)
        return dout

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def train(self, mode=True):
        """Training mode (dropout active) or, with False, evaluation mode."""
        for layer in self.layers:
            if hasattr(layer, "training"):
                layer.training = mode
        return self

    def predict(self, x, batch_size=1000):
        """Class indices (int32 Tensor (N,)) for the rows of x (N, D), in
        evaluation mode (training mode is restored afterwards)."""
        n = x.shape[0]
        out = Tensor((n,), "int32")
        modes = [(layer, layer.training) for layer in self.layers if hasattr(layer, "training")]
        self.train(False)
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                logits = self.forward(x.rows(start, stop))
                lib.pynn_argmax(out.rows(start, stop).ptr, logits.ptr, *logits.shape)
        finally:
            for layer, mode in modes:
                layer.training = mode
        return out

    def state(self):
        """Copies of every parameter value (to keep the best model)."""
        return [p.value.clone() for p in self.parameters()]

    def load_state(self, state):
        for p, saved in zip(self.parameters(), state):
            p.value.copy_(saved)

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


def mlp(sizes, activation, rng, dropout=0.0):
    """Sequential(Linear, act, [Dropout,] Linear, act, [Dropout,] ..., Linear)
    for sizes [D, h1, ..., V]; a Dropout after each hidden activation when
    dropout > 0."""
    act = ACTIVATIONS[activation]
    layers = []
    for i, (c, oc) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(c, oc, rng))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout > 0.0:
                layers.append(Dropout(dropout, rng))
    return Sequential(*layers)
