"""Save a trained model to a file and load it back (``--save`` / ``--load``).

The file format, version 1 (all integers little-endian):

    offset  size  content
    0       8     magic bytes  b"PYNNMLP\\0"
    8       4     format version, uint32 (1)
    12      4     header length H in bytes, uint32
    16      H     header: UTF-8 JSON object
                    "sizes":      layer sizes [inputs, hidden..., classes]
                    "activation": "relu", "leaky_relu" or "tanh"
                    "mean", "std": the Normalizer of the training data
                    "crc32":      zlib.crc32 of the payload (catches corruption)
    16+H    ...   payload: float32 little-endian, for each Linear layer in order
                  its weight (out_features x in_features, row by row), then
                  its bias (out_features)

The file ends exactly where the payload ends. A JSON header keeps the format
readable (``head -c 200 model.bin``) and easy to extend; a new field that old
readers could not ignore means a new version number.
"""
import array
import json
import math
import random
import struct
import sys
import zlib

from ._kernels import ffi
from .data import Normalizer
from .errors import PynnError
from .io import read_bytes, write_atomic
from .layers import ACTIVATIONS, Linear
from .model import mlp

MAGIC = b"PYNNMLP\0"
VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, version, header length


def _swap_if_big_endian(raw):
    """Native float32 bytes <-> little-endian float32 bytes. Memory already
    holds little-endian floats on x86 and ARM; only big-endian hosts swap."""
    if sys.byteorder == "little":
        return raw
    values = array.array("f")
    values.frombytes(raw)
    values.byteswap()
    return values.tobytes()


def _linears(model):
    return [layer for layer in model.layers if isinstance(layer, Linear)]


def _activation_name(model):
    """The key in ACTIVATIONS of the model's activation layers (mlp uses one kind)."""
    for layer in model.layers:
        for name, cls in ACTIVATIONS.items():
            if type(layer) is cls:
                return name
    return "relu"  # a single Linear layer has no activation: any name will do


def save(path, model, norm):
    """Write ``model`` (built by ``mlp``) and its Normalizer ``norm`` to
    ``path``, atomically."""
    linears = _linears(model)
    sizes = [linears[0].in_features] + [layer.out_features for layer in linears]
    payload = b"".join(
        _swap_if_big_endian(ffi.buffer(p.value.ptr, p.value.nbytes)[:])
        for layer in linears for p in (layer.weight, layer.bias))
    header = json.dumps({"sizes": sizes, "activation": _activation_name(model),
                         "mean": norm.mean, "std": norm.std,
                         "crc32": zlib.crc32(payload)}).encode("utf-8")
    write_atomic(path, [_PREFIX.pack(MAGIC, VERSION, len(header)), header, payload])


def _header(path, buf):
    """The parsed, checked JSON header and the payload's offset."""
    if len(buf) < _PREFIX.size or bytes(buf[:len(MAGIC)]) != MAGIC:
        raise PynnError(f"{path}: not a pynn model file")
    _, version, length = _PREFIX.unpack_from(buf)
    if version != VERSION:
        raise PynnError(f"{path}: model file format version {version}; "
                        f"this pynn reads version {VERSION}")
    start = _PREFIX.size + length
    if len(buf) < start:
        raise PynnError(f"{path}: truncated model file (header cut short)")
    try:
        head = json.loads(bytes(buf[_PREFIX.size:start]).decode("utf-8"))
        sizes, activation = [int(s) for s in head["sizes"]], head["activation"]
        mean, std, crc = float(head["mean"]), float(head["std"]), int(head["crc32"])
    except (ValueError, KeyError, TypeError):  # JSON and Unicode errors are ValueErrors
        raise PynnError(f"{path}: corrupt model file (unreadable header)") from None
    if (len(sizes) < 2 or min(sizes) < 1 or activation not in ACTIVATIONS
            or not math.isfinite(mean) or not (std > 0 and math.isfinite(std))):
        raise PynnError(f"{path}: corrupt model file (impossible header values)")
    return sizes, activation, Normalizer(mean, std), crc, start


def load(path):
    """(model, Normalizer) from a file written by ``save``; a PynnError naming
    the file when it is not one, is of another version, or is damaged."""
    buf = read_bytes(path)
    sizes, activation, norm, crc, start = _header(path, buf)
    model = mlp(sizes, activation, random.Random(0))  # initial weights: overwritten below
    params = [p for layer in _linears(model) for p in (layer.weight, layer.bias)]
    expected = 4 * sum(p.value.size for p in params)
    found = len(buf) - start
    if found < expected:
        raise PynnError(f"{path}: truncated model file ({found} of {expected} weight bytes)")
    if found > expected:
        raise PynnError(f"{path}: corrupt model file ({found - expected} bytes after the weights)")
    payload = bytes(buf[start:])
    if zlib.crc32(payload) != crc:
        raise PynnError(f"{path}: corrupt model file (checksum mismatch)")
    payload, offset = _swap_if_big_endian(payload), 0
    for p in params:
        ffi.memmove(p.value.ptr, payload[offset:offset + p.value.nbytes], p.value.nbytes)
        offset += p.value.nbytes
    return model, norm
