"""Bad input and faults, end to end: every malformed input of
scripts/bad_inputs.py, benign variations, kills and Ctrl-C at each stage, the
time budget, divergence, an unwritable output folder.

The data is synthetic (scripts/bad_inputs.synthetic: 40 + 20 rows of 784
pixels), so these tests need neither data/ nor much time.
"""
import io
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pynn
from pynn import Adam, PynnError, Tensor, mlp
from pynn.budget import AFTER_TRAINING, Budget
from pynn.config import configure
from pynn.io import PREDICTION_NAMES, check_writable
from pynn.report import Reporter
from pynn.train import MAX_RECOVERIES, accuracy, fit

import reference
from conftest import SCRIPTS_DIR, load_script

BAD = load_script("bad_inputs")
RUN = load_script("run")
RUN_PY = SCRIPTS_DIR / "run.py"
OLD = {"train": b"old train predictions\n", "test": b"old test predictions\n"}


def old_predictions(out):
    out.mkdir(parents=True, exist_ok=True)
    for key, name in PREDICTION_NAMES.items():
        (out / name).write_bytes(OLD[key])


def predictions(out):
    return {k: (Path(out) / n).read_bytes() if (Path(out) / n).exists() else None
            for k, n in PREDICTION_NAMES.items()}


def complete(data, n):
    """True when ``data`` is a whole prediction file of n labels."""
    if data is None or not data.endswith(b"\n"):
        return False
    lines = data.decode("ascii").split("\n")[:-1]
    return len(lines) == n and all(re.fullmatch(r"[0-9]", v) for v in lines)


def temp_files(out):
    return [f for f in os.listdir(out) if f.endswith(".tmp")]


# ---- every bad input: one line, exit 2, nothing written ----------------------------

@pytest.mark.parametrize("case", sorted(BAD.CASES))
def test_bad_input(case, tmp_path, capsys):
    argv, prefix = BAD.prepare_case(case, tmp_path)
    out = tmp_path / "out"
    old_predictions(out)
    code = RUN.main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (captured.out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(prefix), (prefix, err)
    assert BAD.CASES[case][3] in err, err
    assert "Traceback" not in err + captured.out
    assert predictions(out) == OLD and temp_files(out) == []


@pytest.mark.parametrize("case", ["missing-data-folder", "label-huge-class-number",
                                  "absurdly-long-line-of-commas", "binary-garbage-vectors",
                                  "test-vectors-narrower"])
def test_bad_input_through_a_real_process(case, tmp_path):
    code, out, err, prefix = BAD.run_case(case, tmp_path)
    assert code == 2 and err.startswith(prefix) and err.count("\n") == 1, (out, err)
    assert "Traceback" not in out + err


@pytest.fixture(scope="module")
def plain_predictions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    data = BAD.synthetic(folder / "data")
    assert RUN.main(["--data-dir", str(data), "--out-dir", str(folder), *BAD.SMALL_RUN]) == 0
    return predictions(folder)


@pytest.mark.parametrize("case", sorted(BAD.NOTED))
def test_bad_test_labels_are_a_note_and_the_predictions_are_written(case, tmp_path,
                                                                     plain_predictions, capsys):
    """The test labels only feed the printed accuracy: a bad file is noted
    (at once, before training, when its format or length is wrong), and the
    graded files are those of the same run with good labels."""
    argv, prefix = BAD.prepare_case(case, tmp_path)
    out = tmp_path / "out"
    old_predictions(out)
    code = RUN.main(argv)
    captured = capsys.readouterr()
    assert code == 0 and captured.err == "", captured.err
    lines = captured.out.splitlines()
    notes = [n for n, line in enumerate(lines) if line.startswith(BAD.NOTE)]
    assert len(notes) == 1 and lines[notes[0]].startswith(prefix), captured.out
    assert BAD.NOTED[case][3] in lines[notes[0]]
    first_epoch = next(n for n, line in enumerate(lines) if line.startswith("epoch   1"))
    if case != "test-label-unseen-class":  # its values are read only after training
        assert notes[0] < first_epoch
    assert not any(line.startswith("test accuracy") for line in lines)
    assert predictions(out) == plain_predictions and temp_files(out) == []


@pytest.mark.parametrize("variation", sorted(BAD.BENIGN))
def test_benign_variations_are_accepted_silently(variation, tmp_path, plain_predictions, capsys):
    data = BAD.synthetic(tmp_path / "data")
    for path in data.iterdir():
        path.write_bytes(BAD.BENIGN[variation](path.read_bytes()))
    assert RUN.main(["--data-dir", str(data), "--out-dir", str(tmp_path), *BAD.SMALL_RUN]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "note:" not in captured.out
    assert predictions(tmp_path) == plain_predictions


# ---- kills and Ctrl-C --------------------------------------------------------------

def start(tmp_path, *args, pre=""):
    """scripts/run.py on a synthetic data folder in a new process (``pre``: Python
    run first, e.g. to plant a fault); prediction files of an earlier run exist."""
    data = BAD.synthetic(tmp_path / "data")
    out = tmp_path / "out"
    old_predictions(out)
    argv = [str(RUN_PY), "--data-dir", str(data), "--out-dir", str(out), "--hidden", "8",
            "--threads", "1", *map(str, args)]
    code = (f"{pre}\nimport runpy, sys\nsys.argv = {argv!r}\n"
            f"runpy.run_path({str(RUN_PY)!r}, run_name='__main__')\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    return proc, out


def wait_for_epoch(proc):
    """Read stdout up to the first epoch line; returns what was read."""
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        seen.append(line)
        if re.match(r"epoch\s+\d+ ", line) or time.monotonic() > deadline:
            break
    return "".join(seen)


def test_sigint_during_training_predicts_with_the_best_weights(tmp_path):
    proc, out = start(tmp_path, "--epochs", 1000000, "--time-budget", 120)
    head = wait_for_epoch(proc)
    assert "epoch" in head, head + proc.stderr.read()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 0, (rest, err)
    assert "note: interrupted: predicting with the best weights so far" in rest
    assert "Traceback" not in err
    files = predictions(out)
    assert complete(files["train"], BAD.N_TRAIN) and complete(files["test"], BAD.N_TEST)
    assert temp_files(out) == []


def test_sigkill_during_training_leaves_old_files(tmp_path):
    proc, out = start(tmp_path, "--epochs", 1000000, "--time-budget", 120)
    assert "epoch" in wait_for_epoch(proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert predictions(out) == OLD and temp_files(out) == []


# A fault planted in pynn.io._stage (every atomic write goes through it) while
# it writes one prediction file: half of the first chunk goes out, then the signal.
FAULT_IN_WRITE = """
import os, signal, pynn.io
_stage = pynn.io._stage
def stage(path, chunks):
    if os.path.basename(str(path)) != {name!r}:
        return _stage(path, chunks)
    def faulty():
        for chunk in chunks:
            yield chunk[:len(chunk) // 2]
            os.kill(os.getpid(), signal.{sig})
            yield chunk[len(chunk) // 2:]
    return _stage(path, faulty())
pynn.io._stage = stage
"""


@pytest.mark.parametrize("name", sorted(PREDICTION_NAMES.values()))
def test_sigkill_while_writing_never_leaves_a_truncated_file(tmp_path, name):
    proc, out = start(tmp_path, "--epochs", 1, pre=FAULT_IN_WRITE.format(name=name, sig="SIGKILL"))
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    files = predictions(out)
    sizes = {"train": BAD.N_TRAIN, "test": BAD.N_TEST}
    for key, data in files.items():  # old, or new and whole
        assert data == OLD[key] or complete(data, sizes[key]), (key, data)
    # both files change together: killed while staging either, both are still old
    assert files == OLD
    # the half-written temporary files are what SIGKILL leaves: hidden, never a target
    left = temp_files(out)
    assert any(f.startswith(f".{name}.") for f in left)
    assert all(f.startswith(tuple(f".{n}." for n in PREDICTION_NAMES.values())) for f in left)


def test_sigint_while_writing_is_a_clean_interrupt(tmp_path):
    name = PREDICTION_NAMES["train"]
    proc, out = start(tmp_path, "--epochs", 1, pre=FAULT_IN_WRITE.format(name=name, sig="SIGINT"))
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, err)
    assert err == "error: interrupted\n"
    assert predictions(out) == OLD and temp_files(out) == []


SIGINT_AFTER_TRAINING = """
import os, signal, pynn.model, pynn.app
_fit, _predict, trained = pynn.app.fit, pynn.model.Sequential.predict, []
def fit(*args, **kwargs):
    result = _fit(*args, **kwargs)
    trained.append(True)
    return result
def predict(self, x, *args, **kwargs):
    if trained:
        os.kill(os.getpid(), signal.SIGINT)
    return _predict(self, x, *args, **kwargs)
pynn.app.fit, pynn.model.Sequential.predict = fit, predict
"""


def test_sigint_while_predicting_is_a_clean_interrupt(tmp_path):
    proc, out = start(tmp_path, "--epochs", 1, pre=SIGINT_AFTER_TRAINING)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, err)
    assert err == "error: interrupted\n"
    assert predictions(out) == OLD and temp_files(out) == []


# ---- two runs at once into one folder ------------------------------------------------

# Run A renames its first prediction file, then waits (between its two renames)
# until the test lets it go; run B says when it starts writing its pair.
PAUSE_BETWEEN_RENAMES = """
import os, time, pynn.io
_replace = os.replace
def replace(src, dst):
    _replace(src, dst)
    if str(dst).endswith({first!r}):
        open({paused!r}, "w").close()
        while not os.path.exists({go!r}):
            time.sleep(0.01)
pynn.io.os.replace = replace
"""
ANNOUNCE_WRITE = """
import pynn.io
_write = pynn.io.write_files_atomic
def write(files):
    open({writing!r}, "w").close()
    return _write(files)
pynn.io.write_prediction_files.__globals__["write_files_atomic"] = write
"""


def run_process(data, out, seed, pre=""):
    argv = [str(RUN_PY), "--data-dir", str(data), "--out-dir", str(out), *BAD.SMALL_RUN,
            "--seed", str(seed)]
    code = (f"{pre}\nimport runpy, sys\nsys.argv = {argv!r}\n"
            f"runpy.run_path({str(RUN_PY)!r}, run_name='__main__')\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.01)


def test_two_runs_at_once_leave_one_runs_pair(tmp_path):
    """Run A is held between its two renames while run B writes both files:
    B waits for A's lock, so the pair left is B's whole, never A's train file
    with B's test file; each run has its own run folder."""
    data = BAD.synthetic(tmp_path / "data")
    alone = {}
    for seed in (0, 1):  # what each run writes on its own
        proc = run_process(data, tmp_path / f"alone{seed}", seed)
        assert proc.wait(timeout=120) == 0, proc.communicate()
        alone[seed] = predictions(tmp_path / f"alone{seed}")
    assert alone[0]["train"] != alone[1]["train"] and alone[0]["test"] != alone[1]["test"]
    out, marks = tmp_path / "out", {k: tmp_path / k for k in ("paused", "go", "writing")}
    out.mkdir()
    a = run_process(data, out, 0, PAUSE_BETWEEN_RENAMES.format(
        first=PREDICTION_NAMES["train"], paused=str(marks["paused"]), go=str(marks["go"])))
    b = None
    try:
        wait_for(marks["paused"], a)
        b = run_process(data, out, 1, ANNOUNCE_WRITE.format(writing=str(marks["writing"])))
        wait_for(marks["writing"], b)
        time.sleep(1.0)  # unlocked, B would write both files in a few milliseconds
        assert b.poll() is None, "run B wrote while run A was between its two renames"
    finally:
        marks["go"].touch()  # never leave A waiting
        for proc in (a, b):
            if proc is not None and proc.wait(timeout=60) != 0:
                pytest.fail(f"a run failed: {proc.communicate()}")
    assert predictions(out) == alone[1] and temp_files(out) == []
    assert len(list((out / "runs").iterdir())) == 2


# ---- the time budget -----------------------------------------------------------------

def blobs(rng, n, d, classes, spread=1.0):
    """reference.blobs with wider-spread centers, as these tests were tuned on"""
    return reference.blobs(rng, n, d, classes, spread, extent=3.0)


class Notes(Reporter):
    def __init__(self, hook=None):
        super().__init__(io.StringIO())
        self.notes, self.epochs, self.hook = [], [], hook

    def note(self, text):
        self.notes.append(text)

    def epoch(self, m):
        self.epochs.append(m)

    def progress(self, epoch, step, steps, seconds):
        if self.hook:
            self.hook(epoch, step)


def small_fit(reporter, budget=60.0, epochs=6, lr=0.01, seed=3, n=400):
    rng = random.Random(seed)
    x, y = blobs(rng, n, 8, 4, spread=2.0)
    xv, yv = blobs(random.Random(seed), 200, 8, 4, spread=2.0)
    model = mlp([8, 32, 4], "relu", rng)
    cfg = configure("mlp", batch_size=16, epochs=epochs, warmup_epochs=0, schedule="constant")
    t0 = time.perf_counter()
    history, best, stopped, _ = fit(model, Adam(model.parameters(), lr=lr), x, y, range(n), xv, yv,
                                 cfg, reporter, rng, Budget(budget, start=t0))
    return model, (xv, yv), history, best, stopped, time.perf_counter() - t0


def test_time_budget_shortens_the_plan_and_keeps_the_best_model():
    budget = AFTER_TRAINING + 1.0  # fit() alone: what follows training is the allowance
    notes = Notes()
    model, (xv, yv), history, best, stopped, seconds = small_fit(notes, budget, epochs=10**6)
    # the first epoch shows 10**6 epochs cannot fit: the plan shrinks to what
    # does, and the run ends with its schedule done (or, should an epoch run
    # slow, at the deadline: one step and one validation pass past it, no more)
    assert any("the learning-rate schedule fitted to them" in n for n in notes.notes), notes.notes
    assert stopped in ("done", "time budget")
    assert seconds < budget + 0.5, seconds
    assert len(history) >= 2
    assert best == max(m["val_acc"] for m in history)
    assert accuracy(model, xv, yv) == best  # the best epoch's weights, not the last


def test_cli_time_budget_counts_from_the_start(tmp_path):
    """The budget is the whole run, start-up, prediction and report included."""
    t0 = time.monotonic()
    proc, out = start(tmp_path, "--epochs", 10**6, "--time-budget", 3.0)
    stdout, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert re.search(r"note: 1000000 epochs would take about \d+s, over the 3s budget: "
                     r"training [\d.e+]+ epochs \(\d+ steps\)", stdout), stdout
    assert elapsed < 3.0 + 0.7, elapsed
    files = predictions(out)
    assert complete(files["train"], BAD.N_TRAIN) and complete(files["test"], BAD.N_TEST)


def test_keyboard_interrupt_in_fit_keeps_the_best_epoch():
    def interrupt(epoch, step):
        if epoch == 5:
            raise KeyboardInterrupt
    model, (xv, yv), history, best, stopped, _ = small_fit(Notes(interrupt), epochs=50)
    assert stopped == "interrupted" and len(history) == 4
    assert best == max(m["val_acc"] for m in history)
    assert accuracy(model, xv, yv) == best


# ---- divergence --------------------------------------------------------------------

def poison(model):
    """NaN into the first layer's weights: behind a ReLU (NaN -> 0) the loss
    stays finite, so only the end-of-epoch check sees it."""
    w = model.parameters()[0].value
    w.ptr[0:w.size] = [math.nan] * w.size


def test_nan_weights_behind_relu_are_caught_at_the_end_of_the_epoch():
    state = {}

    def hook(epoch, step):
        if epoch == 3 and "poisoned" not in state:
            state["poisoned"] = True
            poison(state["model"])

    reporter = Notes(hook)
    rng = random.Random(4)
    x, y = blobs(rng, 400, 8, 4, spread=2.0)
    model = mlp([8, 32, 4], "relu", rng)
    state["model"] = model
    cfg = configure("mlp", batch_size=16, epochs=5, warmup_epochs=0, schedule="constant")
    history, best, stopped, _ = fit(model, Adam(model.parameters(), lr=0.01), x, y, range(400),
                                 x, y, cfg, reporter, rng, Budget(60))
    assert state["poisoned"] and stopped == "done"
    assert reporter.notes == [("non-finite weights at epoch 3: weights restored, "
                               "learning rate halved")]
    assert history[2]["val_acc"] is None  # the poisoned epoch is never a candidate
    assert best == max(m["val_acc"] for m in history if m["val_acc"] is not None)
    assert all(pynn._lib.pynn_all_finite(p.value.ptr, p.value.size) for p in model.parameters())
    assert accuracy(model, x, y) == best


def test_nan_weights_every_epoch_end_in_an_error():
    state = {}
    reporter = Notes(lambda epoch, step: poison(state["model"]))
    rng = random.Random(4)
    x, y = blobs(rng, 64, 8, 4)
    model = state["model"] = mlp([8, 16, 4], "relu", rng)
    cfg = configure("mlp", batch_size=16, epochs=10, warmup_epochs=0, schedule="constant")
    with pytest.raises(PynnError, match=r"training diverged \(non-finite weights\) 4 times"):
        fit(model, Adam(model.parameters(), lr=0.01), x, y, range(64), x, y, cfg, reporter,
            rng, Budget(60))
    assert len(reporter.notes) == MAX_RECOVERIES


@pytest.mark.parametrize("optimizer, lr", [("adam", "1e30"), ("adam", "1e38"), ("sgd", "1e6")])
def test_cli_divergence_is_an_error_and_writes_nothing(tmp_path, optimizer, lr):
    proc, out = start(tmp_path, "--epochs", 20, "--batch-size", 8, "--hidden", "64",
                      "--optimizer", optimizer, "--lr", lr)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (stdout, err)
    assert re.fullmatch(r"error: training diverged \(non-finite (loss|weights)\) 4 times; "
                        r"try a lower --lr\n", err), err
    assert stdout.count("weights restored, learning rate halved") == MAX_RECOVERIES
    assert predictions(out) == OLD and temp_files(out) == []


def test_cli_recovers_from_one_divergence(tmp_path):
    """A loss that turns non-finite once: weights back, lr halved, the run goes on."""
    pre = """
import pynn.loss
_forward, calls = pynn.loss.CrossEntropyLoss.forward, [0]
def forward(self, logits, targets):
    loss, correct = _forward(self, logits, targets)
    calls[0] += 1
    return (float("nan") if calls[0] == 2 else loss), correct
pynn.loss.CrossEntropyLoss.forward = forward
"""
    proc, out = start(tmp_path, "--epochs", 2, "--batch-size", 8, pre=pre)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "note: non-finite loss at epoch 1: weights restored, learning rate halved" in stdout
    files = predictions(out)
    assert complete(files["train"], BAD.N_TRAIN) and complete(files["test"], BAD.N_TEST)


# ---- the output folder -------------------------------------------------------------

def test_unwritable_out_dir_is_named_before_training(tmp_path, monkeypatch, capsys):
    """chmod cannot make a folder unwritable for root: the refusal is planted."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PynnError, match="output folder is not writable"):
        check_writable(out)
    data = BAD.synthetic(tmp_path / "data")
    assert RUN.main(["--data-dir", str(data), "--out-dir", str(out), *BAD.SMALL_RUN]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {out}: output folder is not writable (Permission denied)\n"
    assert "epoch" not in captured.out and "model" not in captured.out


# ---- several files that change together -----------------------------------------

def labels(values):
    return Tensor.from_list(values, dtype="int32")


def test_prediction_files_change_together_or_not_at_all(tmp_path, monkeypatch):
    from pynn import io as pio
    paths = {k: tmp_path / n for k, n in PREDICTION_NAMES.items()}
    old_predictions(tmp_path)
    stage = pio._stage

    def interrupted_on_the_second(path, chunks):
        if path == paths["test"]:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the test file is staged
        return stage(path, chunks)

    monkeypatch.setattr(pio, "_stage", interrupted_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        pio.write_prediction_files({paths["train"]: labels([1, 2]), paths["test"]: labels([3])})
    assert predictions(tmp_path) == OLD and temp_files(tmp_path) == []
    monkeypatch.setattr(pio, "_stage", stage)
    pio.write_prediction_files({paths["train"]: labels([1, 2]), paths["test"]: labels([3])})
    assert predictions(tmp_path) == {"train": b"1\n2\n", "test": b"3\n"}


def test_ctrl_c_during_the_renames_waits_for_the_last(tmp_path, monkeypatch):
    from pynn import io as pio
    paths = {k: tmp_path / n for k, n in PREDICTION_NAMES.items()}
    old_predictions(tmp_path)
    replace = os.replace

    def replace_then_sigint(src, dst):
        replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pio.os, "replace", replace_then_sigint)
    with pytest.raises(KeyboardInterrupt):  # raised, but after both renames
        pio.write_prediction_files({paths["train"]: labels([4]), paths["test"]: labels([5])})
    monkeypatch.undo()
    assert predictions(tmp_path) == {"train": b"4\n", "test": b"5\n"}
    assert temp_files(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_just_after_the_rename_stays_an_interrupt(tmp_path, monkeypatch):
    """It once became FileNotFoundError: the clean-up unlinked a renamed file."""
    from pynn import io as pio
    replace = os.replace

    def replace_then_interrupt(src, dst):
        replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(pio.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pio.write_atomic(tmp_path / "p.csv", [b"1\n"])
    assert (tmp_path / "p.csv").read_bytes() == b"1\n" and temp_files(tmp_path) == []
