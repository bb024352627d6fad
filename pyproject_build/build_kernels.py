"""cffi builder (API mode, out-of-line) for the extension ``pynn._kernels``.

The C API is declared once, in ``csrc/pynn.h``; this file hands that header to
cffi (minus the preprocessor lines, which cffi's parser does not take) and
compiles every ``csrc/*.c`` into the extension.

The build finds out what the compiler can do instead of assuming gcc: it
compiles and links a tiny program with ``-fopenmp`` (Apple's clang, for one,
has no OpenMP) and builds for one thread when that fails, and it tries
``-march=native``, then ``-mcpu=native`` (arm64), then no flag. Each
fallback is said in one line on stderr (and a run's header says "built
without OpenMP").

Environment variables (an explicit setting is used as it is, never probed):
  PYNN_MARCH=T      the CPU to build for: ``-march=T`` (default ``native``, this
                    machine); ``x86-64-v3`` is AVX2 + FMA, the course server's
                    likely kind; empty is the architecture's baseline
  PYNN_PORTABLE=1   the same as PYNN_MARCH='' (a build that runs on any
                    x86-64/arm64: SSE2 on x86-64); it wins over PYNN_MARCH
  PYNN_OPENMP=0/1   build without (or insist on) OpenMP; default: if it works
  PYNN_SANITIZE=1   AddressSanitizer + UBSan build (slow; for tests and fuzzing)
  PYNN_PLAIN_C=1    the plain-C stand-ins of the GNU C vector code (what a
                    compiler without vector extensions builds), so that they
                    can be tested
  CC                the compiler (as setuptools reads it)
  PYNN_BUILD_NOTES  a file the fallback notes are appended to (run.sh shows them)
"""
import os
import pathlib
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "pynn.h"

OPENMP_PROBE = """#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
"""
PLAIN_PROBE = "int main(void) { return 0; }\n"
CLANG_PROBE = "#ifndef __clang__\n#error not clang\n#endif\n" + PLAIN_PROBE


def _flag(name, default):
    return os.environ.get(name, default).strip() not in ("", "0", "no", "false")


def _say(text):
    """One line on stderr; also appended to the file PYNN_BUILD_NOTES names, if
    set: pip keeps a build's output to itself unless it fails (run.sh shows it)."""
    line = f"pynn build: {text}"
    print(line, file=sys.stderr, flush=True)
    notes = os.environ.get("PYNN_BUILD_NOTES")
    if notes:
        with open(notes, "a") as f:
            f.write(line + "\n")


def cdef_text(header=HEADER):
    """The header as cffi's cdef wants it: no #include/#define/#if lines."""
    lines = header.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def compiler():
    """The C compiler command setuptools will use: $CC, else Python's own."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def compiles(flags, source=PLAIN_PROBE, link=True):
    """Whether the compiler compiles and links ``source`` with ``flags`` (only
    compiles it, without ``link``; warnings count as failures: an ignored
    flag must not pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "probe.c"
        src.write_text(source)
        cmd = [*compiler(), *flags, "-Werror", *([] if link else ["-c"]), str(src), "-o",
               str(pathlib.Path(tmp) / "probe")]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0


def target_flags():
    """-march=<PYNN_MARCH> as asked; by default the first of -march=native,
    -mcpu=native (arm64 compilers) and nothing that the compiler takes."""
    if _flag("PYNN_PORTABLE", "0"):
        return []
    if "PYNN_MARCH" in os.environ:
        march = os.environ["PYNN_MARCH"].strip()
        return [f"-march={march}"] if march else []
    for flag in ("-march=native", "-mcpu=native"):
        if compiles([flag]):
            return [flag]
    _say("the compiler takes neither -march=native nor -mcpu=native: "
         "building for the architecture's baseline")
    return []


def openmp():
    """Whether to build with OpenMP: as PYNN_OPENMP says, else if it works."""
    if "PYNN_OPENMP" in os.environ:
        return _flag("PYNN_OPENMP", "1")
    if compiles(["-fopenmp"], OPENMP_PROBE):
        return True
    _say("the compiler has no OpenMP (omp.h or its library missing): building for one thread "
         "(on macOS: brew install libomp, or use gcc; see the README)")
    return False


def contract_flag():
    """-ffp-contract=fast: a * b + c may become one FMA wherever the target has
    it, for every compiler alike (gcc's default in GNU C); the determinism
    across builds rests on the same expressions contracting. clang gets
    "on", and "fast" back from a pragma in csrc/internal.h: its "fast" would
    ignore the pragma with which product() there keeps a product apart."""
    return "-ffp-contract=on" if compiles([], CLANG_PROBE, link=False) else "-ffp-contract=fast"


def compile_flags():
    """(compile args, link args) for the current environment."""
    cflags = ["-O3", "-Wall", "-Wextra", "-std=gnu11", "-fno-math-errno", contract_flag(),
              *target_flags()]
    ldflags = []
    if openmp():
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    else:  # the "#pragma omp" lines are then plain comments, on purpose,
        # but for "omp simd", a vectorization hint that needs no OpenMP runtime
        cflags.append("-Wno-unknown-pragmas")
        if compiles(["-fopenmp-simd"], link=False):
            cflags.append("-fopenmp-simd")
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
