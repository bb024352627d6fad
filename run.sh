#!/usr/bin/env bash
# pynn - the PV021 project in one command.
#
#   ./run.sh [options]     set up if needed, train, write train/test_predictions.csv
#   ./run.sh test [args]   set up if needed, run the test suite (pytest args pass through)
#
# Set-up: a virtual environment .venv in this folder with pynn installed
# (pip install -e ., which compiles the C kernels). It is redone only when
# the C sources or the build files changed since the last install.
# Options (./run.sh --help lists them) go to scripts/run.py, which runs
# under `nice`: the course server is shared.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
STAMP=$VENV/.pynn-installed

setup() {
    if [ ! -x "$PY" ]; then
        echo "setting up $VENV (once) ..." >&2
        "$PYTHON" -m venv "$VENV"
    fi
    # rebuild when a build input is newer than the last install, or the module is gone
    if [ ! -f "$STAMP" ] \
        || [ -n "$(find csrc pyproject_build setup.py pyproject.toml -newer "$STAMP" -print -quit)" ] \
        || ! "$PY" -c "import pynn._kernels" 2>/dev/null; then
        echo "building pynn (C kernels) ..." >&2
        "$PY" -m pip install --quiet --disable-pip-version-check -e . >&2
        touch "$STAMP"
    fi
}

setup
if [ "${1:-}" = "test" ]; then
    shift
    if ! "$PY" -c "import pytest" 2>/dev/null; then
        "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]" >&2
        touch "$STAMP"
    fi
    exec nice -n 10 "$PY" -m pytest "$@"
fi
exec nice -n 10 "$PY" scripts/run.py "$@"
