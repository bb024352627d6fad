"""The losses (csrc/loss.c): softmax + cross-entropy, fused, and the
lecture's mean squared error. Both: forward(outputs, targets) -> (mean loss,
correct argmax predictions), backward() -> dL/d(outputs) of the mean loss."""
from ._kernels import ffi, lib
from .tensor import cached, check


class CrossEntropyLoss:
    """Mean cross-entropy of softmax(logits) against integer targets, with
    optional label smoothing: the target distribution q is then
    (1 - label_smoothing) on the label plus label_smoothing / V on every class
    (one-hot without it):

        p_j = exp(z_j) / sum_k exp(z_k)            (softmax of a row's logits z)
        L = 1/B sum over rows of -sum_j q_j log p_j
        dL/dz_j = (p_j - q_j) / B                  (softmax and log cancel)

    ``forward`` returns (mean loss, number of correct argmax predictions);
    ``backward`` returns dL/dlogits of the mean loss. The plain versions:
    tests/reference.py softmax_ce (one-hot), tests/cnn_reference.py
    softmax_ce_smooth (smoothed).
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
        probs = cached(self._probs, (B, V))
        total = lib.crossentropy_softmax_forward(probs.ptr, ffi.NULL, self._correct,
                                                 logits.ptr, targets.ptr,
                                                 self.label_smoothing, B, V)
        if self._correct[0] < 0:
            raise ValueError(f"targets must lie in [0, {V})")
        self._targets, self._p = targets, probs
        return total / B, self._correct[0]

    def backward(self):
        B, V = self._p.shape
        d = cached(self._dlogits, (B, V))
        lib.crossentropy_softmax_backward(d.ptr, self._p.ptr, self._targets.ptr,
                                          self.label_smoothing, B, V)
        return d


class MSELoss:
    """The lecture's mean squared error, E = 1/p sum_k E_k with
    E_k = 1/2 sum_j (y_kj - d_kj)^2, the outputs y compared as they are
    (identity output units).

    Targets are either float (B, V), for regression, or int32 class labels
    (B,), which become one-hot vectors d (with label smoothing eps:
    (1 - eps) on the label plus eps / V everywhere); then ``forward`` also
    counts the rows whose largest output is the label. The gradient of the
    mean over the batch's B rows is

        dE/dy_kj = (y_kj - d_kj) / B
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._onehot, self._dy, self._pred = {}, {}, {}

    def forward(self, y, targets):
        B, V = y.shape
        correct = 0
        if targets.dtype == "int32":
            check(targets, (B,), "int32", "targets")
            d = cached(self._onehot, (B, V))
            if lib.pynn_one_hot(d.ptr, targets.ptr, self.label_smoothing, B, V) != 0:
                raise ValueError(f"targets must lie in [0, {V})")
            pred = cached(self._pred, (B,), "int32")
            lib.pynn_argmax(pred.ptr, y.ptr, B, V)
            correct = lib.pynn_count_equal(pred.ptr, targets.ptr, B)
        else:
            d = check(targets, (B, V), what="targets")
        self._y, self._d = y, d
        return lib.mse_forward(y.ptr, d.ptr, B, V) / B, correct

    def backward(self):
        B, V = self._y.shape
        dy = cached(self._dy, (B, V))
        lib.mse_backward(dy.ptr, self._y.ptr, self._d.ptr, B, V)
        return dy


LOSSES = {"cross_entropy": CrossEntropyLoss, "mse": MSELoss}
