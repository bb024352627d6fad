"""Softmax + cross-entropy, fused (csrc/layers.c)."""
from ._kernels import ffi, lib
from .tensor import Tensor, check


class CrossEntropyLoss:
    """Mean cross-entropy of softmax(logits) against integer targets, with
    optional label smoothing: the target distribution is then
    (1 - label_smoothing) on the label plus label_smoothing / V on every class.

    ``forward`` returns (mean loss, number of correct argmax predictions);
    ``backward`` returns dL/dlogits of the mean loss.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._probs, self._dlogits, self._targets = {}, {}, None
        self._correct = ffi.new("int32_t *")

    def forward(self, logits, targets):
        B, V = logits.shape
        check(targets, (B,), "int32", "targets")
        probs = self._probs.get((B, V)) or self._probs.setdefault((B, V), Tensor((B, V)))
        total = lib.crossentropy_softmax_forward(probs.ptr, ffi.NULL, self._correct,
                                                 logits.ptr, targets.ptr,
                                                 self.label_smoothing, B, V)
        if self._correct[0] < 0:
            raise ValueError(f"targets must lie in [0, {V})")
        self._targets, self._p = targets, probs
        return total / B, self._correct[0]

    def backward(self):
        B, V = self._p.shape
        d = self._dlogits.get((B, V)) or self._dlogits.setdefault((B, V), Tensor((B, V)))
        lib.crossentropy_softmax_backward(d.ptr, self._p.ptr, self._targets.ptr,
                                          self.label_smoothing, B, V)
        return d
