#!/usr/bin/env bash
# scripts/sanitize.sh [pytest args] - the C kernels under AddressSanitizer + UBSan.
#
# 1. Builds csrc/*.c with PYNN_SANITIZE=1 into a temporary folder
#    (scripts/build_variant.sh): a second pynn package that the normal build
#    (pynn/_kernels*.so) never sees.
# 2. Runs the whole test suite against it (pytest args replace "tests"), with
#    libasan preloaded into the uninstrumented python; a sanitizer report ends
#    the test process (and so fails the run). tests/test_sanitize.py checks
#    that the instrumented build is the one loaded and that ASan and LSan fire.
#    The CSV parser's fuzz tests (tests/test_fuzz.py) run PYNN_FUZZ_EXAMPLES
#    inputs each (default here 2500: 12 500 in all); the CNN kernels' fuzz tests
#    (tests/test_fuzz_cnn.py) a tenth of that each, the fused tail's half.
# 3. Leak check: a small training run (scripts/leakcheck.py) under
#    LeakSanitizer; any leak whose stack passes through pynn's C code fails.
#
#   PYTHON=/tmp/v/bin/python scripts/sanitize.sh        # default .venv/bin/python
#   PYNN_FUZZ_EXAMPLES=50000 scripts/sanitize.sh tests/test_fuzz.py   # fuzz longer
#   KEEP=1 ...                                          # keep the build folder
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute (not resolved: a venv's python is a link)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pynn-sanitize.XXXXXX")
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; else echo "build kept in $WORK"; fi

echo "== sanitizer build (ASan + UBSan) in $WORK =="
PYNN_SANITIZE=1 PYTHON="$PY" "$ROOT/scripts/build_variant.sh" "$WORK"

LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "error: gcc has no libasan.so (install libgcc-N-dev for gcc N)" >&2
    exit 2
fi
# python itself is not instrumented: its exit-time leaks are not ours (step 3
# looks at leaks separately); a failed huge allocation must be a MemoryError,
# as without ASan, not an abort.
export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$WORK"            # this pynn first (python -m puts the cwd first: $WORK)
export PYNN_SANITIZED="$WORK/pynn"   # tests/test_sanitize.py checks that it is the one loaded
export PYNN_FUZZ_EXAMPLES=${PYNN_FUZZ_EXAMPLES:-2500}
export PYTHONDONTWRITEBYTECODE=1 OMP_WAIT_POLICY=PASSIVE

[ $# -eq 0 ] && set -- tests
args=()
for a in "$@"; do  # test paths are relative to the project; pytest runs in $WORK
    if [ -e "$ROOT/$a" ]; then args+=("$ROOT/$a"); else args+=("$a"); fi
done
echo "== tests against the sanitizer build (fuzz: $PYNN_FUZZ_EXAMPLES examples per test) =="
(cd "$WORK" && "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" \
    -c "$ROOT/pyproject.toml" "${args[@]}")

echo "== leak check (LeakSanitizer) =="
mkdir -p "$WORK/lsan"
(cd "$WORK" && ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
    LSAN_OPTIONS="exitcode=0:log_path=$WORK/lsan/report" \
    "$PY" "$ROOT/scripts/leakcheck.py")
env -u LD_PRELOAD "$PY" "$ROOT/scripts/leakcheck.py" --verdict "$WORK"/lsan/report*
