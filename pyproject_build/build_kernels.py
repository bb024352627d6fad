"""cffi builder (API mode, out-of-line) for the extension ``pynn._kernels``.

The C API is declared once, in ``csrc/pynn.h``; this file hands that header to
cffi (minus the preprocessor lines, which cffi's parser does not take) and
compiles every ``csrc/*.c`` into the extension.

Environment variables:
  PYNN_MARCH=T      the CPU to build for: ``-march=T`` (default ``native``, this
                    machine); ``x86-64-v3`` is AVX2 + FMA, the course server's
                    likely kind; empty is the architecture's baseline
  PYNN_PORTABLE=1   the same as PYNN_MARCH='' (a build that runs on any
                    x86-64/arm64: SSE2 on x86-64); it wins over PYNN_MARCH
  PYNN_SANITIZE=1   AddressSanitizer + UBSan build (slow; for tests and fuzzing)
  PYNN_OPENMP=0     build without OpenMP (everything on one thread)
  PYNN_PLAIN_C=1    the GEMM's plain-C micro-kernel (what a compiler without
                    GNU vector extensions builds), so that it can be tested
"""
import os
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "pynn.h"


def _flag(name, default):
    return os.environ.get(name, default).strip() not in ("", "0", "no", "false")


def cdef_text(header=HEADER):
    """The header as cffi's cdef wants it: no #include/#define/#if lines."""
    lines = header.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def compile_flags():
    """(compile args, link args) for the current environment."""
    cflags = ["-O3", "-Wall", "-Wextra", "-std=gnu11", "-fno-math-errno"]
    ldflags = []
    march = "" if _flag("PYNN_PORTABLE", "0") else os.environ.get("PYNN_MARCH", "native").strip()
    if march:
        cflags.append(f"-march={march}")
    if _flag("PYNN_OPENMP", "1"):
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    else:  # the "#pragma omp" lines are then plain comments, on purpose,
        # but for "omp simd", a vectorization hint that needs no OpenMP runtime
        cflags += ["-fopenmp-simd", "-Wno-unknown-pragmas"]
    if _flag("PYNN_PLAIN_C", "0"):
        cflags.append("-DPYNN_PLAIN_C")
    if _flag("PYNN_SANITIZE", "0"):
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g"]
        cflags += san
        ldflags += san
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
_cflags, _ldflags = compile_flags()
ffibuilder.set_source(
    "pynn._kernels",
    '#include "pynn.h"',
    # setuptools wants source paths relative to setup.py
    sources=sorted(os.path.relpath(p, ROOT) for p in CSRC.glob("*.c")),
    include_dirs=[os.path.relpath(CSRC, ROOT)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
