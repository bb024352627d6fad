"""Is the sanitizer build really the one under test? (scripts/sanitize.sh sets
PYNN_SANITIZED to its package folder; without it these tests skip.)

A sanitizer run that silently loaded the normal build would pass everything
and prove nothing: this checks the loaded extension's path, that it carries
ASan and UBSan instrumentation, and that ASan catches a planted overflow.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

SANITIZED = os.environ.get("PYNN_SANITIZED")
sanitized_only = pytest.mark.skipif(not SANITIZED, reason="not a scripts/sanitize.sh run")


@sanitized_only
def test_the_sanitizer_build_is_loaded():
    import pynn._kernels
    so = Path(pynn._kernels.__file__)
    assert so.parent == Path(SANITIZED), so
    data = so.read_bytes()
    assert b"__asan_init" in data and b"__ubsan_handle" in data


@sanitized_only
def test_asan_catches_an_overflow_in_the_kernels():
    """pynn_csv_shape told the buffer is 64 bytes longer than it is (a buffer
    big enough to come from malloc, which ASan watches, not from pymalloc)."""
    code = ("from pynn._kernels import ffi, lib\n"
            "buf = ffi.new('char[]', b'1,2\\n' * 1024)\n"
            "rows, cols, err = ffi.new('int64_t *'), ffi.new('int64_t *'), "
            "ffi.new('pynn_csv_error *')\n"
            "lib.pynn_csv_shape(buf, len(buf) + 64, rows, cols, err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr, proc.stderr[-2000:]
    assert "pynn_csv_shape" in proc.stderr


@sanitized_only
def test_leak_sanitizer_reports_a_planted_leak(tmp_path):
    """LeakSanitizer is live in this setup: a block malloc'ed and dropped is reported."""
    code = "import ctypes\nctypes.CDLL(None).malloc(40000)\n"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1",
               LSAN_OPTIONS=f"exitcode=0:log_path={tmp_path}/report")
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True)
    text = "".join(p.read_text() for p in tmp_path.glob("report*"))
    assert "Direct leak of 40000 byte(s)" in text, text[-2000:]


REPORT = """
=================================================================
==1==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 64 byte(s) in 1 object(s) allocated from:
    #0 0x7f in __interceptor_malloc asan_malloc_linux.cpp:69
    #1 0x7f in _PyObject_Malloc Objects/obmalloc.c:2003

Direct leak of 4096 byte(s) in 1 object(s) allocated from:
    #0 0x7f in __interceptor_posix_memalign asan_malloc_linux.cpp:145
    #1 0x7f in ensure csrc/gemm.c:221
    #2 0x7f in pynn_gemm (/tmp/x/pynn/_kernels.cpython-311-x86_64-linux-gnu.so+0x1234)

SUMMARY: AddressSanitizer: 4160 byte(s) leaked in 2 allocation(s).
"""


def test_leak_verdict_blames_only_our_frames(tmp_path, capsys):
    leakcheck = load_script("leakcheck")
    report = tmp_path / "report.1"
    report.write_text(REPORT)
    assert leakcheck.verdict([report]) == 1
    assert "2 leak record(s) at exit, 1 with pynn's C code" in capsys.readouterr().out
    report.write_text(REPORT.split("Direct leak of 4096")[0])
    assert leakcheck.verdict([report]) == 0
