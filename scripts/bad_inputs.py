#!/usr/bin/env python3
"""Every kind of bad input the course CSVs can have, run through scripts/run.py.

    python scripts/bad_inputs.py [CASE ...]    # one line per case: name, exit code, stderr

Each case starts from a small valid data folder (synthetic, 784 values a line)
and damages it. pynn must answer with exit code 2 and one line
``error: <file>[:<line>]: <reason>`` on stderr and no traceback; this script
checks those. Bad test labels (``NOTED``) are only noted: they feed nothing
but the printed test accuracy; here the run must exit 0 with the note and
write its predictions. tests/test_faults.py runs the same cases and checks
more: that a bad case writes no prediction file, that a noted case's
predictions equal those of the plain files, and that the ``BENIGN``
variations are accepted silently.
"""
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "scripts" / "run.py"
sys.path.insert(0, str(ROOT))

from pynn.io import CSV_NAMES

WIDTH, N_TRAIN, N_TEST = 784, 40, 20
TV, TL, SV, SL = "train_vectors", "train_labels", "test_vectors", "test_labels"
SMALL_RUN = ["--epochs", "1", "--hidden", "8", "--threads", "1"]


def synthetic(folder, seed=0):
    """A valid data folder: N_TRAIN + N_TEST rows of WIDTH pixels, labels 0-9."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        lines = [",".join(str(rng.randrange(256)) for _ in range(WIDTH)) for _ in range(n)]
        (folder / CSV_NAMES[f"{split}_vectors"]).write_text("".join(f"{l}\n" for l in lines))
        (folder / CSV_NAMES[f"{split}_labels"]).write_text("".join(f"{i % 10}\n" for i in range(n)))
    return folder


# ---- helpers that damage one file ----------------------------------------------

def path_of(d, key):
    return Path(d) / CSV_NAMES[key]


def set_line(key, line, new):
    """Replace line ``line`` (1-based) of a file by new(old line)."""
    def damage(d):
        p = path_of(d, key)
        lines = p.read_bytes().split(b"\n")
        lines[line - 1] = new(lines[line - 1])
        p.write_bytes(b"\n".join(lines))
    return damage


def set_value(key, line, index, token):
    """Value number ``index`` (1-based) of line ``line`` becomes ``token``."""
    def new(old):
        values = old.split(b",")
        values[index - 1] = token
        return b",".join(values)
    return set_line(key, line, new)


def replace_file(key, data):
    def damage(d):
        path_of(d, key).write_bytes(data() if callable(data) else data)
    return damage


def remove(key):
    return lambda d: path_of(d, key).unlink()


def map_lines(key, new):
    def damage(d):
        p = path_of(d, key)
        lines = p.read_bytes().split(b"\n")[:-1]
        p.write_bytes(b"".join(new(l) + b"\n" for l in lines))
    return damage


def garbage(seed, size=5000):
    def data():
        rng = random.Random(seed)
        return bytes(rng.randrange(256) for _ in range(size))
    return data


def as_folder(key):
    def damage(d):
        path_of(d, key).unlink()
        path_of(d, key).mkdir()
    return damage


def no_data_dir(d):
    return ["--data-dir", str(Path(d) / "no_such_folder")]


def huge_value_line(d):
    p = path_of(d, TV)
    p.write_bytes(b"7" * (10 << 20) + b"\n" + p.read_bytes())


def comma_bomb(d):
    # a first line of 8 M commas, then 100 000 short lines: sizing an array by the
    # first pass would ask for 100 000 x 8 M floats (3 TB) before reading a value
    p = path_of(d, TV)
    p.write_bytes(b"," * (8 << 20) + b"\n" + b"1\n" * 100000 + p.read_bytes())


def header(key, text):
    def damage(d):
        p = path_of(d, key)
        p.write_bytes(text + b"\n" + p.read_bytes())
    return damage


def drop_last_line(key):
    def damage(d):
        p = path_of(d, key)
        p.write_bytes(b"".join(p.read_bytes().splitlines(keepends=True)[:-1]))
    return damage


def append(key, data):
    def damage(d):
        with open(path_of(d, key), "ab") as f:
            f.write(data)
    return damage


def utf16(key):
    def damage(d):
        p = path_of(d, key)
        p.write_bytes(p.read_text().encode("utf-16"))
    return damage


def lone_cr(key):
    def damage(d):
        p = path_of(d, key)
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r"))
    return damage


# name: (damage(data_dir) -> extra argv or None, file key or None, line or None, message part)
# ``file`` None means the message names something else (given in ``line`` as text).
CASES = {
    "missing-data-folder": (no_data_dir, None, None, "no_such_folder"),
    "missing-train-vectors": (remove(TV), TV, None, "no such file"),
    "missing-train-labels": (remove(TL), TL, None, "no such file"),
    "missing-test-vectors": (remove(SV), SV, None, "no such file"),
    "train-vectors-is-a-folder": (as_folder(TV), TV, None, "folder"),
    "empty-train-vectors": (replace_file(TV, b""), TV, None, "file is empty"),
    "whitespace-only-train-labels": (replace_file(TL, b"\n \r\n\t\n"), TL, None, "file is empty"),
    "too-few-values": (set_line(TV, 17, lambda b: b.rsplit(b",", 1)[0]), TV, 17,
                       "expected 784 values, found 783"),
    "too-many-values": (set_line(TV, 23, lambda b: b + b",0"), TV, 23,
                        "expected 784 values, found 785"),
    "not-a-number": (set_value(TV, 5, 300, b"abc"), TV, 5, "value 300 is not a number: 'abc'"),
    "nan": (set_value(TV, 6, 1, b"nan"), TV, 6, "value 1 is not a number: 'nan'"),
    "inf": (set_value(TV, 7, 2, b"inf"), TV, 7, "value 2 is not a number: 'inf'"),
    "minus-infinity": (set_value(TV, 7, 2, b"-Infinity"), TV, 7, "not a number: '-Infinity'"),
    "hex-number": (set_value(TV, 8, 3, b"0x1F"), TV, 8, "value 3 is not a number: '0x1F'"),
    "decimal-comma": (set_value(TV, 8, 3, b'"1,5"'), TV, 8, "value 3 is not a number"),
    "empty-value": (set_value(TV, 9, 4, b""), TV, 9, "value 4 is empty"),
    "overflow": (set_value(TV, 10, 5, b"1e39"), TV, 10, "value 5 is out of range: '1e39'"),
    "overflow-long-digits": (set_value(TV, 10, 5, b"9" * 50), TV, 10, "value 5 is out of range"),
    "blank-line": (set_line(TV, 11, lambda b: b""), TV, 11, "blank line"),
    "blank-line-of-spaces": (set_line(TL, 11, lambda b: b"   "), TL, 11, "blank line"),
    "fewer-labels-than-vectors": (drop_last_line(TL), TL, None,
                                  f"{N_TRAIN - 1} labels, but the vectors have {N_TRAIN} lines"),
    "more-labels-than-vectors": (append(TL, b"3\n"), TL, None,
                                 f"{N_TRAIN + 1} labels, but the vectors have {N_TRAIN} lines"),
    "test-vectors-narrower": (map_lines(SV, lambda b: b.rsplit(b",", 1)[0]), SV, 1,
                              "expected 784 values, found 783"),
    "test-vectors-wider": (map_lines(SV, lambda b: b + b",1"), SV, 1,
                           "expected 784 values, found 785"),
    "label-negative": (set_line(TL, 3, lambda b: b"-1"), TL, 3,
                       "label is not a non-negative integer: '-1'"),
    "label-fraction": (set_line(TL, 4, lambda b: b"3.5"), TL, 4,
                       "label is not a non-negative integer: '3.5'"),
    "label-word": (set_line(TL, 5, lambda b: b"Dress"), TL, 5,
                   "label is not a non-negative integer: 'Dress'"),
    "label-beyond-int32": (set_line(TL, 6, lambda b: b"2147483648"), TL, 6,
                           "label 2147483648 is too large"),
    "label-huge-class-number": (set_line(TL, 7, lambda b: b"2147483647"), TL, 7,
                                "label 2147483647 is too large"),
    "two-labels-on-a-line": (set_line(TL, 9, lambda b: b"1,2"), TL, 9,
                             "expected 1 value, found 2"),
    "binary-garbage-vectors": (replace_file(TV, garbage(1)), TV, 1, "binary data, not CSV text"),
    "binary-garbage-labels": (replace_file(TL, garbage(2, 300)), TL, 1, "binary data, not CSV text"),
    "nul-bytes": (replace_file(TV, b"\x00" * 4096), TV, 1, "binary data, not CSV text"),
    "gzip-instead-of-csv": (replace_file(TV, b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8),
                            TV, None, "not CSV text but gzip-compressed"),
    "utf16-text": (utf16(TL), TL, None, "not CSV text but UTF-16 text"),
    "absurdly-long-value": (huge_value_line, TV, 1, "value 1 is longer than 64 characters"),
    "absurdly-long-line-of-commas": (comma_bomb, TV, 1, "value 1 is empty"),
    "header-row-vectors": (header(TV, b",".join(b"pixel%d" % i for i in range(1, 785))), TV, 1,
                           "looks like a header row"),
    "header-row-labels": (header(TL, b"label"), TL, 1, "looks like a header row"),
    "lone-cr-line-endings": (lone_cr(TV), TV, 1, "lone CR"),
}

# The test labels only feed the printed test accuracy: when they are bad the
# run goes on without them, with one line ``note: test labels not used:
# <file>[:<line>]: <reason>``, exit code 0, and prediction files equal to
# those of the plain files. (A wrong count has no line.) Same form as CASES.
NOTED = {
    "test-labels-fewer": (drop_last_line(SL), SL, None,
                          f"{N_TEST - 1} labels, but the vectors have {N_TEST} lines"),
    "test-labels-bad-last-line": (set_line(SL, N_TEST, lambda b: b"x"), SL, N_TEST,
                                  "label is not a non-negative integer: 'x'"),
    "test-labels-binary": (replace_file(SL, garbage(3, 300)), SL, 1, "binary data, not CSV text"),
    "test-label-unseen-class": (set_line(SL, 8, lambda b: b"10"), SL, 8,
                                "label 10 is not one of the 10 classes"),
}
NOTE = "note: test labels not used: "

# Accepted silently: the predictions must equal those of the plain files.
BENIGN = {
    "crlf": lambda b: b.replace(b"\n", b"\r\n"),
    "utf8-bom": lambda b: b"\xef\xbb\xbf" + b,
    "no-final-newline": lambda b: b[:-1],
    "trailing-spaces": lambda b: b.replace(b"\n", b"  \t\n"),
    "all-of-them": lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b" \r\n")[:-2],
}


def prepare_case(name, folder):
    """A damaged data folder for case ``name`` (of CASES or NOTED) in
    ``folder``; returns the run.py argv and the expected prefix of the error
    (or note) about it."""
    damage, key, line, _ = {**CASES, **NOTED}[name]
    data = synthetic(Path(folder) / "data")
    out = Path(folder) / "out"
    out.mkdir(exist_ok=True)
    extra = damage(data) or []
    argv = ["--data-dir", str(data), "--out-dir", str(out), *SMALL_RUN, *extra]
    lead = NOTE if name in NOTED else "error: "
    if key is None:
        prefix = lead
    else:
        prefix = f"{lead}{data / CSV_NAMES[key]}" + (f":{line}: " if line else ": ")
    return argv, prefix


def run_case(name, folder):
    """(exit code, stdout, stderr, expected stderr prefix) of scripts/run.py on case ``name``."""
    argv, prefix = prepare_case(name, folder)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, str(RUN_PY), *argv], capture_output=True,
                          text=True, timeout=120, env=env, cwd=folder, check=False)
    return proc.returncode, proc.stdout, proc.stderr, prefix


def main(names):
    unknown = [n for n in names if n not in CASES and n not in NOTED]
    if unknown:
        print(f"unknown case(s): {' '.join(unknown)}\n{__doc__.split(chr(10) * 2)[1]}\n"
              f"cases: {' '.join([*CASES, *NOTED])}", file=sys.stderr)
        return 2
    bad = 0
    for name in names or [*CASES, *NOTED]:
        with tempfile.TemporaryDirectory() as tmp:
            code, out, err, prefix = run_case(name, tmp)
            if name in NOTED:  # exit 0, the note on stdout, predictions written
                said = [line for line in out.splitlines() if line.startswith(NOTE)]
                ok = (code == 0 and err == "" and len(said) == 1 and said[0].startswith(prefix)
                      and NOTED[name][3] in said[0]
                      and (Path(tmp) / "out" / "test_predictions.csv").exists())
                shown = said[0] if said else err
            else:
                ok = (code == 2 and err.startswith(prefix) and err.count("\n") == 1
                      and CASES[name][3] in err and "Traceback" not in err)
                shown = err
            bad += not ok
            shown = shown.replace(tmp, "$TMP").rstrip("\n")
            print(f"{'ok ' if ok else 'BAD'} {name:30s} exit {code}  {shown}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
