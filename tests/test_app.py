"""End-to-end tests of pynn.run and scripts/run.py on a small subset of the
real course data (2000 training rows, 500 test rows)."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pynn
from pynn.config import Config, configure
from pynn.io import CSV_NAMES, PREDICTION_NAMES
from pynn.report import Reporter

from conftest import HAVE_DATA, N_TEST, N_TRAIN, SCRIPTS_DIR, needs_threads  # + subset_dir

RUN_PY = SCRIPTS_DIR / "run.py"

if not HAVE_DATA:
    pytest.skip("the course CSVs in data/ are missing", allow_module_level=True)


def data_copy(subset_dir, dest):
    """A fresh copy of the subset folder (to damage one file of it)."""
    shutil.copytree(subset_dir, dest)
    return dest


def quiet_run(data_dir, out_dir, **kwargs):
    """pynn.run with small defaults; returns (result dict, printed text)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"arch": "f32", "epochs": 2, "batch_size": 32, "threads": 1}
    settings.update(kwargs)
    stream = io.StringIO()
    result = pynn.run(configure("mlp", data_dir=str(data_dir), out_dir=str(out_dir), **settings),
                      reporter=Reporter(stream))
    return result, stream.getvalue()


def predictions(out_dir):
    return {k: (Path(out_dir) / name).read_bytes() for k, name in PREDICTION_NAMES.items()}


def parse_predictions(data):
    assert data.endswith(b"\n") and b"\r" not in data
    return [int(v) for v in data.decode("ascii").split("\n")[:-1]]


def subprocess_env():
    # idle OpenMP workers sleep instead of spinning: the cores are shared
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def cli(*args, cwd, timeout=120, pre=None, threads=1):
    """Run scripts/run.py in a fresh interpreter; ``pre`` is Python run first;
    ``threads=None`` keeps the default thread count."""
    if threads is not None:
        args = (*args, "--threads", threads)
    if pre is None:
        cmd = [sys.executable, str(RUN_PY), *map(str, args)]
    else:
        code = (f"{pre}\nimport runpy, sys\nsys.argv = {[str(RUN_PY), *map(str, args)]!r}\n"
                f"runpy.run_path({str(RUN_PY)!r}, run_name='__main__')\n")
        cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(), check=False)


@pytest.fixture(scope="module")
def base_run(subset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("base_out")
    result, text = quiet_run(subset_dir, out, seed=42)
    return result, text, predictions(out)


# ---- (a) the whole run -------------------------------------------------------

def test_run_writes_both_prediction_files(base_run):
    result, text, files = base_run
    train, test = parse_predictions(files["train"]), parse_predictions(files["test"])
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert set(train) <= set(range(10)) and set(test) <= set(range(10))
    assert len(set(test)) >= 5  # not a constant prediction
    assert result["test_acc"] > 0.5
    assert result["train_file_acc"] > 0.5
    assert result["stopped"] == "done"
    assert [m["epoch"] for m in result["history"]] == [1, 2]
    assert "test accuracy" in text


def test_test_accuracy_agrees_with_the_files(base_run, subset_dir):
    result, _, files = base_run
    truth = parse_predictions((subset_dir / CSV_NAMES["test_labels"]).read_bytes())
    pred = parse_predictions(files["test"])
    assert result["test_acc"] == pytest.approx(sum(p == t for p, t in zip(pred, truth)) / N_TEST)
    truth = parse_predictions((subset_dir / CSV_NAMES["train_labels"]).read_bytes())
    pred = parse_predictions(files["train"])
    assert result["train_file_acc"] == pytest.approx(sum(p == t for p, t in zip(pred, truth)) / N_TRAIN)


def test_run_without_test_labels(subset_dir, tmp_path):
    data = data_copy(subset_dir, tmp_path / "data")
    (data / CSV_NAMES["test_labels"]).unlink()
    result, text = quiet_run(data, tmp_path / "out", epochs=1)
    assert result["test_acc"] is None and "test accuracy" not in text
    assert len(parse_predictions(predictions(tmp_path / "out")["test"])) == N_TEST


# ---- (b) reproducibility ----------------------------------------------------

def test_same_seed_same_files(base_run, subset_dir, tmp_path):
    _, _, files = base_run
    quiet_run(subset_dir, tmp_path, seed=42)
    assert predictions(tmp_path) == files


THREADS_SCRIPT = """
import io, json, sys
import pynn
from pynn.report import Reporter
data, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
settings["arch"] = ",".join(f"f{h}" for h in settings.pop("hidden"))
losses = []
for run, threads in enumerate((1, 2, 16)):
    result = pynn.run(pynn.configure("mlp", data_dir=data, out_dir=f"{out}/{run}", threads=threads,
                                  **settings), reporter=Reporter(io.StringIO()))
    assert pynn.get_threads() == threads
    losses.append([m["train_loss"] for m in result["history"]])
print(json.dumps(losses))
"""


@needs_threads
@pytest.mark.parametrize("settings", [
    {"hidden": [32], "batch_size": 32, "epochs": 2},
    # big enough for every parallel path: gemm, layer and optimizer kernels
    {"hidden": [256], "batch_size": 256, "epochs": 1, "optimizer": "sgd"},
    {"hidden": [256, 64], "batch_size": 256, "epochs": 1, "activation": "tanh"},
], ids=["small", "wide-sgd", "wide-tanh"])
def test_thread_count_does_not_change_results(subset_dir, tmp_path, settings):
    """threads=1, then 2, then 16 (in a subprocess, so the OpenMP workers
    do not linger in the test process): byte-identical predictions."""
    for run in range(3):
        (tmp_path / str(run)).mkdir()
    proc = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(subset_dir), str(tmp_path),
                           json.dumps(settings)], capture_output=True, text=True, timeout=120,
                          env=subprocess_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    losses = json.loads(proc.stdout)
    assert losses[0] == losses[1] == losses[2]
    assert predictions(tmp_path / "0") == predictions(tmp_path / "1") == predictions(tmp_path / "2")


def test_other_seed_other_files(base_run, subset_dir, tmp_path):
    _, _, files = base_run
    quiet_run(subset_dir, tmp_path, seed=0)
    other = predictions(tmp_path)
    assert other["train"] != files["train"] and other["test"] != files["test"]


# ---- (c) the command line ---------------------------------------------------

def test_cli_trains_and_reports(subset_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = cli("--data-dir", subset_dir, "--out-dir", out, "--epochs", 1, "--hidden", 16,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert any(line.startswith("epoch   1 ") for line in lines), proc.stdout
    assert any(line.startswith("test accuracy ") for line in lines), proc.stdout
    files = predictions(out)
    assert len(parse_predictions(files["train"])) == N_TRAIN
    assert len(parse_predictions(files["test"])) == N_TEST
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing written next to it


# ---- (d) no NumPy -----------------------------------------------------------

BLOCK_NUMPY = """
import sys
attempts = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numpy', 'torch'):
            attempts.append(name)
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import atexit
def check():
    assert not attempts, attempts
    assert 'numpy' not in sys.modules and 'torch' not in sys.modules
    print('NUMPY-FREE', flush=True)
atexit.register(check)
"""


def test_import_pynn_without_numpy(tmp_path):
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import pynn, pynn.app, pynn.data, pynn.io, pynn.train\n"
            "assert sys.modules['numpy'] is None\n"
            "print('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == "OK\n", proc.stderr
    code = BLOCK_NUMPY + "import pynn, pynn.app, pynn.data, pynn.io, pynn.train\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == "NUMPY-FREE\n", proc.stderr


def test_cli_without_numpy(subset_dir, tmp_path):
    args = ("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 1, "--hidden", 16)
    proc = cli(*args, cwd=tmp_path, pre="import sys; sys.modules['numpy'] = None")
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    proc = cli(*args, cwd=tmp_path, pre=BLOCK_NUMPY)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and proc.stdout.endswith("NUMPY-FREE\n")


# ---- (e) bad input through the command line -----------------------------------

OLD = {"train": b"old train predictions\n", "test": b"old test predictions\n"}


def damage(path, line, new):
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = new(lines[line - 1])
    path.write_bytes(b"\n".join(lines))


def cli_with_bad_file(subset_dir, tmp_path, key, line, new):
    data = data_copy(subset_dir, tmp_path / "data")
    damage(data / CSV_NAMES[key], line, new)
    out = tmp_path / "out"
    out.mkdir()
    for k, name in PREDICTION_NAMES.items():
        (out / name).write_bytes(OLD[k])
    proc = cli("--data-dir", data, "--out-dir", out, "--epochs", 1, "--hidden", 16,
               cwd=tmp_path)
    return proc, data / CSV_NAMES[key], out


BAD_INPUTS = {
    "train-vectors-empty-value": ("train_vectors", 1234, lambda b: b.replace(b",", b",,", 1)),
    "train-vectors-short-line": ("train_vectors", 7, lambda b: b.rsplit(b",", 1)[0]),
    "train-vectors-text": ("train_vectors", 1500, lambda b: b"abc," + b),
    "train-vectors-blank-line": ("train_vectors", 3, lambda b: b""),
    "train-labels-negative": ("train_labels", 42, lambda b: b"-1"),
    "test-vectors-too-long": ("test_vectors", 250, lambda b: b + b",0"),
    "test-vectors-nan": ("test_vectors", 500, lambda b: b"nan," + b.split(b",", 1)[1]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input_file(subset_dir, tmp_path, case):
    key, line, new = BAD_INPUTS[case]
    proc, bad, out = cli_with_bad_file(subset_dir, tmp_path, key, line, new)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {bad}:{line}: "), proc.stderr
    assert predictions(out) == OLD
    assert sorted(os.listdir(out)) == sorted(PREDICTION_NAMES.values())  # no temp files


def test_cli_missing_input_file(subset_dir, tmp_path):
    data = data_copy(subset_dir, tmp_path / "data")
    (data / CSV_NAMES["test_vectors"]).unlink()
    (data / CSV_NAMES["test_vectors"]).mkdir()  # exists, but is a folder
    proc = cli("--data-dir", data, "--out-dir", tmp_path, "--epochs", 1, "--hidden", 16,
               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {data / CSV_NAMES['test_vectors']}: ")


def test_cli_bad_test_labels_are_a_note(subset_dir, tmp_path):
    proc, bad, out = cli_with_bad_file(subset_dir, tmp_path, "test_labels", 77, lambda b: b"x")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert f"note: test labels not used: {bad}:77: " in proc.stdout
    assert "test accuracy" not in proc.stdout
    assert len(parse_predictions(predictions(out)["test"])) == N_TEST


# ---- (f) output folder ------------------------------------------------------------

def unwritable_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"")
    cases = {"file": a_file, "under a file": a_file / "sub"}
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_bytes(b"")  # root can write anyway (os.geteuid() == 0)
        (ro / "probe").unlink()
    except OSError:
        cases["read-only"] = ro
    return cases


def test_cli_unusable_out_dir_fails_before_training(subset_dir, tmp_path):
    for name, out in unwritable_cases(tmp_path).items():
        t0 = time.perf_counter()
        proc = cli("--data-dir", subset_dir, "--out-dir", out, "--epochs", 50, "--hidden", 64,
                   cwd=tmp_path)
        elapsed = time.perf_counter() - t0
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"error: {out}: ") and proc.stderr.count("\n") == 1, \
            proc.stderr
        assert "Traceback" not in proc.stderr
        assert "epoch" not in proc.stdout and "model" not in proc.stdout, proc.stdout
        assert elapsed < 20, elapsed


def test_run_unusable_out_dir_raises(subset_dir, tmp_path):
    stream = io.StringIO()
    (tmp_path / "a_file").write_bytes(b"")
    cfg = configure("mlp", data_dir=str(subset_dir), out_dir=str(tmp_path / "a_file" / "sub"), epochs=1,
                 arch="f8", threads=1)
    with pytest.raises(pynn.PynnError, match="a file is in the way"):
        pynn.run(cfg, reporter=Reporter(stream))
    assert "epoch" not in stream.getvalue()


def test_a_missing_out_dir_is_created_with_a_note(subset_dir, tmp_path):
    out = tmp_path / "new" / "deeper"
    proc = cli("--data-dir", subset_dir, "--out-dir", out, "--epochs", 1, "--hidden", 16,
               "--runs-dir", "", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"note: created the output folder {out}" in proc.stdout
    assert all((out / name).exists() for name in PREDICTION_NAMES.values())


def test_python_dash_m_pynn_is_the_same_command_line(subset_dir, tmp_path):
    """python -m pynn: the parser of scripts/run.py, the current folder's files
    (run.py's help names the checkout's data/ and root as its defaults)."""
    proc = subprocess.run([sys.executable, "-m", "pynn", "--help"], capture_output=True,
                          text=True, env=subprocess_env(), timeout=60, check=False)
    ours = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and ours.returncode == 0, proc.stderr
    root = SCRIPTS_DIR.parent
    assert f"(default: {root / 'data'})" in " ".join(ours.stdout.split())

    def words(text):  # argparse wraps the usage after the program's name
        text = " ".join(text.replace("python -m pynn", "run.py").split())
        return text.replace(f"(default: {root / 'data'})", "(default: data)") \
            .replace(f"(default: {root})", "(default: .)").split()

    assert words(proc.stdout) == words(ours.stdout)
    proc = subprocess.run([sys.executable, "-m", "pynn", "--data-dir", str(subset_dir),
                           "--epochs", "1", "--hidden", "16", "--runs-dir", ""],
                          capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all((tmp_path / name).exists() for name in PREDICTION_NAMES.values())


# ---- (g) (h) (i) options -------------------------------------------------------

def test_seed_outside_the_allowed_ones_prints_a_note(subset_dir, tmp_path):
    result, text = quiet_run(subset_dir, tmp_path, seed=7)
    notes = [line for line in text.splitlines() if line.startswith("note: ")]
    assert any("seed 7" in line for line in notes), text
    assert result["test_acc"] > 0.5
    assert len(parse_predictions(predictions(tmp_path)["test"])) == N_TEST


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_allowed_seed_prints_no_seed_note(subset_dir, tmp_path, seed):
    _, text = quiet_run(subset_dir, tmp_path, seed=seed, epochs=1)
    assert "note:" not in text


def test_cli_seed_note(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 1, "--hidden", 16,
               "--seed", 1234, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: seed 1234" in proc.stdout


def test_no_validation_part(subset_dir, tmp_path):
    result, text = quiet_run(subset_dir, tmp_path, val_fraction=0.0)
    assert result["val_acc"] is None
    assert all(m["val_acc"] is None for m in result["history"])
    assert "validation 0 rows" in text
    assert result["test_acc"] > 0.5
    files = predictions(tmp_path)
    assert len(parse_predictions(files["train"])) == N_TRAIN
    assert len(parse_predictions(files["test"])) == N_TEST


def test_cli_val_fraction_zero(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 1, "--hidden", 16,
               "--val-fraction", 0, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout


def test_time_budget_shortens_the_plan(subset_dir, tmp_path):
    """The budget is the whole run: training stops early enough for the
    predictions and the files, and not much earlier."""
    budget = 3.0
    t0 = time.perf_counter()
    result, text = quiet_run(subset_dir, tmp_path, epochs=100000, time_budget=budget)
    elapsed = time.perf_counter() - t0
    assert result["stopped"] in ("done", "time budget")  # the deadline still holds
    assert 1 <= len(result["history"]) < 100000
    assert "100000 epochs would take" in text and "budget: training" in text
    assert result["plan"]["why"].startswith("100000 epochs would take")
    assert result["plan"]["steps_planned"] < 100000 * (N_TRAIN * 9 // 10 // 32)
    assert budget / 4 < elapsed < budget + 0.5, elapsed  # (loose below: a busy machine)
    files = predictions(tmp_path)
    assert len(parse_predictions(files["train"])) == N_TRAIN
    assert len(parse_predictions(files["test"])) == N_TEST
    assert set(parse_predictions(files["test"])) <= set(range(10))


def test_cli_time_budget(subset_dir, tmp_path):
    t0 = time.perf_counter()
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 100000,
               "--hidden", 16, "--time-budget", 4, cwd=tmp_path, threads=None)
    elapsed = time.perf_counter() - t0  # from before the process started to its exit
    assert proc.returncode == 0, proc.stderr
    assert "budget: training" in proc.stdout and "test accuracy" in proc.stdout
    assert 1.0 < elapsed < 4 + 0.7, elapsed  # (the lower bound is loose: a busy machine)
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["plan"]["epochs_asked"] == 100000
    assert summary["plan"]["why"].startswith("100000 epochs would take about")
    assert len(parse_predictions(predictions(tmp_path)["test"])) == N_TEST


# ---- presets, --arch and the CNN from the command line ---------------------------

def test_presets_and_explicit_options():
    from pynn.config import DEFAULT_MODEL, PRESETS, configure
    cfg = configure()
    assert cfg.model == DEFAULT_MODEL == "cnn" and cfg.arch == "c32,p,c64,p,f256"
    assert Config() == configure()  # one default: Config() is the cnn preset
    assert PRESETS["cnn"] == {}
    mlp = configure("mlp")
    assert (mlp.arch, mlp.epochs, mlp.dropout, mlp.label_smoothing) == ("f1024,f512", 15, 0.0, 0.0)
    mine = configure("cnn-large", epochs=3, lr=0.5)
    assert (mine.epochs, mine.lr, mine.arch) == (3, 0.5, PRESETS["cnn-large"]["arch"])
    assert mine.ema == PRESETS["cnn-large"]["ema"]  # the preset's own, not overridden
    assert mine.explicit == ("epochs", "lr", "model")
    with pytest.raises(pynn.PynnError, match="--model resnet: not one of"):
        configure("resnet")


def test_cli_cnn_run_with_arch(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 1, "--arch",
               "c4,p,f16", "--augment", "on", "--runs-dir", "", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Conv2d(1, 4, 3, bias=False)" in proc.stdout and "14x14x4" in proc.stdout
    assert f"augmented (shifts of up to {Config.shift}, flips)" in proc.stdout
    assert "label smoothing 0.1" in proc.stdout
    files = predictions(tmp_path)
    assert len(parse_predictions(files["test"])) == N_TEST


def test_cli_bad_arch_token_fails_before_reading(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--arch", "c32,q7",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad token 'q7'" in proc.stderr, proc.stderr


def narrow_data(folder, width=10):
    """The course files, but vectors of a width that is no square image."""
    folder.mkdir()
    rows = ["".join(",".join(str((r * 7 + c) % 256) for c in range(width))) for r in range(60)]
    (folder / CSV_NAMES["train_vectors"]).write_text("\n".join(rows) + "\n")
    (folder / CSV_NAMES["train_labels"]).write_text("\n".join(str(r % 3) for r in range(60)) + "\n")
    (folder / CSV_NAMES["test_vectors"]).write_text("\n".join(rows[:10]) + "\n")
    return folder


def test_default_falls_back_to_the_mlp_for_vectors_that_are_no_image(tmp_path):
    data = narrow_data(tmp_path / "data")
    proc = cli("--data-dir", data, "--out-dir", tmp_path, "--epochs", 1, "--runs-dir", "",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not a square image: training the mlp preset instead of cnn" in proc.stdout
    assert "Linear(10, 1024)" in proc.stdout


@pytest.mark.parametrize("ask", [("--model", "cnn"), ("--arch", "c4,f8")])
def test_asking_for_a_cnn_on_such_vectors_is_an_error(tmp_path, ask):
    data = narrow_data(tmp_path / "data")
    proc = cli("--data-dir", data, "--out-dir", tmp_path, *ask, cwd=tmp_path)
    assert proc.returncode == 2 and "not a square number" in proc.stderr, proc.stderr
    assert not (tmp_path / PREDICTION_NAMES["test"]).exists()


def test_test_time_flips_on_such_vectors_are_an_error(tmp_path):
    data = narrow_data(tmp_path / "data")
    proc = cli("--data-dir", data, "--out-dir", tmp_path, "--model", "mlp", "--tta", "flip",
               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--tta flip" in proc.stderr, proc.stderr
    assert "not a square number" in proc.stderr
    assert not (tmp_path / PREDICTION_NAMES["test"]).exists()


def test_negative_batch_size_is_an_error(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--batch-size", -1, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--batch-size -1: must be 0" in proc.stderr



@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_bad_sigmoid_steepness_is_an_error(subset_dir, tmp_path, value):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--model", "mlp",
               "--activation", "sigmoid", "--sigmoid-steepness", value, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--sigmoid-steepness" in proc.stderr and "above 0" in proc.stderr


# ---- options are checked once, before anything is read ----------------------------

@pytest.mark.parametrize("option, value, says", [
    ("--dropout", "1", "--dropout 1: must be in [0, 1)"),
    ("--label-smoothing", "1", "--label-smoothing 1: must be in [0, 1)"),
    ("--val-fraction", "1", "--val-fraction 1: must be in [0, 1)"),
    ("--lr", "-0.1", "--lr -0.1: must be 0 or more"),
    ("--lr", "inf", "--lr inf: must be 0 or more"),
    ("--epochs", "0", "--epochs 0: must be 1 or more"),
    ("--time-budget", "0", "--time-budget 0: must be above 0"),
    ("--threads", "-2", "--threads -2: must be 0"),
    ("--arch", "c8,,p", "--arch: an empty token in 'c8,,p'"),
    ("--arch", "c8,p,", "--arch: an empty token in 'c8,p,'"),
    ("--hidden", "64,,32", "argument --hidden: an empty token in '64,,32'"),
])
def test_bad_option_is_one_line_before_reading(tmp_path, option, value, says):
    """Nothing is read: the data folder does not even exist."""
    proc = cli("--data-dir", tmp_path / "absent", "--out-dir", tmp_path, option, value,
               cwd=tmp_path, threads=None)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr
    if option != "--hidden":  # (argparse's own errors come after its usage text)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / PREDICTION_NAMES["test"]).exists()


def test_bad_option_through_run_is_a_pynn_error(subset_dir, tmp_path):
    for settings in ({"dropout": 1.0}, {"label_smoothing": 1.0}, {"activation": "no-such-thing"}):
        with pytest.raises(pynn.PynnError, match="^--"):
            quiet_run(subset_dir, tmp_path, **settings)


@pytest.mark.parametrize("arch, layers", [("", 1), (" c4 , p ,f8 ", 7), ("f8", 3)])
def test_arch_without_hidden_layers_and_with_spaces(subset_dir, tmp_path, arch, layers):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--arch", arch, "--epochs", 1,
               "--runs-dir", "", "--model", "mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"model {layers} layers" in proc.stdout, proc.stdout


SHAPE_BUG = """
import pynn.layers
def forward(self, inp):  # a student's layer that returns the wrong shape
    return inp.view((inp.shape[0] * 2, inp.size // max(1, inp.shape[0]) // 2))
pynn.layers.Flatten.forward = forward
"""


def test_a_bug_is_a_traceback_and_exit_1(subset_dir, tmp_path):
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--arch", "c4,f8", "--epochs", 1,
               cwd=tmp_path, pre=SHAPE_BUG)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" in proc.stderr and "Linear input: expected" in proc.stderr, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1].startswith("error: this is a bug in pynn")


def test_a_failing_report_is_a_note(subset_dir, tmp_path):
    (tmp_path / "runs").write_text("a file where the run folders go\n")
    proc = cli("--data-dir", subset_dir, "--out-dir", tmp_path, "--epochs", 1, "--hidden", 16,
               cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "note: report not written: " in proc.stdout and "test accuracy" in proc.stdout
    assert len(parse_predictions(predictions(tmp_path)["test"])) == N_TEST


def test_validation_results_are_the_training_predictions_rows(subset_dir, tmp_path):
    """Each set is predicted once: the validation rows' predictions are those
    rows of the training predictions, which are what predict(x_val) gives
    (a row's prediction does not depend on the other rows of its batch)."""
    result, _ = quiet_run(subset_dir, tmp_path, arch="c4,p,f16", batchnorm="all", tta="flip",
                          epochs=1, save=str(tmp_path / "m.bin"))
    assert result["validation"]["accuracy"] == result["val_acc"]
    from pynn import serialize
    from pynn.data import gather, load_vectors
    model, norm = serialize.load(tmp_path / "m.bin")
    x = norm(load_vectors(subset_dir / CSV_NAMES["train_vectors"]))
    rows = [r for r in range(0, N_TRAIN, 3)] + [1, 7]  # another split, batches of other rows
    whole = model.predict(x, flip=True)
    alone = model.predict(gather(x, rows), flip=True)
    assert gather(whole, rows).tolist() == alone.tolist()


def test_an_arch_that_begins_with_dropout(subset_dir, tmp_path):
    """Input dropout: the first layer is no Linear, and the run knows the width anyway."""
    result, text = quiet_run(subset_dir, tmp_path, arch="d0.2,f16", save=str(tmp_path / "m.bin"))
    assert "Dropout(0.2)" in text and result["test_acc"] > 0.5
    from pynn import serialize
    assert serialize.load(tmp_path / "m.bin")[0].input_width() == 784
