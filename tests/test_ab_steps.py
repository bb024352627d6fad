"""scripts/ab_steps.py, whole training steps of two builds taking turns: a
build set beside itself trains the same losses in both workers; a folder
without a pynn package, or a worker that stops, is a one-line error."""
import subprocess
import sys

import pytest

from conftest import SCRIPTS_DIR, load_script

SCRIPT = SCRIPTS_DIR / "ab_steps.py"


def test_a_build_beside_itself_trains_the_same_losses():
    root = SCRIPTS_DIR.parent
    r = subprocess.run([sys.executable, str(SCRIPT), str(root), str(root), "--arch", "c8,p,f16",
                        "--rounds", "2", "--steps", "2", "--threads", "1"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    last = r.stdout.splitlines()[-1]
    assert "new/old" in last and last.endswith("same losses"), r.stdout


def test_a_folder_without_pynn_is_an_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path)],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip() == (f"error: {tmp_path}: no pynn package in it (a checkout, or "
                                "scripts/build_variant.sh's folder)")


@pytest.mark.parametrize("code, how", [
    ("pass", "exit status 0"),  # gone before it is asked: the pipe is broken
    # asked, then killed before it answers, as by a kernel's crash
    ("import os, signal, sys; sys.stdin.readline(); os.kill(os.getpid(), signal.SIGKILL)",
     "killed by SIGKILL"),
])
def test_a_worker_that_stopped_is_an_error(code, how):
    ab_steps = load_script("ab_steps")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    if code == "pass":
        p.wait()
    with pytest.raises(SystemExit) as stop:
        ab_steps.ask(p, "/tmp/some-build", "go")
    assert stop.value.code == (f"error: the worker of /tmp/some-build stopped ({how}; its "
                               "error, if any, is above)")
    p.stdout.close()
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
