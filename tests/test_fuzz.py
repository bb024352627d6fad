"""Fuzzing the C CSV parser (csrc/csv.c) with Hypothesis.

Random bytes, CSV-like text built from awkward tokens, mutated valid files and
numbers near float32 rounding boundaries go straight into pynn_csv_shape,
pynn_csv_parse_floats and pynn_csv_parse_labels (through ffi.from_buffer, no
files), and through pynn.data.parse_vectors / parse_labels. Each result must
equal the pure-Python statement of the format in csv_reference.py: the same
error (code, line, value, found, token start), or exactly the same float32
values; and every error must reach the user as a one-line PynnError.

PYNN_FUZZ_EXAMPLES sets the examples per test (default 100: a quick pass in
the normal suite). scripts/sanitize.sh runs many more under AddressSanitizer
and UBSan; the number run is printed at the end.
"""
import os
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynn import PynnError
from pynn._kernels import ffi, lib
from pynn.data import parse_labels, parse_vectors

import csv_reference as ref

EXAMPLES = int(os.environ.get("PYNN_FUZZ_EXAMPLES", "100"))
# Derandomized: the same inputs on every run, so that a failure in CI is the
# same failure here; PYNN_FUZZ_RANDOM=1 explores new ones (hypothesis prints
# the seed of a failure, to reproduce it with --hypothesis-seed)
RANDOM = os.environ.get("PYNN_FUZZ_RANDOM", "") not in ("", "0")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM,
                database=None, suppress_health_check=list(HealthCheck))
RUN = {"inputs": 0}


@pytest.fixture(scope="module", autouse=True)
def report_count(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nfuzz: {RUN['inputs']} inputs through the C CSV parser "
              f"({EXAMPLES} examples per test)")


def bits(values):
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in values]


def error_tuple(err):
    return (err.code, err.line, err.value, err.found, err.token_start)


def c_shape(buf):
    rows, cols, err = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("pynn_csv_error *")
    code = lib.pynn_csv_shape(ffi.from_buffer(buf), len(buf), rows, cols, err)
    assert code == err.code
    return error_tuple(err), rows[0], cols[0]


def c_floats(buf, rows, cols, store=True):
    err = ffi.new("pynn_csv_error *")
    out = ffi.new("float[]", max(1, rows * cols)) if store else ffi.NULL
    code = lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), out, rows, cols, err)
    assert code == err.code
    return error_tuple(err), (list(out)[:rows * cols] if store and code == 0 else None)


def c_labels(buf, rows, store=True):
    err = ffi.new("pynn_csv_error *")
    out = ffi.new("int32_t[]", max(1, rows)) if store else ffi.NULL
    code = lib.pynn_csv_parse_labels(ffi.from_buffer(buf), len(buf), out, rows, err)
    assert code == err.code
    return error_tuple(err), (list(out)[:rows] if store and code == 0 else None)


def one_line(exc, name="fuzz.csv"):
    msg = str(exc)
    assert msg.startswith(name + ":"), msg
    assert "\n" not in msg and "\r" not in msg and len(msg) < 300, repr(msg)


def check(buf):
    """Every entry point on buf, against the reference."""
    RUN["inputs"] += 1
    err, rows, cols = c_shape(buf)
    rerr, rrows, rcols = ref.shape(buf)
    assert (err, rows, cols) == (rerr, rrows, rcols)
    if err[0] == ref.OK and rows * cols <= 1 << 16:
        for width in {cols, cols + 1, max(1, cols - 1)}:
            got, values = c_floats(buf, rows, width)
            want, wvalues = ref.parse_floats(buf, rows, width)
            assert got == want
            assert (values is None) == (wvalues is None)
            if values is not None:
                assert bits(values) == bits(wvalues)
            assert c_floats(buf, rows, width, store=False)[0] == want  # check-only pass
        got, labels = c_labels(buf, rows)
        want, wlabels = ref.parse_labels(buf, rows)
        assert (got, labels) == (want, wlabels)
        assert c_labels(buf, rows, store=False)[0] == want
        # rows beyond the file: an error, never a read or write past the end
        assert c_floats(buf, rows + 1, cols)[0] == ref.parse_floats(buf, rows + 1, cols)[0]
        assert c_labels(buf, rows + 1)[0] == ref.parse_labels(buf, rows + 1)[0]
    for parse in (parse_vectors, parse_labels):
        try:
            parse(buf, "fuzz.csv")
        except PynnError as e:
            one_line(e)


# ---- strategies ----------------------------------------------------------------

TOKENS = [b"0", b"1", b"255", b"-3", b"+7", b"0.5", b".5", b"5.", b"1e5", b"1E-5", b"-0",
          b"3.4028235e38", b"3.4028236e38", b"1e39", b"-1e39", b"1e-46", b"1e-45", b"7e-46",
          b"1.401298464324817e-45", b"16777217", b"2147483647", b"2147483648",
          b"99999999999", b"0" * 64, b"1" * 65, b"1e999999999", b"1e-999999999",
          b"", b" ", b"\t", b"nan", b"inf", b"-", b"+", b".", b"e", b"1e", b"1e+", b"--1",
          b"1.2.3", b"0x10", b"1_000", b"\xef\xbb\xbf", b"\x00", b"\xff", b"\r", b"pixel1",
          b"label", b"\xc2\xbd", b"1 2", b'"1"']
SEPARATORS = [b",", b",", b",", b", ", b" ,", b",\t"]
ENDINGS = [b"\n", b"\n", b"\n", b"\r\n", b"\r", b"", b"\n\n", b" \n", b"\n \n"]


@st.composite
def numbers(draw):
    """A decimal token, often one that rounds close to a float32 midpoint."""
    kind = draw(st.integers(0, 3))
    if kind == 0:  # exactly a midpoint between two float32 values, maybe nudged
        b = draw(st.integers(0, 0x7F7FFFFE))
        lo, hi = (struct.unpack("<f", struct.pack("<I", x))[0] for x in (b, b + 1))
        from decimal import Decimal
        mid = (Decimal(lo) + Decimal(hi)) / 2
        text = format(mid, "e")
        mant, exp = text.split("e")
        mant = mant[:draw(st.integers(3, 40))]
        tail = draw(st.sampled_from(["", "0", "1", "9", "00001", "99999"]))
        if "." not in mant:
            mant += "."
        token = f"{mant}{tail}e{int(exp)}"
    elif kind == 1:  # free-form
        sign = draw(st.sampled_from(["", "-", "+"]))
        whole = draw(st.text("0123456789", max_size=25))
        frac = draw(st.one_of(st.none(), st.text("0123456789", max_size=30)))
        exp = draw(st.one_of(st.none(), st.integers(-60, 60), st.integers(-10**9, 10**9)))
        token = sign + whole + ("" if frac is None else "." + frac) + \
            ("" if exp is None else f"e{exp}")
    elif kind == 2:
        token = repr(draw(st.floats(allow_nan=False, allow_infinity=False, width=64)))
    else:
        token = str(draw(st.integers(-10**30, 10**30)))
    return token.encode("ascii")[:70]


@st.composite
def csv_like(draw):
    """Lines of tokens from TOKENS and numbers(), joined by assorted separators."""
    out = [draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf"]))]
    width = draw(st.integers(1, 6))
    for _ in range(draw(st.integers(0, 8))):
        n = draw(st.sampled_from([width, width, width, width - 1, width + 1, 1]))
        toks = [draw(st.one_of(st.sampled_from(TOKENS), numbers())) if draw(st.booleans())
                else str(draw(st.integers(0, 255))).encode() for _ in range(max(1, n))]
        line = toks[0]
        for t in toks[1:]:
            line += draw(st.sampled_from(SEPARATORS)) + t
        out.append(line + draw(st.sampled_from(ENDINGS)))
    return b"".join(out)


@st.composite
def mutated(draw):
    """A valid file (vectors or labels) with a few bytes inserted, deleted or changed."""
    rows, width = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    vals = draw(st.lists(st.integers(0, 255), min_size=rows * width, max_size=rows * width))
    data = bytearray(b"".join(b",".join(str(v).encode() for v in vals[r * width:(r + 1) * width])
                              + b"\n" for r in range(rows)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from(b"\x00\n\r ,.-+e9\xff\t"))
        if op == 0:
            data[at:at] = bytes([byte])
        elif op == 1 and at < len(data):
            del data[at]
        elif at < len(data):
            data[at] = byte
    return bytes(data)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(buf):
    check(buf)


@FUZZ
@given(csv_like())
def test_fuzz_csv_like(buf):
    check(buf)


@FUZZ
@given(mutated())
def test_fuzz_mutated_valid_file(buf):
    check(buf)


@FUZZ
@given(st.lists(numbers(), min_size=1, max_size=8))
def test_fuzz_numbers_round_exactly(tokens):
    """Each token alone on a line: valid ones give the exactly rounded float32."""
    check(b"".join(t + b"\n" for t in tokens))
    check(b",".join(tokens))
