"""Sequential: layers applied in order; backward in reverse."""
from ._kernels import lib
from .layers import ACTIVATIONS, Linear
from .tensor import Tensor


class Sequential:
    def __init__(self, *layers):
        self.layers = list(layers)
        first = next((l for l in self.layers if isinstance(l, Linear)), None)
        if first is not None and first is self.layers[0]:
            first.input_grad = False  # nobody needs dL/d(input pixels)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def predict(self, x, batch_size=1000):
        """Class indices (int32 Tensor (N,)) for the rows of x (N, D)."""
        n = x.shape[0]
        out = Tensor((n,), "int32")
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            logits = self.forward(x.rows(start, stop))
            lib.pynn_argmax(out.rows(start, stop).ptr, logits.ptr, *logits.shape)
        return out

    def state(self):
        """Copies of every parameter value (to keep the best model)."""
        return [p.value.clone() for p in self.parameters()]

    def load_state(self, state):
        for p, saved in zip(self.parameters(), state):
            p.value.copy_(saved)

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


def mlp(sizes, activation, rng):
    """Sequential(Linear, act, Linear, act, ..., Linear) for sizes [D, h1, ..., V]."""
    act = ACTIVATIONS[activation]
    layers = []
    for i, (c, oc) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(c, oc, rng))
        if i < len(sizes) - 2:
            layers.append(act())
    return Sequential(*layers)
