"""Softmax + cross-entropy, fused (csrc/layers.c)."""
from ._kernels import ffi, lib
from .tensor import Tensor, check


class CrossEntropyLoss:
    """Mean cross-entropy of softmax(logits) against integer targets.

    ``forward`` returns (mean loss, number of correct argmax predictions);
    ``backward`` returns dL/dlogits of the mean loss.
    """

    def __init__(self):
        self._probs, self._dlogits, self._targets = {}, {}, None
        self._correct = ffi.new("int32_t *")

    def forward(self, logits, targets):
        B, V = logits.shape
        check(targets, (B,), "int32", "targets")
        probs = self._probs.get((B, V)) or self._probs.setdefault((B, V), Tensor((B, V)))
        total = lib.crossentropy_softmax_forward(probs.ptr, ffi.NULL, self._correct,
                                                 logits.ptr, targets.ptr, B, V)
        if self._correct[0] < 0:
            raise ValueError(f"targets must lie in [0, {V})")
        self._targets, self._p = targets, probs
        return total / B, self._correct[0]

    def backward(self):
        B, V = self._p.shape
        d = self._dlogits.get((B, V)) or self._dlogits.setdefault((B, V), Tensor((B, V)))
        lib.crossentropy_softmax_backward(d.ptr, self._p.ptr, self._targets.ptr, B, V)
        return d
