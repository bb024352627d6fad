"""run.sh's set-up on hosts that lack something (a working ``venv`` module, a
package index, cffi, flock), two set-ups at once, the build settings in the
stamp, and the start time it passes on.

Every test works on a throw-away copy of the working tree (the files git does
not ignore, as they are now: run.sh's uncommitted changes and others' new
files included), so the project's own .venv is never touched.

Pythons that lack something are made honestly, as a small installation of
their own (``fake_python``): the base interpreter's binary copied into a new
prefix whose standard library and site-packages are symlinks to the real
ones, minus what is to be missing. A PYTHONPATH shim would not do: ``python
-m venv`` runs ensurepip in the new environment with PYTHONPATH removed, so
it would find the real ensurepip and succeed.

"No package index" is pip pointed at a closed local port, with pip's
configuration files off (a host's may list local indexes and wheel folders,
which would still answer).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

if os.environ.get("PYNN_SANITIZED"):  # scripts/sanitize.sh: LD_PRELOAD would reach pip and gcc
    pytest.skip("run.sh's set-up is not the sanitizer build's to test", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
BUILD = "building pynn (C kernels)"
SETTINGS = ("PYNN_MARCH", "PYNN_PORTABLE", "PYNN_OPENMP", "PYNN_PLAIN_C", "PYNN_SANITIZE",
            "CC", "CFLAGS")
# the python that made the project's .venv (the tests run in it): a real installation
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"
NO_INDEX = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_RETRIES": "0", "PIP_TIMEOUT": "1"}


def copy_repo(dest):
    """A copy in ``dest`` of the working tree as it is now, without git-ignored files."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # tracked files and new ones not yet added (others' work in progress), not ignored ones
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=False, capture_output=True, timeout=60)
    if files.returncode != 0:
        pytest.skip("the project folder is not a git checkout")
    for name in files.stdout.decode().split("\0"):
        src = REPO / name
        if name and src.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            if src.stat().st_size > 1 << 20:  # the shipped data: never read by the set-up
                (dest / name).symlink_to(src)
            else:
                shutil.copy2(src, dest / name)
    return dest


def listing(root):
    """Every path under ``root``, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def need_compiler():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers (Python.h)")


def environment(python, offline=False, **extra):
    """os.environ for run.sh: PYTHON set, no build settings, pip offline if asked."""
    env = {k: v for k, v in os.environ.items()
           if k not in SETTINGS and not k.startswith("PYNN_")
           and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
           and not (offline and k.startswith("PIP_"))}
    env["PYTHON"] = str(python)
    if offline:
        env.update(NO_INDEX)
    env.update(extra)
    return env


def run_sh(copy, env, *args, timeout=300):
    return subprocess.run([str(copy / "run.sh"), *args], cwd=copy, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout)


def succeeded(result):
    """Assert that a run.sh call worked; skip when this host has no index for pip."""
    if result.returncode != 0 and "No matching distribution found" in result.stderr:
        pytest.skip("pip finds no package index on this host")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: run.py"), result.stdout


def fake_python(root, *, ensurepip=True, packages=True, hide=(), shims=()):
    """A python installation of its own in ``root``, with a wrapper ``root/wrap/python3``.

    ``ensurepip=False`` leaves ensurepip out of the standard library, as Debian
    does without python3-venv. ``packages=False``: an empty site-packages, else
    the real one's entries but those starting with one of ``hide``. ``shims``:
    commands that fail, first on the PATH (a ``virtualenv`` this host may have)."""
    base = BASE_PYTHON.parent.parent
    stdlib = base / "lib" / VERSION
    if not (stdlib / "os.py").exists() or BASE_PYTHON.parent != base / "bin" \
            or not (stdlib / "site-packages").is_dir():  # e.g. Debian's: dist-packages
        pytest.skip(f"{BASE_PYTHON} is not laid out as <prefix>/bin/{VERSION}, "
                    f"<prefix>/lib/{VERSION}/site-packages")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BASE_PYTHON, root / "bin" / VERSION)  # a copy: the prefix is found from it
    for entry in (base / "lib").iterdir():  # libpython, if the binary finds it relative to itself
        if entry.name != VERSION:
            (root / "lib" / entry.name).parent.mkdir(parents=True, exist_ok=True)
            (root / "lib" / entry.name).symlink_to(entry)
    (root / "include").symlink_to(base / "include")  # Python.h for the C build
    (root / "lib" / VERSION).mkdir(parents=True)
    left_out = {"site-packages"} | (set() if ensurepip else {"ensurepip"})
    for entry in stdlib.iterdir():
        if entry.name not in left_out:
            (root / "lib" / VERSION / entry.name).symlink_to(entry)
    site = root / "lib" / VERSION / "site-packages"
    site.mkdir()
    for entry in (stdlib / "site-packages").iterdir() if packages else ():
        if not entry.name.lower().startswith(tuple(hide)):
            (site / entry.name).symlink_to(entry)
    wrap = root / "wrap"
    wrap.mkdir()
    (wrap / "python3").write_text(f'#!/bin/sh\nexec "{root}/bin/{VERSION}" "$@"\n')
    (wrap / "python3").chmod(0o755)
    for name in shims:
        (wrap / name).write_text("#!/bin/sh\nexit 1\n")
        (wrap / name).chmod(0o755)
    python = wrap / "python3"
    probe = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"],
                           check=False, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or Path(probe.stdout.strip()) != root:
        pytest.skip(f"a copy of {BASE_PYTHON} does not run from a prefix of its own: "
                    f"{probe.stdout}{probe.stderr}")
    return python


def imports(python, module):
    return subprocess.run([str(python), "-c", f"import {module}"], check=False, capture_output=True,
                          timeout=60).returncode == 0


def no_virtualenv_shims():
    """A failing ``virtualenv`` first on the PATH if this host has one, so that
    run.sh's virtualenv fallback does not rescue a python meant to have none."""
    return ("virtualenv",) if shutil.which("virtualenv") else ()


def python_without_venv(root, with_pip):
    """A python without ensurepip (python3 -m venv fails), without virtualenv, and
    with or without pip; checked to be so."""
    python = fake_python(root, ensurepip=False, packages=with_pip,
                         hide=("virtualenv",), shims=no_virtualenv_shims())
    made = subprocess.run([str(python), "-m", "venv", str(root / "probe-venv")],
                          check=False, capture_output=True, timeout=120)
    assert made.returncode != 0, "python -m venv works without ensurepip?"
    assert not imports(python, "virtualenv")
    if imports(python, "pip") != with_pip:
        pytest.skip(f"{BASE_PYTHON} has no pip" if with_pip else "pip is not hidden")
    return python


def test_no_venv_module_and_no_pip_gives_the_same_hint_twice(tmp_path):
    """Case A: no ensurepip, no virtualenv, no pip: two lines on stderr, exit 1,
    nothing left in the project, the same again on a second run."""
    copy = copy_repo(tmp_path / "repo")
    python = python_without_venv(tmp_path / "python", with_pip=False)
    env = environment(python, PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    before = listing(copy)
    results = [run_sh(copy, env, "--help", timeout=120) for _ in range(2)]
    for result in results:
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 2, result.stderr
        assert lines[0].startswith("error: cannot create .venv")
        assert "apt-get install python3-venv" in lines[1] and "PYTHON=" in lines[1]
        assert listing(copy) == before
    assert results[0].stderr == results[1].stderr


def test_no_venv_module_uses_the_system_pip(tmp_path):
    """Case B: no ensurepip but a pip (>= 22.3) of the system python: a venv
    without pip, which that pip installs into; a second run does not rebuild."""
    need_compiler()
    copy = copy_repo(tmp_path / "repo")
    python = python_without_venv(tmp_path / "python", with_pip=True)
    if subprocess.run([str(python), "-m", "pip", "install", "--help"], check=False, capture_output=True,
                      text=True, timeout=60).stdout.find("--python") < 0:
        pytest.skip("the system pip is older than 22.3 (no --python)")
    env = environment(python, PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    first = run_sh(copy, env, "--help")
    succeeded(first)
    assert f"{BUILD}: first time" in first.stderr
    assert not (copy / ".venv" / "bin" / "pip").exists()  # the system's pip did it
    assert (copy / ".venv" / ".pynn-installed").exists()
    second = run_sh(copy, env, "--help")
    succeeded(second)
    assert BUILD not in second.stderr


def test_no_index_and_no_cffi_gives_a_hint(tmp_path):
    """No package index and a system python without cffi: two lines saying what
    is missing, exit 1, no .venv left."""
    copy = copy_repo(tmp_path / "repo")
    python = fake_python(tmp_path / "python", hide=("cffi", "_cffi_backend"))
    assert not imports(python, "cffi")
    before = listing(copy)
    result = run_sh(copy, environment(python, offline=True), "--help", timeout=180)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{BUILD}: first time"
    assert len(lines) == 3, result.stderr
    assert lines[1].startswith("error: cannot install pynn's build requirements (cffi")
    assert "no package index reachable" in lines[1]
    assert "pip install cffi" in lines[2]
    assert listing(copy) == before


def test_no_index_builds_with_the_system_cffi_and_setuptools(tmp_path):
    """No package index, but the system python has cffi, setuptools >= 64 and
    wheel (which setuptools < 70.1 builds wheels with; fetched here with the
    host's own pip settings if it lacks it): a --system-site-packages venv and
    pip install --no-build-isolation, which download nothing."""
    need_compiler()
    copy = copy_repo(tmp_path / "repo")
    python = fake_python(tmp_path / "python")
    if not (imports(python, "cffi") and imports(python, "setuptools")):
        pytest.skip(f"{BASE_PYTHON} lacks cffi or setuptools")
    if not imports(python, "wheel"):
        packages = tmp_path / "python" / "lib" / VERSION / "site-packages"
        got = subprocess.run([str(BASE_PYTHON), "-m", "pip", "install", "--quiet", "--no-deps",
                              "--target", str(packages), "wheel"],
                             check=False, capture_output=True, text=True, timeout=120)
        if got.returncode != 0:
            pytest.skip(f"cannot get the wheel package: {got.stderr}")
    env = environment(python, offline=True)
    first = run_sh(copy, env, "--help")
    succeeded(first)
    assert f"{BUILD}: first time" in first.stderr
    assert "own cffi and setuptools" in first.stderr
    config = (copy / ".venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in config
    second = run_sh(copy, env, "--help")  # still no index: nothing to do
    succeeded(second)
    assert BUILD not in second.stderr


@pytest.fixture(scope="module")
def two_at_once(tmp_path_factory):
    """A fresh copy set up by two ./run.sh --help started at the same moment."""
    need_compiler()
    copy = copy_repo(tmp_path_factory.mktemp("two") / "repo")
    env = environment(BASE_PYTHON)
    procs = [subprocess.Popen([str(copy / "run.sh"), "--help"], cwd=copy, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return copy, results


def test_two_setups_at_once_build_once(two_at_once):
    copy, results = two_at_once
    for result in results:
        succeeded(result)
    stderr = "".join(result.stderr for result in results)
    assert stderr.count(BUILD) == 1, stderr
    assert not (copy / ".pynn-setup.lock").exists()


def test_changed_build_setting_rebuilds(two_at_once):
    copy, results = two_at_once
    succeeded(results[0])
    stamp = copy / ".venv" / ".pynn-installed"
    assert "PYNN_MARCH=\n" in stamp.read_text()
    env = environment(BASE_PYTHON, PYNN_MARCH="x86-64-v2")
    changed = run_sh(copy, env, "--help")
    succeeded(changed)
    assert f"{BUILD}: build settings changed" in changed.stderr
    assert "PYNN_MARCH=x86-64-v2\n" in stamp.read_text()
    again = run_sh(copy, env, "--help")
    succeeded(again)
    assert BUILD not in again.stderr


@pytest.fixture
def started(two_at_once):
    """``started(**env)``: PYNN_STARTED as scripts/run.py sees it, from the set-up
    copy whose run.py, for the test, prints it. The environment repeats the stamp's
    build settings, so that nothing is rebuilt."""
    copy, results = two_at_once
    succeeded(results[0])
    stamp = (copy / ".venv" / ".pynn-installed").read_text()
    settings = dict(line.split("=", 1) for line in stamp.splitlines())
    run_py = copy / "scripts" / "run.py"
    original = run_py.read_text()
    run_py.write_text("import os\nprint(os.environ['PYNN_STARTED'])\n")

    def run(**env):
        result = run_sh(copy, environment(BASE_PYTHON, **settings, **env), timeout=120)
        assert result.returncode == 0 and BUILD not in result.stderr, result.stderr
        return result.stdout.strip()

    yield run
    run_py.write_text(original)


def test_start_time_is_passed_on(started):
    """run.sh exports PYNN_STARTED: when it started, in seconds since the epoch."""
    t0 = time.time()
    assert t0 - 1 <= float(started()) <= time.time()


def test_start_time_has_a_decimal_point_in_any_locale(started, tmp_path):
    """bash writes EPOCHREALTIME with the locale's decimal comma (cs_CZ);
    run.sh passes it on with a point, as Python's float() reads it."""
    locales = tmp_path / "locales"
    locales.mkdir()
    subprocess.run(["localedef", "-i", "cs_CZ", "-f", "UTF-8", str(locales / "cs_CZ.UTF-8")],
                   check=False, capture_output=True, timeout=60)  # status 1 on mere warnings
    if not (locales / "cs_CZ.UTF-8" / "LC_NUMERIC").exists():
        pytest.skip("cannot make the cs_CZ.UTF-8 locale (localedef)")
    comma = subprocess.run(["bash", "-c", "echo $EPOCHREALTIME"], check=False,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "LOCPATH": str(locales), "LC_ALL": "cs_CZ.UTF-8"})
    if "," not in comma.stdout:
        pytest.skip(f"this bash writes EPOCHREALTIME as {comma.stdout.strip()!r} in cs_CZ")
    t0 = time.time()
    value = started(LOCPATH=str(locales), LC_ALL="cs_CZ.UTF-8")
    assert "," not in value and t0 - 1 <= float(value) <= time.time()


def test_the_test_suite_gets_no_start_time(two_at_once):
    """``./run.sh test`` passes no PYNN_STARTED on: the runs that tests start would
    count their time budgets from when the suite started."""
    copy, results = two_at_once
    succeeded(results[0])
    got = subprocess.run([str(copy / ".venv" / "bin" / "python"), "-m", "pip", "install",
                          "--quiet", "pytest"], check=False, capture_output=True, text=True,
                         timeout=180)
    if got.returncode != 0:
        pytest.skip(f"cannot install pytest into the copy: {got.stderr}")
    probe = copy / "probe_env.py"
    probe.write_text("import os\n\n\ndef test_env():\n"
                     "    assert 'PYNN_STARTED' not in os.environ\n")
    stamp = (copy / ".venv" / ".pynn-installed").read_text()
    env = environment(BASE_PYTHON, **dict(line.split("=", 1) for line in stamp.splitlines()))
    try:
        result = run_sh(copy, env, "test", "-q", "--noconftest", "-p", "no:cacheprovider",
                        str(probe), timeout=120)
    finally:
        probe.unlink()
    assert result.returncode == 0 and BUILD not in result.stderr, result.stdout + result.stderr


def test_mkdir_lock_where_flock_is_missing(tmp_path):
    """Without flock (macOS) the lock is a folder: a ./run.sh waits while it is
    there, then takes it, and removes it when it exits (here after failing)."""
    copy = copy_repo(tmp_path / "repo")
    python = python_without_venv(tmp_path / "python", with_pip=False)  # set-up fails fast
    commands = tmp_path / "commands"  # the PATH's commands but flock
    commands.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if os.path.isdir(folder):
            for entry in os.scandir(folder):
                if entry.name != "flock" and not (commands / entry.name).exists():
                    (commands / entry.name).symlink_to(entry.path)
    env = environment(python, PATH=f"{python.parent}{os.pathsep}{commands}")
    lock = copy / ".pynn-setup.lock"
    lock.mkdir()
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        proc = subprocess.Popen([str(copy / "run.sh"), "--help"], cwd=copy, env=env,
                                stdout=subprocess.DEVNULL, stderr=f)
    try:
        deadline = time.time() + 30
        while "waiting for another" not in err.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "waiting for another" in err.read_text()
        assert proc.poll() is None
        lock.rmdir()
        assert proc.wait(timeout=60) == 1
    finally:
        proc.kill()
        proc.wait()
    assert "error: cannot create .venv" in err.read_text()
    assert not lock.exists() and not (copy / ".venv").exists()
