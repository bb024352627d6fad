"""Tests for the C CSV parser (csrc/csv.c) through pynn.data.load_vectors /
load_labels: exact values, benign variations, and one-line errors."""

import random
import re
import struct
from pathlib import Path

import pytest

from pynn import PynnError, load_labels, load_vectors

from conftest import head

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def f32(x):
    """x rounded to float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def write(tmp_path, data, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def error_of(loader, path, **kwargs):
    """The PynnError message of loader(path): checked to be one line that starts
    with the path."""
    with pytest.raises(PynnError) as info:
        loader(path, **kwargs)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg and "\r" not in msg and len(msg.splitlines()) == 1, repr(msg)
    return msg


def error_at(loader, path, line, **kwargs):
    """As error_of, and the message names ``path:line:``; returns the rest."""
    msg = error_of(loader, path, **kwargs)
    prefix = f"{path}:{line}: "
    assert msg.startswith(prefix), msg
    return msg[len(prefix):]


def rows(tensor):
    n, d = tensor.shape
    flat = tensor.tolist()
    return [flat[i * d:(i + 1) * d] for i in range(n)]


# ---- valid files --------------------------------------------------------------

def test_integers_parse_exactly(tmp_path):
    x = load_vectors(write(tmp_path, "0,1,255\n17,0,3\n"))
    assert x.shape == (2, 3) and x.dtype == "float32"
    assert rows(x) == [[0.0, 1.0, 255.0], [17.0, 0.0, 3.0]]


@pytest.mark.parametrize("token", [
    "0.5", "-3", "1e2", "2.5E-1", "+7", "-0.125", ".5", "5.", "1e+2", "1E-2", "0.1",
    "123.456", "-1.5e3", "000012", "3.14159265358979323846", "1e-50",
    "123456789012", "16777217", "3.4028234e38", "-2.5e-3",
])
def test_decimal_forms(tmp_path, token):
    x = load_vectors(write(tmp_path, f"{token},1\n2,{token}\n"))
    assert rows(x) == [[f32(float(token)), 1.0], [2.0, f32(float(token))]]


def test_many_random_decimals_match_python(tmp_path):
    rng = random.Random(5)
    tokens = []
    for _ in range(3000):
        kind = rng.randrange(4)
        if kind == 0:
            tok = str(rng.randrange(-10**12, 10**12))
        elif kind == 1:
            tok = f"{rng.uniform(-1e6, 1e6):.{rng.randrange(0, 10)}f}"
        elif kind == 2:
            tok = f"{rng.uniform(-10, 10):.{rng.randrange(1, 12)}e}"
        else:
            tok = repr(rng.random() * 10.0 ** rng.randrange(-30, 30))
        tokens.append(tok)
    x = load_vectors(write(tmp_path, "".join(f"{t}\n" for t in tokens)))
    assert x.tolist() == [f32(float(t)) for t in tokens]


def test_spaces_and_tabs_around_values(tmp_path):
    plain = load_vectors(write(tmp_path, "1,2.5,-3\n4,5,6\n", "plain.csv"))
    spaced = load_vectors(write(tmp_path, "  1 ,\t2.5\t, -3  \n\t4,  5 ,6\t\n", "spaced.csv"))
    assert rows(spaced) == rows(plain) == [[1.0, 2.5, -3.0], [4.0, 5.0, 6.0]]


def test_labels_parse_exactly(tmp_path):
    y = load_labels(write(tmp_path, "3\n0\n9\n 7 \n999\n"))
    assert y.dtype == "int32" and y.shape == (5,)
    assert y.tolist() == [3, 0, 9, 7, 999]


def test_label_parser_takes_all_of_int32():
    """The C parser reads any non-negative int32; load_labels then caps labels
    at MAX_CLASSES (a label is a class number: the model has one output each)."""
    from pynn._kernels import ffi, lib
    buf = b"2147483647\n0\n"
    out, err = ffi.new("int32_t[2]"), ffi.new("pynn_csv_error *")
    assert lib.pynn_csv_parse_labels(ffi.from_buffer(buf), len(buf), out, 2, err) == 0
    assert list(out) == [2147483647, 0]


VECTOR_TEXT = "1,2,3\n4.5,-5,6e1\n7,8,9\n"
LABEL_TEXT = "1\n0\n9\n"
VARIATIONS = {
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "bom": lambda t: "\ufeff" + t,
    "no_final_newline": lambda t: t[:-1],
    "trailing_spaces": lambda t: t.replace("\n", "  \t\n"),
    "trailing_blank_lines": lambda t: t + "\n\n  \n",
    "trailing_crlf_blank_lines": lambda t: t.replace("\n", "\r\n") + "\r\n\r\n",
    "all_at_once": lambda t: "\ufeff" + t.replace("\n", " \r\n")[:-2],
}


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_benign_variations_give_identical_vectors(tmp_path, variation):
    expected = rows(load_vectors(write(tmp_path, VECTOR_TEXT, "plain.csv")))
    path = write(tmp_path, VARIATIONS[variation](VECTOR_TEXT), "varied.csv")
    x = load_vectors(path)
    assert x.shape == (3, 3)
    assert rows(x) == expected == [[1.0, 2.0, 3.0], [4.5, -5.0, 60.0], [7.0, 8.0, 9.0]]


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_benign_variations_give_identical_labels(tmp_path, variation):
    path = write(tmp_path, VARIATIONS[variation](LABEL_TEXT))
    assert load_labels(path, count=3, classes=10).tolist() == [1, 0, 9]


def test_single_value_without_newline(tmp_path):
    assert load_vectors(write(tmp_path, "42")).tolist() == [42.0]
    assert load_labels(write(tmp_path, "4", "l.csv")).tolist() == [4]


# ---- errors: files --------------------------------------------------------------

@pytest.mark.parametrize("loader", [load_vectors, load_labels])
def test_missing_file(tmp_path, loader):
    msg = error_of(loader, tmp_path / "nope.csv")
    assert "no such file" in msg


@pytest.mark.parametrize("loader", [load_vectors, load_labels])
def test_folder_instead_of_file(tmp_path, loader):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert "folder" in error_of(loader, folder)


@pytest.mark.parametrize("loader", [load_vectors, load_labels])
@pytest.mark.parametrize("content", [b"", b"\n", b"   \n\t\n\r\n  ", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"])
def test_empty_or_whitespace_only_file(tmp_path, loader, content):
    assert "empty" in error_of(loader, write(tmp_path, content))


# ---- errors: vectors ----------------------------------------------------------

@pytest.mark.parametrize("text, line, expected", [
    ("1,2,3\n4,5\n", 2, "expected 3 values, found 2"),
    ("1,2,3\n4,5,6\n7,8,9,10\n", 3, "expected 3 values, found 4"),
    ("1,2,3\r\n4,5,6,7,8\r\n", 2, "expected 3 values, found 5"),
    ("1,2,3\n4\n", 2, "expected 3 values, found 1"),
])
def test_wrong_number_of_values(tmp_path, text, line, expected):
    assert error_at(load_vectors, write(tmp_path, text), line) == expected


@pytest.mark.parametrize("text, line", [
    ("1,2,3\n\n4,5,6\n", 2),
    ("1,2,3\n4,5,6\n   \n7,8,9\n", 3),
    ("1,2,3\r\n\r\n4,5,6\r\n", 2),
    ("\n1,2,3\n", 1),
])
def test_blank_line_inside_the_file(tmp_path, text, line):
    assert "blank line" in error_at(load_vectors, write(tmp_path, text), line)


@pytest.mark.parametrize("token", ["abc", "nan", "NaN", "inf", "-inf", "1.2.3", "0x10", "1e",
                                   "--1", "+", ".", "1 2", "1e5e5", "½", "1_000"])
def test_not_a_number(tmp_path, token):
    path = write(tmp_path, f"1,2,3\n4,{token},6\n")
    rest = error_at(load_vectors, path, 2)
    assert rest.startswith("value 2 is not a number"), rest
    assert token in rest


@pytest.mark.parametrize("text, line, value", [
    ("1,2,3\n4,,6\n", 2, 2),
    ("1,2,3\n,5,6\n", 2, 1),
    ("1,2,3\n4, \t,6\n", 2, 2),
    ("1,2,3\n4,5,6,\n", 2, 4),          # trailing comma
    ("1,2,3,\n4,5,6,\n", 1, 4),         # trailing comma on every line
    ("1,2,3\n4,5,6,\r\n", 2, 4),
])
def test_empty_value(tmp_path, text, line, value):
    assert error_at(load_vectors, write(tmp_path, text), line) == f"value {value} is empty"


@pytest.mark.parametrize("token", ["1e39", "-1e39", "3.5e38", "1e99999999", "9" * 60])
def test_value_overflow(tmp_path, token):
    rest = error_at(load_vectors, write(tmp_path, f"1,2\n3,{token}\n"), 2)
    assert rest.startswith("value 2 is out of range"), rest


def test_header_row(tmp_path):
    header = ",".join(f"pixel{i}" for i in range(1, 4))
    path = write(tmp_path, f"{header}\n1,2,3\n4,5,6\n")
    assert "header" in error_at(load_vectors, path, 1)
    path = write(tmp_path, "\ufefflabel,a,b\r\n1,2,3\r\n", "bom_header.csv")
    assert "header" in error_at(load_vectors, path, 1)


def test_letters_after_line_1_are_not_called_a_header(tmp_path):
    rest = error_at(load_vectors, write(tmp_path, "1,2,3\npixel1,pixel2,pixel3\n"), 2)
    assert "header" not in rest and "not a number" in rest


def test_absurdly_long_line(tmp_path):
    path = write(tmp_path, b"7" * (1 << 20) + b"\n")
    rest = error_at(load_vectors, path, 1)
    assert rest == "value 1 is longer than 64 characters"
    assert len(str(error_of(load_vectors, path))) < 300
    path = write(tmp_path, b"1,2\n3," + b"5" * (1 << 20) + b"\n", "second.csv")
    assert error_at(load_vectors, path, 2) == "value 2 is longer than 64 characters"


def test_long_but_allowed_token(tmp_path):
    token = "0." + "0" * 60 + "15"  # exactly 64 characters
    assert len(token) == 64
    assert load_vectors(write(tmp_path, f"{token},1\n")).tolist() == [f32(float(token)), 1.0]


@pytest.mark.parametrize("loader", [load_vectors, load_labels])
@pytest.mark.parametrize("seed", range(8))
def test_binary_garbage(tmp_path, loader, seed):
    rng = random.Random(seed)
    data = bytearray(rng.randrange(256) for _ in range(rng.randrange(200, 5000)))
    for _ in range(5):  # make sure NULs are there
        data[rng.randrange(len(data))] = 0
    error_of(loader, write(tmp_path, bytes(data)))


@pytest.mark.parametrize("seed", range(4))
def test_corrupted_valid_file(tmp_path, seed):
    """A few bytes of a good file replaced by NUL, 0xFF and friends: always a
    clean one-line error naming a line of the file."""
    rng = random.Random(100 + seed)
    good = "".join(",".join(str(rng.randrange(256)) for _ in range(6)) + "\n" for _ in range(30))
    assert load_vectors(write(tmp_path, good, "good.csv")).shape == (30, 6)
    data = bytearray(good.encode())
    for _ in range(3):
        data[rng.randrange(len(data))] = rng.choice(b"\x00\xff\x0bxQ")
    msg = error_of(load_vectors, write(tmp_path, bytes(data)))
    assert re.match(re.escape(str(tmp_path / "data.csv")) + r":\d+: ", msg), msg


def test_width_of_test_vectors(tmp_path):
    path = write(tmp_path, "1,2,3\n4,5,6\n")
    assert load_vectors(path, width=3).shape == (2, 3)
    assert error_at(load_vectors, path, 1, width=4) == "expected 4 values, found 3"
    assert error_at(load_vectors, path, 1, width=2) == "expected 2 values, found 3"


# ---- errors: labels ---------------------------------------------------------

@pytest.mark.parametrize("token", ["-1", "3.5", "x", "+3", "1e1", "nan", "0x1", "1 2", "٣"])
def test_label_not_a_non_negative_integer(tmp_path, token):
    rest = error_at(load_labels, write(tmp_path, f"1\n{token}\n2\n"), 2)
    assert "not a non-negative integer" in rest and token in rest


def test_label_header_row_fails_on_line_1(tmp_path):
    rest = error_at(load_labels, write(tmp_path, "label\n1\n2\n"), 1)
    assert rest == ("looks like a header row ('label'); the course format has none: "
                    "remove the first line")


@pytest.mark.parametrize("text, line", [("1\n2,3\n", 2), ("1,2\n3,4\n", 1), ("4\n5\n6 , 7\n", 3)])
def test_two_labels_per_line(tmp_path, text, line):
    rest = error_at(load_labels, write(tmp_path, text), line)
    assert rest.startswith("expected 1 value") and rest.endswith("found 2")


@pytest.mark.parametrize("token", ["1000", "2147483647", "2147483648", "4294967296",
                                   "99999999999999999999"])
def test_label_too_large(tmp_path, token):
    rest = error_at(load_labels, write(tmp_path, f"1\n{token}\n"), 2)
    assert rest == f"label {token} is too large: labels are class numbers 0 to 999"


def test_label_at_the_class_limit(tmp_path):
    assert load_labels(write(tmp_path, "999\n0\n")).tolist() == [999, 0]


def test_label_blank_line_and_long_line(tmp_path):
    assert "blank line" in error_at(load_labels, write(tmp_path, "1\n\n2\n"), 2)
    path = write(tmp_path, b"1\n" + b"3" * (1 << 20) + b"\n", "long.csv")
    assert "longer than 64 characters" in error_at(load_labels, path, 2)


def test_label_count_mismatch(tmp_path):
    vectors = load_vectors(write(tmp_path, "1,2\n3,4\n5,6\n", "v.csv"))
    labels = write(tmp_path, "1\n2\n", "l.csv")
    msg = error_of(load_labels, labels, count=vectors.shape[0])
    assert "2 labels" in msg and "3" in msg
    assert load_labels(labels, count=2).tolist() == [1, 2]


def test_labels_outside_classes(tmp_path):
    path = write(tmp_path, "0\n9\n3\n10\n2\n")
    rest = error_at(load_labels, path, 4, classes=10)
    assert "label 10" in rest and "10 classes" in rest
    assert load_labels(path, classes=11).tolist() == [0, 9, 3, 10, 2]


# ---- the real course data ---------------------------------------------------

def test_real_data_round_trip(tmp_path):
    vectors = DATA_DIR / "fashion_mnist_train_vectors.csv"
    labels = DATA_DIR / "fashion_mnist_train_labels.csv"
    if not vectors.exists() or not labels.exists():
        pytest.skip("data/ CSVs not present")
    vtext, ltext = head(vectors, 50), head(labels, 50)
    vlines, llines = vtext.splitlines(), ltext.splitlines()
    x = load_vectors(write(tmp_path, vtext, "v.csv"), width=784)
    y = load_labels(write(tmp_path, ltext, "l.csv"), count=50, classes=10)
    expected = [[float(int(v)) for v in line.decode("ascii").strip().split(",")] for line in vlines]
    assert x.shape == (50, 784)
    assert rows(x) == expected
    assert y.tolist() == [int(line) for line in llines]


# ---- regressions ---------------------------------------------------------------

def test_cr_only_line_endings_are_named_as_such(tmp_path):
    # the message once quoted the valid '3' as the offender
    rest = error_at(load_vectors, write(tmp_path, b"1,2,3\r4,5,6\r"), 1)
    assert "lone CR" in rest


def test_float32_max_spelled_shortest_is_accepted(tmp_path):
    x = load_vectors(write(tmp_path, "3.4028235e38,-3.4028235e38\n"))
    assert x.tolist() == [f32(3.4028235e38), -f32(3.4028235e38)]


# ---- files that are not CSV text, odd sizes, the parser's own bounds -------------

@pytest.mark.parametrize("loader", [load_vectors, load_labels])
@pytest.mark.parametrize("data, what", [
    ("1,2\n3,4\n".encode("utf-16"), "UTF-16"),
    ("1\n2\n".encode("utf-16-be").join([b"\xfe\xff", b""]), "UTF-16"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(100), "gzip-compressed"),
    (b"PK\x03\x04\x14\x00" + bytes(100), "zip archive"),
])
def test_not_csv_text_at_all(tmp_path, loader, data, what):
    msg = error_of(loader, write(tmp_path, data))
    assert msg.startswith(f"{tmp_path / 'data.csv'}: not CSV text but ") and what in msg, msg


@pytest.mark.parametrize("loader", [load_vectors, load_labels])
def test_binary_data_is_called_binary(tmp_path, loader):
    rest = error_at(loader, write(tmp_path, b"1\n\x00\x01\x02\x03\xfe\n"), 2)
    assert rest.startswith("binary data, not CSV text: b'\\x00\\x01"), rest
    assert len(rest) < 80


def test_carriage_return_inside_garbage_is_not_called_a_line_ending(tmp_path):
    rest = error_at(load_vectors, write(tmp_path, b"1,2\nab\rcd,3\n"), 2)
    assert "lone CR" not in rest and "not a number" in rest


def test_first_line_of_a_million_commas_sizes_nothing(tmp_path):
    """rows x cols from the first pass would be 200 000 x 1 M floats (800 GB):
    the file cannot hold that many values, so it is only checked, not loaded."""
    path = write(tmp_path, b"," * (1 << 20) + b"\n" + b"1\n" * 200000)
    assert error_at(load_vectors, path, 1) == "value 1 is empty"
    path = write(tmp_path, b"1," * (1 << 19) + b"1\n" + b"1\n" * 200000, "second.csv")
    assert error_at(load_vectors, path, 2) == f"expected {(1 << 19) + 1} values, found 1"


def test_width_names_the_first_line_that_differs(tmp_path):
    path = write(tmp_path, "1,2,3\n4,5,6\n7,8\n")
    assert error_at(load_vectors, path, 3) == "expected 3 values, found 2"
    path = write(tmp_path, "1,2\n4,5\n7,8,9\n", "w.csv")
    assert error_at(load_vectors, path, 1, width=3) == "expected 3 values, found 2"
    path = write(tmp_path, "\n1,2,3\n", "blank_first.csv")
    assert error_at(load_vectors, path, 1, width=3) == "blank line"


def test_label_line_with_a_comma_is_named(tmp_path):
    assert error_at(load_labels, write(tmp_path, "1\n2\n3,4\n"), 3) == "expected 1 value, found 2"
    assert error_at(load_labels, write(tmp_path, "\n1,2\n", "b.csv"), 1) == "blank line"


@pytest.mark.parametrize("token, expected", [
    # past a float32 midpoint only in the 26th digit: rounds up
    ("1.0000000596046447753906251", 1.0000001192092896),
    ("1.0000000596046447753906249", 1.0),
    ("1.000000059604644775390625", 1.0),            # the midpoint itself: to even
    ("2.55177227501568000001e15", 2551772409233408.0),
    ("7.0064923216240862e-46", 1.401298464324817e-45),  # just above half the least subnormal
    ("7.006492321624085e-46", 0.0),
    ("3.4028235677973366e38", 3.4028234663852886e38),  # just below the overflow midpoint
])
def test_decimals_round_exactly_to_float32(tmp_path, token, expected):
    """float32(float(token)) rounds twice and is wrong for some of these; the
    parser (strtof) and csv_reference round once."""
    import csv_reference
    assert load_vectors(write(tmp_path, f"{token}\n")).tolist() == [expected]
    assert csv_reference.number(token.encode()) == (0, expected)


def test_float32_overflow_midpoint(tmp_path):
    rest = error_at(load_vectors, write(tmp_path, "3.40282356779733661637539395458142568448e38\n"), 1)
    assert rest.startswith("value 1 is out of range")


def test_check_only_pass_and_bad_calls():
    """The C functions on their own: out == NULL only checks; sizes that make no
    sense are refused, never used."""
    from pynn._kernels import ffi, lib
    buf = b"1,2\n3,x\n"
    err = ffi.new("pynn_csv_error *")
    assert lib.pynn_csv_parse_floats(ffi.from_buffer(buf), len(buf), ffi.NULL, 2, 2, err) == \
        lib.PYNN_CSV_BAD_TOKEN
    assert (err.line, err.value) == (2, 2)
    good = b"1,2\n3,4\n"
    assert lib.pynn_csv_parse_floats(ffi.from_buffer(good), len(good), ffi.NULL, 2, 2, err) == 0
    assert lib.pynn_csv_parse_labels(ffi.from_buffer(b"1\n2\n"), 4, ffi.NULL, 2, err) == 0
    out = ffi.new("float[4]")
    for rows, cols, n in [(-1, 2, len(good)), (2, 0, len(good)), (2, -5, len(good)),
                          (2, 2, -1), (1 << 62, 1 << 62, len(good))]:
        assert lib.pynn_csv_parse_floats(ffi.from_buffer(good), n, out, rows, cols, err) == \
            lib.PYNN_CSV_BAD_CALL
    assert lib.pynn_csv_parse_labels(ffi.from_buffer(good), len(good), ffi.NULL, -1, err) == \
        lib.PYNN_CSV_BAD_CALL
    rows, cols = ffi.new("int64_t *"), ffi.new("int64_t *")
    assert lib.pynn_csv_shape(ffi.NULL, 5, rows, cols, err) == lib.PYNN_CSV_BAD_CALL
    assert lib.pynn_csv_shape(ffi.NULL, 0, rows, cols, err) == lib.PYNN_CSV_EMPTY
    assert list(out) == [0.0] * 4  # never written


def test_check_vectors_finds_what_load_vectors_finds(tmp_path):
    from pynn.data import check_vectors
    good = write(tmp_path, "1,2,3\n4,5,6\n", "good.csv")
    assert check_vectors(good) == (2, 3) and check_vectors(good, width=3) == (2, 3)
    for text, width in [("1,2,3\n4,5\n", None), ("1,2\n3,4\n", 3), ("1,2\nx,3\n", None),
                        ("", None), ("1\n\n2\n", None)]:
        path = write(tmp_path, text)
        assert error_of(check_vectors, path, width=width) == error_of(load_vectors, path,
                                                                      width=width)


def test_a_control_character_in_a_token_is_escaped_in_the_message(tmp_path):
    """Found by the fuzzer: a lone CR inside a too-large label once broke the
    one-line message in two."""
    rest = error_at(load_labels, write(tmp_path, b"2147483648\rnan\n"), 1)
    assert rest == r"label 2147483648\rnan is too large: labels are class numbers 0 to 999"
