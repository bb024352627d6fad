#!/usr/bin/env bash
# scripts/cross_compile.sh - csrc/*.c compile for another architecture, warnings as errors.
#
# Students build on their laptops, some of them arm64. Nothing here runs there,
# but the C can at least compile: every csrc/*.c with a cross compiler, the
# flags the build would use (pyproject_build/build_kernels.py) plus -Werror,
# with and without OpenMP, and with the plain-C stand-ins of the vector code.
#
#   scripts/cross_compile.sh                       # aarch64-linux-gnu-gcc, -march=armv8-a
#   CC="clang --target=aarch64-linux-gnu" CROSS_OPENMP=0 scripts/cross_compile.sh
#                                                  # clang as Apple's: arm64, no OpenMP
#   CC=clang CROSS_MARCH=native scripts/cross_compile.sh   # any compiler, as a warnings check
#
# CROSS_OPENMP=0: only the variant without OpenMP (a compiler without omp.h).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
export CC=${CC:-aarch64-linux-gnu-gcc}
MARCH=${CROSS_MARCH:-armv8-a}  # the arm64 baseline: NEON, no SVE
command -v "${CC%% *}" >/dev/null || { echo "error: no $CC (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 2; }
variants=("PYNN_OPENMP=1" "PYNN_OPENMP=0" "PYNN_OPENMP=1 PYNN_PLAIN_C=1")
[ "${CROSS_OPENMP:-1}" = 1 ] || variants=("PYNN_OPENMP=0" "PYNN_OPENMP=0 PYNN_PLAIN_C=1")
for variant in "${variants[@]}"; do
    flags=$(cd "$ROOT" && env $variant PYNN_MARCH="$MARCH" "$PY" -c \
        "import sys; sys.path.insert(0, 'pyproject_build'); import build_kernels; print(' '.join(build_kernels.compile_flags()[0]))")
    echo "== $CC $flags -Werror ($variant) =="
    for f in "$ROOT"/csrc/*.c; do
        # shellcheck disable=SC2086  # the flags are words
        $CC $flags -Werror -I"$ROOT/csrc" -c "$f" -o /dev/null
    done
done
echo "every csrc/*.c compiles for $CC -march=$MARCH ($(IFS=';'; echo "${variants[*]}")), warnings clean"
