"""Data: CSV files -> Tensors (C parser), validation split, normalization.

The training set stays one (N, D) Tensor; the split is a pair of row lists
(splitting copies nothing), and each training batch, like the validation
rows, is gathered from it by row index into a buffer of its own.

The test set's values enter only through ``load_vectors``/``load_labels``,
called by the final prediction step (see app.py); before training, app.py
only checks the test file's format with ``check_vectors``, keeping no value.
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
    lib.PYNN_CSV_CHANGED: "file changed while it was read",
    lib.PYNN_CSV_BAD_CALL: "internal error: the CSV parser was called with bad sizes",
}
# Labels are class numbers 0, 1, ...: the model gets one output per class, so
# a label of 2147483647 would ask for an output layer of 2**31 units.
MAX_CLASSES = 1000
# Whole files that are not CSV text, known by their first bytes.
_SIGNATURES = {
    b"\xff\xfe": "UTF-16 text; save it as UTF-8 (or ASCII)",
    b"\xfe\xff": "UTF-16 text; save it as UTF-8 (or ASCII)",
    b"\x1f\x8b": "gzip-compressed; decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive; extract the CSV first",
}
# Bytes that never occur in CSV text: control characters, and bytes that are
# not UTF-8 at all.
_BINARY = frozenset(set(range(32)) - {9, 13} | {127, 0xC0, 0xC1} | set(range(0xF5, 256)))
_NUMBER_CHARS = frozenset("0123456789+-.eE \t")


def _raw_token(buf, start):
    """The bytes of the offending token (at most 24), up to a comma or newline."""
    end = start
    while end < len(buf) and end - start < 24 and buf[end] not in b",\n":
        end += 1
    return bytes(buf[start:end])


def _token(buf, start):
    """The offending token as text, for the message (at most 24 characters)."""
    return _raw_token(buf, start).rstrip(b"\r").decode("utf-8", "backslashreplace")


def _raise(path, buf, err, cols, labels=False):
    code, line = err.code, err.line
    for magic, what in _SIGNATURES.items():
        if code != lib.PYNN_CSV_EMPTY and buf[:len(magic)] == magic:
            raise PynnError(f"{path}: not CSV text but {what}")
    if code == lib.PYNN_CSV_EMPTY:
        raise PynnError(f"{path}: file is empty")
    if code == lib.PYNN_CSV_COUNT:
        values = "value" if cols == 1 else "values"
        raise PynnError(f"{path}:{line}: expected {cols} {values}, found {err.found}")
    if code in (lib.PYNN_CSV_BAD_CALL, lib.PYNN_CSV_CHANGED):
        raise PynnError(f"{path}: " + _MESSAGES[code])
    raw = _raw_token(buf, err.token_start)
    token = _token(buf, err.token_start)
    # in a message, control characters (a lone CR inside a token, say) are escaped:
    # the message stays one line
    shown = token if token.isprintable() else repr(token)[1:-1]
    if "\r" in token and set(token) <= _NUMBER_CHARS | {"\r"}:
        raise PynnError(f"{path}:{line}: lines end in a lone CR (old Mac line endings); "
                        "use LF or CRLF")
    if any(b in _BINARY for b in raw):
        raise PynnError(f"{path}:{line}: binary data, not CSV text: {raw[:8]!r}...")
    header = token[:1].isalpha() and code in (lib.PYNN_CSV_BAD_TOKEN, lib.PYNN_CSV_NOT_LABEL)
    if header and line == 1:
        raise PynnError(f"{path}:1: looks like a header row ({token!r}); "
                        "the course format has none: remove the first line")
    if code == lib.PYNN_CSV_BAD_TOKEN and token.strip() == "":
        raise PynnError(f"{path}:{line}: value {err.value} is empty")
    if labels and code == lib.PYNN_CSV_OVERFLOW:
        raise PynnError(f"{path}:{line}: label {shown} is too large: "
                        f"labels are class numbers 0 to {MAX_CLASSES - 1}")
    if labels and code == lib.PYNN_CSV_LONG_TOKEN:
        raise PynnError(f"{path}:{line}: label is longer than 64 characters")
    raise PynnError(f"{path}:{line}: " + _MESSAGES[code].format(value=err.value, token=shown))


def _shape(path, buf, err):
    rows, cols = ffi.new("int64_t *"), ffi.new("int64_t *")
    if lib.pynn_csv_shape(ffi.from_buffer(buf), len(buf), rows, cols, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, 0)
    return rows[0], cols[0]


def load_vectors(path, width=None):
    """(N, D) float32 Tensor from a CSV of N lines with D numbers each.

    ``width``, when given, is the D every line must have (the test vectors
    must match the training vectors)."""
    return parse_vectors(read_bytes(path), path, width)


def parse_vectors(buf, name, width=None):
    """load_vectors on the bytes ``buf``; ``name`` names them in messages."""
    err = ffi.new("pynn_csv_error *")
    rows, cols = _shape(name, buf, err)
    if width is not None:
        cols = width  # the parser names the first line with another count
    # A valid line holds cols values of at least one character and cols - 1
    # commas: a file too short for rows x cols values has a bad line (say, one
    # of a million commas), found without sizing an array by it.
    if 2 * rows * cols > len(buf) + 1:
        lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), ffi.NULL, rows, cols, err)
        _raise(name, buf, err, cols)
    x = _tensor(name, (rows, cols), "float32")
    if lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), x.ptr, rows, cols, err) != lib.PYNN_CSV_OK:
        _raise(name, buf, err, cols)
    return x


def check_vectors(path, width=None):
    """What load_vectors(path, width) would raise, without loading anything:
    one pass of the C parser that keeps no value (out == NULL). For checking
    the test file's format before training, without using its contents."""
    buf = read_bytes(path)
    err = ffi.new("pynn_csv_error *")
    rows, cols = _shape(path, buf, err)
    cols = width if width is not None else cols
    if lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), ffi.NULL, rows, cols, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, cols)
    return rows, cols


def _tensor(name, shape, dtype):
    try:
        return Tensor(shape, dtype)
    except MemoryError:
        raise PynnError(f"{name}: too large: no memory for {' x '.join(map(str, shape))} "
                        "values") from None


def load_labels(path, count=None, classes=None):
    """(N,) int32 Tensor from a CSV with one non-negative integer per line.

    ``count``: the number of vectors they belong to; ``classes``: labels must
    be below it (and always below MAX_CLASSES)."""
    return parse_labels(read_bytes(path), path, count, classes)


def check_labels(path, count=None):
    """What load_labels(path, count) would raise for the file's format or
    length, without keeping a value (out == NULL): for checking the test
    labels before training, without using them."""
    buf = read_bytes(path)
    err = ffi.new("pynn_csv_error *")
    rows, _ = _shape(path, buf, err)
    if lib.pynn_csv_parse_labels(ffi.from_buffer(buf), len(buf), ffi.NULL, rows, err) != lib.PYNN_CSV_OK:
        _raise(path, buf, err, 1, labels=True)
    if count is not None and rows != count:
        raise PynnError(f"{path}: {rows} labels, but the vectors have {count} lines")
    return rows


def parse_labels(buf, name, count=None, classes=None):
    """load_labels on the bytes ``buf``; ``name`` names them in messages."""
    err = ffi.new("pynn_csv_error *")
    rows, _ = _shape(name, buf, err)  # a line with a comma: the parser names it
    y = _tensor(name, (rows,), "int32")
    if lib.pynn_csv_parse_labels(ffi.from_buffer(buf), len(buf), y.ptr, rows, err) != lib.PYNN_CSV_OK:
        _raise(name, buf, err, 1, labels=True)
    if count is not None and rows != count:
        raise PynnError(f"{name}: {rows} labels, but the vectors have {count} lines")
    values = y.tolist()
    big = max(values)
    if classes is not None and big >= classes:
        raise PynnError(f"{name}:{values.index(big) + 1}: label {big} is not one of the "
                        f"{classes} classes seen in training")
    if big >= MAX_CLASSES:
        raise PynnError(f"{name}:{values.index(big) + 1}: label {big} is too large: "
                        f"labels are class numbers 0 to {MAX_CLASSES - 1}")
    return y


def gather(x, rows):
    """A new Tensor with the given rows (a list of ints) of x, in that order."""
    n = len(rows)
    if n and not (0 <= min(rows) and max(rows) < x.shape[0]):
        raise IndexError(f"rows outside [0, {x.shape[0]})")  # checked: C trusts its indices
    idx = Tensor.from_list(rows, dtype="int32")
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
    n_val = round(n * val_fraction)
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

    def normalized(self, value):
        """What a raw value becomes (a background pixel 0, say)."""
        return (value - self.mean) / self.std

    def __call__(self, x):
        """Normalize x in place and return it."""
        lib.pynn_scale_shift(x.ptr, x.size, 1.0 / self.std, -self.mean / self.std)
        return x
