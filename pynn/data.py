"""Data: CSV files -> Tensors (C parser), validation split, normalization.

The training set stays one (N, D) Tensor; the split is a pair of row lists,
and training batches are gathered from it by row index (no copies).

The test set enters only through ``load_vectors``/``load_labels`` called by
the final prediction step (see app.py); nothing here looks at it otherwise.
"""
from ._kernels import ffi, lib
from .errors import PynnError
from .io import read_bytes
from .tensor import Tensor

_MESSAGES = {
    lib.PYNN_CSV_BAD_TOKEN: "value {value} is not a number: {token!r}",
    lib.PYNN_CSV_BLANK_LINE: "blank line",
    lib.PYNN_CSV_OVERFLOW: "value {value} is out of range: {token!r}",
    lib.PYNN_CSV_NOT_LABEL: "label is not a non-negative integer: {token!r}",
    lib.PYNN_CSV_LONG_TOKEN: "value {value} is longer than 64 characters",
    lib.PYNN_CSV_TOO_MANY: "file changed while it was read",
}


def _token(buf, start):
    """The offending token as text, for the message (at most 24 characters)."""
    end = start
    while end < len(buf) and end - start < 24 and buf[end] not in b",\n":
        end += 1
    return buf[start:end].rstrip(b"\r").decode("utf-8", "backslashreplace")


def _raise(path, buf, err, cols):
    code, line = err.code, err.line
    if code == lib.PYNN_CSV_EMPTY:
        raise PynnError(f"{path}: file is empty")
    if code == lib.PYNN_CSV_COUNT:
        values = "value" if cols == 1 else "values"
        raise PynnError(f"{path}:{line}: expected {cols} {values}, found {err.found}")
    token = _token(buf, err.token_start)
    if "\r" in token:
        raise PynnError(f"{path}:{line}: lines end in a lone CR (old Mac line endings); "
                        "use LF or CRLF")
    header = token[:1].isalpha() and code in (lib.PYNN_CSV_BAD_TOKEN, lib.PYNN_CSV_NOT_LABEL)
    if header and line == 1:
        raise PynnError(f"{path}:1: looks like a header row ({token!r}); "
                        "the course format has none: remove the first line")
    if code == lib.PYNN_CSV_BAD_TOKEN and token.strip() == "":
        raise PynnError(f"{path}:{line}: value {err.value} is empty")
    raise PynnError(f"{path}:{line}: " + _MESSAGES[code].format(value=err.value, token=token))


def _shape(path, buf, err):
    rows, cols = ffi.new("int64_t *"), ffi.new("int64_t *")
    if lib.pynn_csv_shape(ffi.from_buffer(buf), len(buf), rows, cols, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, 0)
    return rows[0], cols[0]


def load_vectors(path, width=None):
    """(N, D) float32 Tensor from a CSV of N lines with D numbers each.

    ``width``, when given, is the D every line must have (the test vectors
    must match the training vectors)."""
    buf = read_bytes(path)
    err = ffi.new("pynn_csv_error *")
    rows, cols = _shape(path, buf, err)
    if width is not None and cols != width:
        raise PynnError(f"{path}:1: expected {width} values, found {cols}")
    x = Tensor((rows, cols))
    if lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), x.ptr, rows, cols, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, cols)
    return x


def load_labels(path, count=None, classes=None):
    """(N,) int32 Tensor from a CSV with one non-negative integer per line.

    ``count``: the number of vectors they belong to; ``classes``: labels must
    be below it."""
    buf = read_bytes(path)
    err = ffi.new("pynn_csv_error *")
    rows, cols = _shape(path, buf, err)
    if cols != 1:
        raise PynnError(f"{path}:1: expected 1 value, found {cols}")
    y = Tensor((rows,), "int32")
    if lib.pynn_csv_parse_labels(ffi.from_buffer(buf), len(buf), y.ptr, rows, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, 1)
    if count is not None and rows != count:
        raise PynnError(f"{path}: {rows} labels, but the vectors have {count} lines")
    if classes is not None:
        big = max(y.tolist())
        if big >= classes:
            line = y.tolist().index(big) + 1
            raise PynnError(f"{path}:{line}: label {big} is not one of the "
                            f"{classes} classes seen in training")
    return y


def gather(x, rows):
    """A new Tensor with the given rows (a list of ints) of x, in that order."""
    idx = Tensor.from_list(rows, dtype="int32")
    n = len(rows)
    if x.dtype == "float32":
        out = Tensor((n,) + x.shape[1:])
        lib.pynn_gather_rows(out.ptr, x.ptr, idx.ptr, n, x.size // max(1, x.shape[0]))
    else:
        out = Tensor((n,), "int32")
        lib.pynn_gather_labels(out.ptr, x.ptr, idx.ptr, n)
    return out


def split(n, val_fraction, rng):
    """(train rows, validation rows): a seeded random part of the TRAINING
    set's n rows held out for validation; both lists sorted."""
    n_val = int(round(n * val_fraction))
    if n - n_val < 1:
        raise PynnError(f"--val-fraction {val_fraction} leaves no training data")
    order = list(range(n))
    rng.shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])


class Normalizer:
    """x -> (x - mean) / std with one mean and std over all training values."""

    def __init__(self, mean=0.0, std=1.0):
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x, rows=None):
        """Statistics of the given rows of x (all rows when None)."""
        mean, var = ffi.new("double *"), ffi.new("double *")
        idx = Tensor.from_list(rows, dtype="int32") if rows is not None else None
        n = len(rows) if rows is not None else x.shape[0]
        lib.pynn_moments(x.ptr, idx.ptr if idx is not None else ffi.NULL, n, x.size // max(1, x.shape[0]),
                         mean, var)
        return cls(mean[0], max(var[0], 1e-12) ** 0.5)

    def __call__(self, x):
        """Normalize x in place and return it."""
        lib.pynn_scale_shift(x.ptr, x.size, 1.0 / self.std, -self.mean / self.std)
        return x
