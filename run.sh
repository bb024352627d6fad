#!/usr/bin/env bash
# pynn - the PV021 project in one command.
#
#   ./run.sh [options]     set up if needed, train, write train/test_predictions.csv
#   ./run.sh test [args]   set up if needed, run the test suite (pytest args pass through)
#
# Set-up: a virtual environment .venv in this folder with pynn installed
# (pip install -e ., which compiles the C kernels), made by $PYTHON (default python3).
# - No working venv module (Debian/Ubuntu without python3-venv): virtualenv, else a
#   venv without pip that $PYTHON's own pip installs into; else a hint and exit 1.
# - No package index for pip's build isolation: a venv that sees $PYTHON's own
#   cffi and setuptools, installed with --no-build-isolation; else a hint and exit 1.
# - The stamp .venv/.pynn-installed holds the build settings (PYNN_*, CC, CFLAGS);
#   pynn is rebuilt when they change or a file in csrc/, pyproject_build/, setup.py
#   or pyproject.toml is newer. A failed set-up leaves no .venv that looks finished.
# - One set-up at a time (flock, else a mkdir lock): a second ./run.sh waits for it.
# Options (./run.sh --help lists them) go to scripts/run.py, which runs
# under `nice`: the course server is shared. PYNN_STARTED (seconds since the
# epoch) tells it when ./run.sh was started, for its whole-run time budget
# (not passed to the test suite).
PYNN_STARTED=${EPOCHREALTIME:-$(date +%s)}  # first thing: the time budget starts here
export PYNN_STARTED=${PYNN_STARTED/,/.}     # bash writes a decimal comma in e.g. cs_CZ
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
STAMP=$VENV/.pynn-installed
LOG=$VENV/.pynn-pip.log        # pip's output, shown only when the install fails
NOTES=$VENV/.pynn-build-notes  # the build's fallback notes (no OpenMP, ...), shown
LOCKDIR=.pynn-setup.lock       # the mkdir lock, where flock is missing
SETTINGS="PYNN_MARCH PYNN_PORTABLE PYNN_OPENMP PYNN_PLAIN_C PYNN_SANITIZE CC CFLAGS"
MODE=${1:-}
EXTRA=                         # "[test]" when pytest is to be installed too
OWN_PIP=1 SETTING_UP=0 FRESH=0 LOCKED=0

die() { printf '%s\n' "$@" >&2; exit 1; }

settings() {  # the build settings as the stamp holds them, NAME=value a line
    local name
    for name in $SETTINGS; do printf '%s=%s\n' "$name" "${!name:-}"; done
}

kernels_load() {  # false if pynn._kernels is missing or broken (not for other errors in pynn)
    local out
    out=$("$PY" -c "import pynn._kernels" 2>&1) && return
    case ${out##*$'\n'} in  # the exception's line
        *"No module named 'pynn"* | *"No module named '_cffi"* | *"No module named 'cffi"* | *_kernels*) return 1 ;;
    esac
}

stale() {  # why pynn must be (re)installed, or nothing when it is up to date
    if [ ! -f "$STAMP" ] && [ -f "$LOG" ]; then echo "the last build failed"
    elif [ ! -f "$STAMP" ]; then echo "first time"
    elif [ "$(cat "$STAMP")" != "$(settings)" ]; then echo "build settings changed"
    elif [ -n "$(find csrc pyproject_build setup.py pyproject.toml -newer "$STAMP" -print -quit)" ]; then
        echo "sources changed"
    elif ! "$PY" -c "" 2>/dev/null; then echo "$PY does not run"
    elif ! kernels_load; then echo "the built module is gone"
    elif [ "$MODE" = test ] && ! "$PY" -c "import pytest" 2>/dev/null; then
        echo "pytest missing, installing the test extra"
    fi
}

lock() {  # one set-up at a time: flock on the project folder itself, else mkdir (atomic)
    local held=0
    if command -v flock >/dev/null 2>&1; then
        exec 9<"$ROOT"  # a read-only descriptor of the folder: no lock file
        flock -n -E 75 9 2>/dev/null || held=$?
        if [ "$held" = 75 ]; then  # 75: another one has it
            echo "waiting for another ./run.sh to finish its set-up ..." >&2
            flock 9
        fi
        if [ "$held" = 0 ] || [ "$held" = 75 ]; then return; fi
        exec 9<&-  # flock fails here (e.g. on NFS, for a read-only descriptor): mkdir then
    fi
    if ! mkdir "$LOCKDIR" 2>/dev/null; then
        echo "waiting for another ./run.sh to finish its set-up (if none runs: rmdir $LOCKDIR) ..." >&2
        until mkdir "$LOCKDIR" 2>/dev/null; do sleep 1; done
    fi
    LOCKED=1
}

unlock() {
    exec 9<&-  # closing the descriptor releases the flock
    if [ "$LOCKED" = 1 ]; then rmdir "$LOCKDIR"; LOCKED=0; fi
}

on_exit() {  # an unfinished set-up must not look finished to the next ./run.sh
    if [ "$SETTING_UP" = 1 ]; then
        if [ "$FRESH" = 1 ]; then rm -rf "$VENV"; else rm -f "$STAMP"; fi
    fi
    unlock
}

pip_() {  # pip for .venv: its own, or $PYTHON's aimed at it (pip >= 22.3 has --python)
    if [ "$OWN_PIP" = 1 ]; then "$PY" -m pip "$@"; else "$PYTHON" -m pip --python "$PY" "$@"; fi
}

pick_pip() {  # does pip work for .venv, and which (sets OWN_PIP)?
    OWN_PIP=1
    "$PY" -m pip --version >/dev/null 2>&1 && return
    OWN_PIP=0
    "$PY" -c "" 2>/dev/null && pip_ --version >/dev/null 2>&1
}

try_venv() {  # run a command that makes .venv; keep the result only if pip works for it
    rm -rf "$VENV"
    "$@" >/dev/null 2>&1 && pick_pip && return
    rm -rf "$VENV"  # e.g. a failed python -m venv leaves a python without pip
    return 1
}

make_venv() {  # make_venv [--system-site-packages]: a new .venv, the first way that works
    FRESH=1
    try_venv "$PYTHON" -m venv "$@" "$VENV" \
        || try_venv "$PYTHON" -m virtualenv -q "$@" "$VENV" \
        || { command -v virtualenv >/dev/null 2>&1 && try_venv virtualenv -q -p "$PYTHON" "$@" "$VENV"; } \
        || try_venv "$PYTHON" -m venv --without-pip "$@" "$VENV" \
        || die "error: cannot create $VENV: $PYTHON has no working venv module (ensurepip missing), no virtualenv and no pip >= 22.3" \
               "install the venv module (Debian/Ubuntu: apt-get install python3-venv) or virtualenv, or use another python: PYTHON=/path/to/python3 ./run.sh"
}

install() {  # install [pip options]: pynn (and EXTRA) into .venv; pip's output goes to LOG
    pip_ install --quiet --disable-pip-version-check "$@" -e ".$EXTRA" >"$LOG" 2>&1
}

has_build_reqs() {  # does $PYTHON itself have what building pynn takes?
    "$PYTHON" -c 'import re, cffi, setuptools
v = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
assert v >= (64,), "editable installs need setuptools >= 64"
if v < (70, 1): import wheel  # older setuptools make wheels with the wheel package' 2>/dev/null
}

build() {  # pip install -e ., else (no package index) with $PYTHON's cffi and setuptools
    if grep -qs "^include-system-site-packages *= *true" "$VENV/pyvenv.cfg"; then
        install --no-build-isolation && return  # set up that way before: no index needed
    elif install; then
        return
    elif has_build_reqs; then
        echo "pip install failed (no package index?): trying with $PYTHON's own cffi and setuptools" >&2
        make_venv --system-site-packages
        install --no-build-isolation && return
    elif grep -q "No matching distribution found" "$LOG"; then
        die "error: cannot install pynn's build requirements (cffi, setuptools>=64, wheel): no package index reachable and $PYTHON lacks them" \
            "install them for $PYTHON (pip install cffi setuptools wheel, or apt-get install python3-cffi python3-setuptools python3-wheel), or set PYTHON to a python that has them"
    fi
    cat "$LOG" >&2
    die "error: pip install -e .$EXTRA into $VENV failed (pip's output above)"
}

setup() {  # (re)install pynn into .venv when stale(), under the lock
    local reason
    reason=$(stale)
    [ -n "$reason" ] || return 0
    trap on_exit EXIT
    trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP  # exit runs on_exit
    lock
    reason=$(stale)  # again: the ./run.sh we waited for may have done it all
    if [ -n "$reason" ]; then
        SETTING_UP=1
        command -v "$PYTHON" >/dev/null 2>&1 \
            || die "error: $PYTHON not found" "install Python 3.9 or newer, or use another python: PYTHON=/path/to/python3 ./run.sh"
        if [ "$MODE" = test ] && ! "$PY" -c "import pytest" 2>/dev/null; then EXTRA="[test]"; fi
        pick_pip || make_venv  # keep a .venv pip works for (e.g. one made by hand)
        echo "building pynn (C kernels): $reason" >&2
        rm -f "$NOTES"
        PYNN_BUILD_NOTES=$ROOT/$NOTES build
        if [ -f "$NOTES" ]; then awk '!seen[$0]++' "$NOTES" >&2; rm -f "$NOTES"; fi  # once each
        settings >"$STAMP"
        rm -f "$LOG"
        SETTING_UP=0
    fi
    unlock  # released before training starts
    trap - EXIT INT TERM HUP
}

setup
if [ "$MODE" = test ]; then
    shift
    unset PYNN_STARTED  # the suite is not one timed run: the runs it starts time themselves
    exec nice -n 10 "$PY" -m pytest "$@"
fi
exec nice -n 10 "$PY" scripts/run.py "$@"
