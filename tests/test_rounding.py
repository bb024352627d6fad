"""csrc/internal.h's muladd and product, compiled as the build compiles the
kernels, with each C compiler at hand (gcc, clang): muladd(a, b, c) rounds
once, product(a, b) + c twice, and a product in one statement is still fused
with a sum in the next (-ffp-contract=fast, which the kernels were written
for). The kernels name their fused products with muladd and product so that
every compiler gives gcc's bits (docs/design.md, "Determinism"); clang fused
a product(...) + c until its build got -ffp-contract=on, a pragma giving
"fast" back, and one turning it off in product (pyproject_build/build_kernels.py).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# a = b = 1 + 2^-23: a*b = 1 + 2^-22 + 2^-46 exactly, 1 + 2^-22 rounded; with
# c = -(1 + 2^-22) the fused a*b + c is 2^-46, the twice-rounded one 0. The
# values come from the command line, so that nothing is folded at compile time.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const float a = strtof(argv[1], NULL), c = strtof(argv[2], NULL);
#if defined(__FMA__) || defined(__aarch64__)
    const int have_fma = 1;
#else
    const int have_fma = 0;
#endif
    volatile float copy = a; /* b == a, unknown to the compiler: no common subexpression */
    const float b = copy;     /* with product(a, a) below, whose rounding would then win */
    const float p = b * b;    /* a product in its own statement ... */
    const float split = p + c; /* ... and its sum in the next: fused under "fast" */
    printf("%a %a %a %d\n", (double)muladd(a, a, c), (double)(product(a, a) + c),
           (double)split, have_fma);
    return 0;
}
"""


def build_flags(cc, monkeypatch):
    """(compile flags, link flags) of pyproject_build/build_kernels.py for compiler cc"""
    monkeypatch.setenv("CC", cc)
    monkeypatch.syspath_prepend(str(REPO / "pyproject_build"))
    import build_kernels
    return build_kernels.compile_flags()


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_muladd_rounds_once_and_product_apart(cc, tmp_path, monkeypatch):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    if os.environ.get("PYNN_SANITIZED"):
        pytest.skip("LD_PRELOAD of the sanitizer build would reach the compiler")
    cflags, ldflags = build_flags(cc, monkeypatch)
    src, exe = tmp_path / "rounding.c", tmp_path / "rounding"
    src.write_text(PROGRAM)
    subprocess.run([cc, *cflags, f"-I{REPO / 'csrc'}", str(src), "-o", str(exe), *ldflags],
                   check=True, timeout=120)
    out = subprocess.run([str(exe), "0x1.000002p+0", "-0x1.000004p+0"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    fused, apart, split = (float.fromhex(v) for v in out[:3])
    once = 2.0 ** -46 if out[3] == "1" else 0.0  # one rounding needs an FMA instruction
    assert apart == 0.0, f"{cc}: product(a, b) + c was fused into one rounding"
    assert fused == once, f"{cc}: muladd(a, b, c) = {fused!r}"
    assert split == once, f"{cc}: a product and the sum in the next statement were not fused"
