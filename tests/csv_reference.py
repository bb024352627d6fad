"""A pure-Python statement of what csrc/csv.c must do, for the tests and the fuzzer.

``shape(buf)``, ``parse_floats(buf, rows, cols)`` and ``parse_labels(buf, rows)``
return the same (code, line, value, found, token_start) error tuple as the C
functions' ``pynn_csv_error`` (code 0 = OK) plus their results. Numbers are
rounded to float32 exactly (from the decimal's exact value, ties to even), not
through a double: the double rounding of ``float32(float(token))`` is wrong for
tokens just past a float32 midpoint.
"""
import re
import struct
from fractions import Fraction

OK, EMPTY, BAD_TOKEN, COUNT, BLANK_LINE, OVERFLOW, NOT_LABEL, CHANGED, LONG_TOKEN = range(9)
MAX_TOKEN = 64
INT32_MAX = 2**31 - 1
SPACE = b" \t\r"
NUMBER = re.compile(rb"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?\Z")
F32_OVERFLOW = Fraction(2**128 - 2**103)  # the midpoint of FLT_MAX and 2**128: rounds up


def _f32_of_bits(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _bits_of(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def round_f32(q):
    """The float32 nearest to the Fraction q >= 0 (ties to even), or inf."""
    if q >= F32_OVERFLOW:
        return float("inf")
    if q == 0:
        return 0.0
    try:
        guess = _bits_of(float(q))  # within one float32 step of the answer
    except OverflowError:
        guess = 0x7F7FFFFF
    candidates = [b for b in (guess - 1, guess, guess + 1) if 0 <= b <= 0x7F7FFFFF]
    return _f32_of_bits(min(candidates, key=lambda b: (abs(Fraction(_f32_of_bits(b)) - q), b & 1)))


def number(token):
    """(code, value) for one trimmed token (bytes): the float32 it spells."""
    if len(token) > MAX_TOKEN:
        return LONG_TOKEN, None
    m = NUMBER.match(token)
    if not m or not (m.group(2) or m.group(3)):
        return BAD_TOKEN, None
    sign, whole, frac, exp = m.group(1), m.group(2), m.group(3) or b"", m.group(4)
    digits = (whole + frac).lstrip(b"0")
    e = (int(exp) if exp else 0) - len(frac)
    if not digits:
        value = 0.0
    elif len(digits) + e > 40:  # >= 10**39: out of float32 range
        value = float("inf")
    elif len(digits) + e < -50:  # < 10**-50: rounds to 0
        value = 0.0
    else:
        value = round_f32(Fraction(int(digits)) * Fraction(10) ** e)
    if value == float("inf"):
        return OVERFLOW, None
    return OK, -value if sign == b"-" else value


def lines(buf):
    """[(line number, start, end)] of the trimmed lines, as the C cursor walks them."""
    buf = bytes(buf)
    pos = 3 if buf[:3] == b"\xef\xbb\xbf" else 0
    out, n = [], 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl
        s, e = pos, end
        while e > s and buf[e - 1] in SPACE:
            e -= 1
        while s < e and buf[s] in SPACE:
            s += 1
        n += 1
        out.append((n, s, e))
        pos = len(buf) if nl < 0 else nl + 1
    return out


def shape(buf):
    """(error tuple, rows, cols)."""
    data = [(n, s, e) for n, s, e in lines(buf) if e > s]
    if not data:
        return (EMPTY, 0, 0, 0, 0), 0, 0
    _, s, e = data[0]
    return (OK, 0, 0, 0, 0), data[-1][0], 1 + bytes(buf[s:e]).count(b",")


def _tokens(buf, s, e):
    """[(trimmed start, trimmed token)] of the line [s, e)."""
    out, pos = [], s
    while True:
        comma = buf.find(b",", pos, e)
        end = e if comma < 0 else comma
        a, b = pos, end
        while a < b and buf[a] in SPACE:
            a += 1
        while b > a and buf[b - 1] in SPACE:
            b -= 1
        out.append((a, buf[a:b]))
        if comma < 0:
            return out
        pos = comma + 1


def parse_floats(buf, rows, cols):
    """(error tuple, rows x cols values as a flat list, or None on error)."""
    buf = bytes(buf)
    values = []
    walked = lines(buf)[:rows]
    for n, s, e in walked:
        if s == e:
            return (BLANK_LINE, n, 0, 0, s), None
        toks = _tokens(buf, s, e)
        for k, (start, tok) in enumerate(toks, 1):
            code, v = number(tok)
            if code != OK:
                return (code, n, k, 0, start), None
            values.append(v)
        if len(toks) != cols:
            return (COUNT, n, 0, len(toks), s), None
    if len(walked) != rows:
        return (CHANGED, walked[-1][0] if walked else 0, 0, len(walked), 0), None
    return (OK, 0, 0, 0, 0), values


def parse_labels(buf, rows):
    """(error tuple, list of rows ints, or None on error)."""
    buf = bytes(buf)
    values = []
    walked = lines(buf)[:rows]
    for n, s, e in walked:
        if s == e:
            return (BLANK_LINE, n, 0, 0, s), None
        if b"," in buf[s:e]:
            return (COUNT, n, 0, 1 + buf[s:e].count(b","), s), None
        tok = buf[s:e]
        if len(tok) > MAX_TOKEN:
            return (LONG_TOKEN, n, 1, 0, s), None
        lead = re.match(rb"[0-9]*", tok).group()
        if lead and int(lead) > INT32_MAX:
            return (OVERFLOW, n, 1, 0, s), None
        if not lead or lead != tok:
            return (NOT_LABEL, n, 1, 0, s), None
        values.append(int(tok))
    if len(walked) != rows:
        return (CHANGED, walked[-1][0] if walked else 0, 0, len(walked), 0), None
    return (OK, 0, 0, 0, 0), values
