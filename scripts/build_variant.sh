#!/usr/bin/env bash
# scripts/build_variant.sh DIR - the C kernels built with the PYNN_* settings
# of the environment (pyproject_build/build_kernels.py: PYNN_PORTABLE,
# PYNN_OPENMP, PYNN_SANITIZE) into DIR/pynn, next to links to the pynn/*.py
# files: a second pynn package that the normal build (pynn/_kernels*.so) never
# sees. Import it with PYTHONPATH=DIR from another working directory.
#
#   PYNN_OPENMP=0 PYTHON=.venv/bin/python scripts/build_variant.sh /tmp/x
#
# DIR/pynn is made anew each time (a second build into the same DIR replaces it).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: [PYNN_...=...] [PYTHON=python] scripts/build_variant.sh DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DIR=$1
# build_kernels.py names its sources relative to the project root and cffi
# compiles in its tmpdir: a copy of csrc/ there keeps the objects out of csrc/.
mkdir -p "$DIR"
if [ "$(cd "$DIR" && pwd -P)" = "$(cd "$ROOT" && pwd -P)" ]; then
    echo "error: DIR is the checkout itself; give a folder of its own" >&2
    exit 2
fi
rm -rf "$DIR/build" "$DIR/pynn"
mkdir -p "$DIR/build" "$DIR/pynn"
cp -r "$ROOT/csrc" "$DIR/build/csrc"
(cd "$ROOT" && "$PY" - "$DIR/build" <<'PYEOF'
import sys
sys.path.insert(0, "pyproject_build")
from build_kernels import ffibuilder
ffibuilder.compile(tmpdir=sys.argv[1], verbose=False)
PYEOF
)
mv "$DIR"/build/pynn/_kernels.*.so "$DIR/pynn/"
rm -rf "$DIR/build"
for f in "$ROOT"/pynn/*; do
    case "$(basename "$f")" in _kernels*|__pycache__) ;; *) ln -s "$f" "$DIR/pynn/" ;; esac
done
