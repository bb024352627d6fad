"""csrc/internal.h's muladd and product, compiled as the build compiles the
kernels, with each C compiler at hand (gcc, clang): muladd(a, b, c) rounds
once, and product(a, b) + c twice, even where the compiler may fuse a product
with the sum that follows (-ffp-contract). The kernels name their fused
products with these two so that every compiler gives gcc's bits
(docs/design.md, "Determinism"); clang fused a product(...) + c until its
build got -ffp-contract=on and a pragma (pyproject_build/build_kernels.py).
"""
import os
import shutil
import subprocess
import sys
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
    const int fma = 1;
#else
    const int fma = 0;
#endif
    printf("%a %a %d\n", (double)muladd(a, a, c), (double)(product(a, a) + c), fma);
    return 0;
}
"""


def build_flags(cc):
    """(compile flags, link flags) of pyproject_build/build_kernels.py for compiler cc"""
    sys.path.insert(0, str(REPO / "pyproject_build"))
    try:
        import build_kernels
    finally:
        sys.path.pop(0)
    saved = os.environ.get("CC")
    os.environ["CC"] = cc
    try:
        return build_kernels.compile_flags()
    finally:
        if saved is None:
            del os.environ["CC"]
        else:
            os.environ["CC"] = saved


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_muladd_rounds_once_and_product_apart(cc, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    if os.environ.get("PYNN_SANITIZED"):
        pytest.skip("LD_PRELOAD of the sanitizer build would reach the compiler")
    cflags, ldflags = build_flags(cc)
    src, exe = tmp_path / "rounding.c", tmp_path / "rounding"
    src.write_text(PROGRAM)
    subprocess.run([cc, *cflags, f"-I{REPO / 'csrc'}", str(src), "-o", str(exe), *ldflags],
                   check=True, timeout=120)
    out = subprocess.run([str(exe), "0x1.000002p+0", "-0x1.000004p+0"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    fused, apart, has_fma = float.fromhex(out[0]), float.fromhex(out[1]), out[2] == "1"
    assert apart == 0.0, f"{cc}: product(a, b) + c was fused into one rounding"
    assert fused == (2.0 ** -46 if has_fma else 0.0), f"{cc}: muladd(a, b, c) = {fused!r}"
