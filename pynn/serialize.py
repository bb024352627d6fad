"""Save a trained model to a file and load it back (``--save`` / ``--load``).

The file format, version 2 (all integers little-endian):

    offset  size  content
    0       8     magic bytes  b"PYNNMLP\0" (the name is older than the CNNs)
    8       4     format version, uint32 (2)
    12      4     header length H in bytes, uint32
    16      H     header: UTF-8 JSON object
                    "arch":       the --arch string, e.g. "c32,p,c64,p,f128"
                    "width":      values per input vector (784)
                    "classes":    outputs of the last layer
                    "activation": a name of pynn.layers.ACTIVATIONS ("relu", ...)
                    "steepness":  the sigmoid's lambda (absent: 1)
                    "batchnorm":  "conv", "all" or "off" (pynn.config.BATCHNORM)
                    "tensors":    the shape of every tensor of the payload, in order
                    "mean", "std": the Normalizer of the training data
                    "crc32":      zlib.crc32 of the payload (catches corruption)
    16+H    ...   payload: float32 little-endian, every parameter of the model
                  in layer order (Linear: weight (out x in), bias; Conv2d:
                  weight (out x k x k x in) [, bias]; BatchNorm: gamma, beta),
                  then every buffer (BatchNorm: running mean, running var)

Version 1 (MLPs only: "sizes" = [inputs, hidden..., classes] instead of arch,
width, classes, batchnorm and tensors; the payload each Linear's weight and
bias) is still read. The file ends exactly where the payload ends. A JSON
header keeps the format readable (``head -c 300 model.bin``) and easy to
extend; a new field that old readers could not ignore means a new version.
"""
import array
import json
import math
import random
import struct
import sys
import zlib

from ._kernels import ffi
from .config import BATCHNORM
from .data import Normalizer
from .errors import PynnError
from .io import read_bytes, write_atomic
from .layers import ACTIVATIONS
from .model import build

MAGIC = b"PYNNMLP\0"
VERSION = 2
READS = (1, 2)  # the versions load() understands
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


def _tensors(model):
    """What the payload holds, in order: parameter values, then buffers."""
    return [p.value for p in model.parameters()] + model.buffers()


def save(path, model, norm):
    """Write ``model`` (made by pynn.model.build, which records how in
    ``model.spec``) and its Normalizer ``norm`` to ``path``, atomically."""
    tensors, spec = _tensors(model), model.spec
    payload = b"".join(_swap_if_big_endian(ffi.buffer(t.ptr, t.nbytes)[:]) for t in tensors)
    header = json.dumps({"arch": spec["arch"], "width": model.input_width(),
                         "classes": model.plain.layers[-1].out_features,
                         "activation": spec["activation"], "batchnorm": spec["batchnorm"],
                         "steepness": spec.get("steepness", 1.0),
                         "tensors": [list(t.shape) for t in tensors],
                         "mean": norm.mean, "std": norm.std,
                         "crc32": zlib.crc32(payload)}).encode("utf-8")
    write_atomic(path, [_PREFIX.pack(MAGIC, VERSION, len(header)), header, payload])


def _header(path, buf):
    """The parsed, checked JSON header as build() arguments, and the payload's offset."""
    if len(buf) < _PREFIX.size or bytes(buf[:len(MAGIC)]) != MAGIC:
        raise PynnError(f"{path}: not a pynn model file")
    _, version, length = _PREFIX.unpack_from(buf)
    if version not in READS:
        raise PynnError(f"{path}: model file format version {version}; "
                        f"this pynn reads versions {', '.join(map(str, READS))}")
    start = _PREFIX.size + length
    if len(buf) < start:
        raise PynnError(f"{path}: truncated model file (header cut short)")
    try:
        head = json.loads(bytes(buf[_PREFIX.size:start]).decode("utf-8"))
        if version == 1:  # an MLP: [inputs, hidden..., classes]
            sizes = [int(s) for s in head["sizes"]]
            if len(sizes) < 2 or min(sizes) < 1:
                raise ValueError
            spec = {"arch": ",".join(f"f{s}" for s in sizes[1:-1]), "width": sizes[0],
                    "classes": sizes[-1], "batchnorm": "off",
                    "tensors": [s for a, b in zip(sizes, sizes[1:]) for s in ([b, a], [b])]}
        else:
            spec = {"arch": str(head["arch"]), "width": int(head["width"]),
                    "classes": int(head["classes"]), "batchnorm": str(head["batchnorm"]),
                    "tensors": [[int(d) for d in shape] for shape in head["tensors"]]}
        spec["activation"] = str(head["activation"])
        spec["steepness"] = float(head.get("steepness", 1.0))
        mean, std, crc = float(head["mean"]), float(head["std"]), int(head["crc32"])
    except (ValueError, KeyError, TypeError):  # JSON and Unicode errors are ValueErrors
        raise PynnError(f"{path}: corrupt model file (unreadable header)") from None
    if (spec["activation"] not in ACTIVATIONS or spec["batchnorm"] not in BATCHNORM
            or min(spec["width"], spec["classes"]) < 1
            or not (math.isfinite(spec["steepness"]) and spec["steepness"] > 0)
            or not math.isfinite(mean) or not (std > 0 and math.isfinite(std))):
        raise PynnError(f"{path}: corrupt model file (impossible header values)")
    return spec, Normalizer(mean, std), crc, start


def load(path):
    """(model, Normalizer) from a file written by ``save`` (or by a pynn that
    wrote version 1); a PynnError naming the file when it is not one, is of
    another version, or is damaged."""
    buf = read_bytes(path)
    spec, norm, crc, start = _header(path, buf)
    # the payload against the header's own sizes first: an absurd header (a
    # width of 10**10, say) must not make build() allocate anything
    expected = 4 * sum(math.prod(shape) for shape in spec["tensors"])
    found = len(buf) - start
    if found < expected:
        raise PynnError(f"{path}: truncated model file ({found} of {expected} weight bytes)")
    if found > expected:
        raise PynnError(f"{path}: corrupt model file ({found - expected} bytes after the weights)")
    payload = bytes(buf[start:])
    if zlib.crc32(payload) != crc:
        raise PynnError(f"{path}: corrupt model file (checksum mismatch)")
    try:  # initial weights: overwritten below
        model = build(spec["arch"], spec["width"], spec["classes"], spec["activation"],
                      random.Random(0), batchnorm=spec["batchnorm"], steepness=spec["steepness"])
    except PynnError as e:
        raise PynnError(f"{path}: corrupt model file ({e})") from None
    tensors = _tensors(model)
    if spec["tensors"] != [list(t.shape) for t in tensors]:
        raise PynnError(f"{path}: corrupt model file (tensor shapes do not match its arch)")
    payload, offset = _swap_if_big_endian(payload), 0
    for t in tensors:
        ffi.memmove(t.ptr, payload[offset:offset + t.nbytes], t.nbytes)
        offset += t.nbytes
    return model, norm
