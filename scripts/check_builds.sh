#!/usr/bin/env bash
# scripts/check_builds.sh - the other builds pass the kernel tests too.
#
# The normal build (-march=native, OpenMP) is what the test suite covers. This
# builds each variant a user can ask for (README: "Build options") into a
# temporary folder (scripts/build_variant.sh), checks that it is the build
# loaded and that it is what was asked for, and runs the kernel, gradient and
# training tests against it:
#   PYNN_PORTABLE=1   no -march=native: baseline SIMD vectors
#   PYNN_PLAIN_C=1    the GEMM's plain-C micro-kernel (no vector extensions)
#   PYNN_OPENMP=0     no OpenMP: one thread
#
#   PYTHON=/tmp/v/bin/python scripts/check_builds.sh     # default .venv/bin/python
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute (a venv's python is a link)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pynn-builds.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

check() {  # check NAME EXPECT SETTING...: build with the settings; EXPECT is Python on `lib`
    local name=$1 expect=$2
    shift 2
    echo "== $name: $* =="
    env "$@" PYTHON="$PY" "$ROOT/scripts/build_variant.sh" "$WORK/$name"
    (cd "$WORK/$name" && PYTHONPATH="$WORK/$name" "$PY" -c "
import pynn
from pynn._kernels import ffi, lib
assert pynn.__file__.startswith('$WORK/$name/'), pynn.__file__
kernel = ffi.string(lib.pynn_gemm_kernel()).decode()
print('loaded', pynn.__file__, '| GEMM', kernel, '| OpenMP', lib.pynn_have_openmp())
assert $expect, 'not the build asked for'
" && PYTHONPATH="$WORK/$name" PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -p no:cacheprovider \
        --rootdir "$ROOT" -c "$ROOT/pyproject.toml" "$ROOT/tests/test_kernels.py" \
        "$ROOT/tests/test_gradcheck.py" "$ROOT/tests/test_training.py" \
        "$ROOT/tests/test_cnn_kernels.py" "$ROOT/tests/test_cnn.py")
}

check portable "'AVX' not in kernel and lib.pynn_have_openmp()" PYNN_PORTABLE=1
check plain-c "kernel.startswith('plain C')" PYNN_PLAIN_C=1
check no-openmp "not lib.pynn_have_openmp()" PYNN_OPENMP=0
echo "all builds pass"
