#!/usr/bin/env bash
# scripts/check_builds.sh - the other builds pass the kernel tests, and give
# the same predictions as the normal build (or, without FMA, close ones).
#
# The normal build (-march=native, OpenMP, the default compiler) is what the
# test suite covers. This builds each variant a user can ask for (docs/development.md:
# "Build options") into a temporary folder (scripts/build_variant.sh), checks
# that it is the build loaded and what was asked for, runs the kernel,
# gradient, training and CNN tests against it, and compares its predictions
# after a short CNN run and a short MLP run (1 epoch on 4000 rows) with the
# normal build's:
#   avx2        PYNN_MARCH=x86-64-v3: AVX2 + FMA, what the course server may
#               have; byte-identical (where this CPU has AVX-512, the native
#               build is first shown to use zmm registers and this one not;
#               on every CPU, this one's fused-tail passes to compute on ymm)
#   portable    PYNN_PORTABLE=1: the baseline (SSE2 on x86-64, no FMA): close
#   plain-c     PYNN_PLAIN_C=1: the GEMM's plain-C micro-kernel: same (the same
#               expressions as the GNU C vectors, with FMA, lane by lane)
#   no-openmp   PYNN_OPENMP=0: one thread; byte-identical (the results never
#               depend on the thread count)
#   clang       CC=clang, which finds out itself whether it has OpenMP (Debian's
#               with libomp-dev, as CI installs it, and a Mac's after `brew
#               install libomp` have it): the whole test suite, and predictions
#               on as many threads as it has (1 or 2), the CNN's and the MLP's
#               byte-identical to the native gcc build's on two (where a product
#               rounds, the kernels name which one is fused: docs/design.md,
#               "Determinism")
#   clang-no-openmp  CC=clang PYNN_OPENMP=0: Apple's clang as it comes (no OpenMP
#               runtime), the same checks on one thread
# "close": predictions are allowed to differ on a few rows (without FMA every
# product rounds twice, and training amplifies the difference); the share that
# differs is printed and must stay below CLOSE_MAX_PERCENT.
#
#   PYTHON=.venv/bin/python scripts/check_builds.sh [NAME ...]   # default: all
#
# PYTHON must have this checkout's pynn installed (./run.sh's .venv, the default):
# the native build's reference runs and the zmm check use it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute (a venv's python is a link)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pynn-builds.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CLOSE_MAX_PERCENT=5
export OMP_WAIT_POLICY=PASSIVE PYTHONDONTWRITEBYTECODE=1

build() {  # build NAME EXPECT SETTING...: build with the settings; EXPECT is Python on `lib`
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
")
}

KERNEL_TESTS="test_kernels.py test_gradcheck.py test_training.py test_cnn_kernels.py test_cnn.py"
tests() {  # tests NAME [FILE...]: tests/FILEs (default KERNEL_TESTS; "." all) against build NAME
    local name=$1 paths=() f
    shift
    [ $# -gt 0 ] || set -- $KERNEL_TESTS
    for f in "$@"; do
        case $f in -*) paths+=("$f") ;; *) paths+=("$ROOT/tests/$f") ;; esac  # -x: pytest's
    done
    (cd "$WORK/$name" && PYTHONPATH="$WORK/$name" "$PY" -m pytest -q -p no:cacheprovider \
        --rootdir "$ROOT" -c "$ROOT/pyproject.toml" "${paths[@]}")
}

# the short runs' data: the first 4000 training and 1000 test rows of data/
SHORT="$WORK/short-data"
short_data() {
    [ -d "$SHORT" ] && return
    [ -e "$ROOT/data/fashion_mnist_test_labels.csv" ] || "$PY" "$ROOT/scripts/prepare_data.py"
    mkdir -p "$SHORT"
    for f in train_vectors train_labels test_vectors test_labels; do
        n=4000; case $f in test_*) n=1000 ;; esac
        head -n $n "$ROOT/data/fashion_mnist_$f.csv" > "$SHORT/fashion_mnist_$f.csv"
    done
}

short_runs() {  # short_runs DIR THREADS [PYTHONPATH]: the CNN and MLP runs' predictions in DIR
    local dir=$1 threads=$2 path=${3:-}
    short_data
    for model in cnn mlp; do
        mkdir -p "$dir/$model"
        (cd "$dir" && PYTHONPATH="$path" "$PY" "$ROOT/scripts/run.py" --model $model \
            --epochs 1 --threads "$threads" --data-dir "$SHORT" --out-dir "$dir/$model" \
            --runs-dir '' > "$dir/$model.log")
    done
}

NATIVE="$WORK/native-runs"
threads_of() {  # threads_of NAME: 2 if build NAME has OpenMP, else 1
    (cd "$WORK/$1" && PYTHONPATH="$WORK/$1" "$PY" -c \
        "from pynn._kernels import lib; print(2 if lib.pynn_have_openmp() else 1)")
}
compare() {  # compare NAME CNN MLP THREADS: NAME's short runs against the normal build's,
    # the CNN's and the MLP's each held to "same" or "close"
    local name=$1 threads=$4 how
    [ -d "$NATIVE" ] || short_runs "$NATIVE" 2
    short_runs "$WORK/$name/runs" "$threads" "$WORK/$name"
    for model in cnn mlp; do
        if [ $model = cnn ]; then how=$2; else how=$3; fi
        for f in train_predictions.csv test_predictions.csv; do
            local a="$NATIVE/$model/$f" b="$WORK/$name/runs/$model/$f"
            if [ "$how" = same ]; then
                cmp -s "$a" "$b" || { echo "FAIL: $name $model $f differs from the native build's"; exit 1; }
                echo "$name $model $f: byte-identical to the native build's"
            else
                "$PY" - "$a" "$b" "$name $model $f" "$CLOSE_MAX_PERCENT" <<'PYEOF'
import sys
a, b = (open(p).read().split() for p in sys.argv[1:3])
share = 100 * sum(x != y for x, y in zip(a, b)) / len(a)
assert len(a) == len(b), "files of different lengths"
print(f"{sys.argv[3]}: " + ("byte-identical to the native build's (closeness asked)" if a == b
      else f"{share:.2f} % of the predictions differ from the native build's"))
assert share < float(sys.argv[4]), f"more than {sys.argv[4]} %"
PYEOF
            fi
        done
    done
}

zmm_check() {  # the native build uses zmm registers (if the CPU has AVX-512), the AVX2 one not
    local native avx2
    native=$(ls "$ROOT"/pynn/_kernels*.so) avx2=$(ls "$WORK"/avx2/pynn/_kernels*.so)
    if grep -q avx512f /proc/cpuinfo 2>/dev/null; then
        [ "$(objdump -d "$native" | grep -c zmm)" -gt 0 ] \
            || { echo "FAIL: the native build on an AVX-512 CPU uses no zmm register"; exit 1; }
        echo "native build: $(objdump -d "$native" | grep -c zmm) instructions on zmm registers"
    fi
    [ "$(objdump -d "$avx2" | grep -c zmm)" -eq 0 ] \
        || { echo "FAIL: the AVX2 build uses zmm registers"; exit 1; }
    [ "$(objdump -d "$avx2" | grep -cE 'vfmadd[0-9a-z]*ps.*ymm')" -gt 0 ] \
        || { echo "FAIL: the AVX2 build has no FMA on ymm registers"; exit 1; }
    echo "avx2 build: no zmm register, $(objdump -d "$avx2" | grep -cE 'vfmadd[0-9a-z]*ps.*ymm') FMAs on ymm"
}

vector_check() {  # the fused tail's window code compares 8 channels at a time on AVX2: its
    # functions (fused.c: pooled_row, pooled_sums, pooled_grad, which the first block's
    # kernels call too), or, where gcc inlined them, its outlined parallel regions
    # (batchnorm_relu_maxpool_*._omp_fn.N, route_coefficients._omp_fn.N for pooled_sums):
    # the window's comparisons (pooled_sums: its route's) on ymm registers
    # (vcmp*ps, or vmaxps for pynn_window_max's selects). Its backward's second pass once
    # ran scalar on AVX2 only (a select gcc could not if-convert without AVX-512's masks).
    local avx2 report
    avx2=$(ls "$WORK"/avx2/pynn/_kernels*.so)
    report=$(objdump -d --no-show-raw-insn "$avx2" | awk '
        /^[0-9a-f]+ <(pooled_(row|sums|grad)|(batchnorm_relu_maxpool_(forward|backward)|route_coefficients)\._omp_fn\.[0-9]+)>:/ {f = $2; n[f] = 0}
        /^$/ {f = ""}
        f && /v(cmp[a-z]*|max)ps.*%ymm/ {n[f]++}
        END {for (g in n) print g, n[g]}' | sort)
    if echo "$report" | grep -q '^<pooled_'; then  # not inlined: the functions are the passes
        report=$(echo "$report" | grep -E '^<(pooled_|route_coefficients)')
        if echo "$report" | grep -q '^<pooled_sums>'; then  # then it is not in the region
            report=$(echo "$report" | grep -v '^<route_coefficients')
        fi
    fi
    [ -n "$report" ] || { echo "avx2 build: no window code of the fused tail found (not gcc?): not checked"; return; }
    if echo "$report" | awk '$2 == 0 {bad = 1} END {exit !bad}'; then
        echo "FAIL: a pass of the fused tail runs scalar in the AVX2 build:"; echo "$report"; exit 1
    fi
    echo "avx2 build: the fused tail's passes compare on ymm registers: $(echo "$report" | tr '\n' ' ')"
}

variant() {
    case $1 in
    avx2)
        build avx2 "'AVX2+FMA' in kernel" PYNN_MARCH=x86-64-v3
        zmm_check; vector_check; tests avx2; compare avx2 same same 2 ;;
    portable)
        build portable "'AVX' not in kernel and lib.pynn_have_openmp()" PYNN_PORTABLE=1
        tests portable; compare portable close close 2 ;;
    plain-c)
        build plain-c "kernel.startswith('plain C')" PYNN_PLAIN_C=1
        tests plain-c; compare plain-c same same 2 ;;
    no-openmp)
        build no-openmp "not lib.pynn_have_openmp()" PYNN_OPENMP=0
        tests no-openmp; compare no-openmp same same 1 ;;
    clang)
        build clang "ffi.string(lib.pynn_compiler()).startswith(b'clang')" CC=clang
        tests clang . --ignore="$ROOT/tests/test_setup.py"  # (that one tests run.sh)
        compare clang same same "$(threads_of clang)" ;;
    clang-no-openmp)
        build clang-no-openmp "ffi.string(lib.pynn_compiler()).startswith(b'clang') \
and not lib.pynn_have_openmp()" CC=clang PYNN_OPENMP=0
        tests clang-no-openmp . --ignore="$ROOT/tests/test_setup.py"
        compare clang-no-openmp same same 1 ;;
    *) echo "unknown build $1" >&2; exit 2 ;;
    esac
}

if [ $# -eq 0 ]; then
    set -- no-openmp plain-c portable
    if command -v clang >/dev/null; then set -- "$@" clang clang-no-openmp
    else echo "(no clang: not built)"; fi
    if [ "$(uname -m)" = x86_64 ]; then set -- avx2 "$@"; fi
fi
for name in "$@"; do variant "$name"; done
echo "all builds pass: $*"
