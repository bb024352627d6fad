"""End-to-end learning: XOR, loss reduction with SGD and Adam, the lr schedule."""
import math
import random

import pytest

from pynn import (
    SGD,
    Adam,
    CrossEntropyLoss,
    Linear,
    Sequential,
    Tanh,
    get_threads,
    mlp,
    set_threads,
)
from pynn.budget import Budget
from pynn.config import configure
from pynn.tensor import Tensor
from pynn.train import accuracy, fit, lr_factor

from conftest import needs_threads
from reference import blobs

XOR_X = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
XOR_Y = [0, 1, 1, 0]


def train_steps(model, opt, x, y, steps):
    """Full-batch steps; returns the list of losses (before each step)."""
    loss_fn, losses = CrossEntropyLoss(), []
    for _ in range(steps):
        loss, _ = loss_fn.forward(model.forward(x), y)
        losses.append(loss)
        model.backward(loss_fn.backward())
        opt.step()
    return losses


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_with_adam(seed):
    rng = random.Random(seed)
    model = Sequential(Linear(2, 8, rng), Tanh(), Linear(8, 2, rng))
    x = Tensor.from_list(XOR_X, (4, 2))
    y = Tensor.from_list(XOR_Y, (4,), "int32")
    losses = train_steps(model, Adam(model.parameters(), lr=0.05), x, y, 300)
    assert all(math.isfinite(v) for v in losses)
    assert model.predict(x).tolist() == XOR_Y
    assert losses[-1] < 0.05 < losses[0]
    assert accuracy(model, x, y) == 1.0


@pytest.mark.parametrize("opt_name", ["sgd", "sgd_wd", "adam", "adamw"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_optimizers_reduce_loss(opt_name, activation):
    rng = random.Random(7)
    x, y = blobs(rng, 90, 6, 3)
    model = mlp([6, 16, 8, 3], activation, rng)
    opt = {"sgd": lambda p: SGD(p, lr=0.05, momentum=0.9),
           "sgd_wd": lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
           "adam": lambda p: Adam(p, lr=0.01),
           "adamw": lambda p: Adam(p, lr=0.01, weight_decay=1e-2)}[opt_name](model.parameters())
    before = accuracy(model, x, y)
    losses = train_steps(model, opt, x, y, 60)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy(model, x, y) >= max(before, 0.8)


def test_zero_lr_changes_nothing():
    rng = random.Random(3)
    x, y = blobs(rng, 12, 4, 2)
    for make in (lambda p: SGD(p, lr=0.0), lambda p: Adam(p, lr=0.0)):
        model = mlp([4, 5, 2], "relu", rng)
        before = [p.value.tolist() for p in model.parameters()]
        losses = train_steps(model, make(model.parameters()), x, y, 3)
        assert [p.value.tolist() for p in model.parameters()] == before
        assert losses[0] == losses[-1]


@pytest.mark.parametrize("make", [lambda p: SGD(p, lr=0.1, momentum=0.0, weight_decay=0.5),
                                  lambda p: Adam(p, lr=0.1, weight_decay=0.5)],
                         ids=["sgd", "adamw"])
def test_weight_decay_applies_to_weights_only(make):
    # zero gradients: only the decay acts, shrinking weights by lr*wd = 5 %;
    # two layers, so that weights and biases alternate in parameters() (the
    # optimizer puts the weights first in its flat array)
    rng = random.Random(0)
    model = Sequential(Linear(3, 2, rng), Linear(2, 2, rng))
    w1, b1, w2, b2 = model.parameters()
    b1.value.ptr[0:2], b2.value.ptr[0:2] = [1.0, -1.0], [0.5, 2.0]
    w0 = [w.value.tolist() for w in (w1, w2)]
    make(model.parameters()).step()  # grads are all zero after construction
    for w, before in zip((w1, w2), w0):
        assert w.value.tolist() == pytest.approx([v * 0.95 for v in before], rel=1e-6)
    assert b1.value.tolist() == [1.0, -1.0] and b2.value.tolist() == [0.5, 2.0]


def test_training_is_deterministic():
    def run():
        rng = random.Random(11)
        x, y = blobs(rng, 40, 5, 4)
        model = mlp([5, 12, 4], "tanh", rng)
        losses = train_steps(model, Adam(model.parameters(), lr=0.01), x, y, 20)
        return losses, [p.value.tolist() for p in model.parameters()]
    assert run() == run()


@pytest.mark.parametrize("batch_size", [1, 3, 10, 1000])
def test_predict_in_chunks_matches_one_forward(batch_size):
    rng = random.Random(9)
    x, _ = blobs(rng, 10, 4, 3)
    model = mlp([4, 6, 5], "leaky_relu", rng)
    logits = model.forward(x).tolist()
    want = [max(range(5), key=lambda v: (logits[b * 5 + v], -v)) for b in range(10)]
    assert model.predict(x, batch_size=batch_size).tolist() == want


class _Reporter:
    def __init__(self):
        self.epochs, self.notes = [], []

    def epoch(self, m):
        self.epochs.append(m)

    def note(self, text):
        self.notes.append(text)

    def progress(self, epoch, step, steps, seconds):
        pass


def test_fit_learns_blobs_and_keeps_best():
    rng = random.Random(5)
    x, y = blobs(rng, 120, 4, 3, spread=0.5)
    xv, yv = blobs(random.Random(5), 60, 4, 3, spread=0.5)  # same centers
    model = mlp([4, 16, 3], "relu", rng)
    cfg = configure("mlp", batch_size=16, epochs=8, warmup_epochs=1, schedule="cosine")
    reporter = _Reporter()
    history, best, stopped, _ = fit(model, Adam(model.parameters(), lr=0.01), x, y,
                                 rows=range(120), x_val=xv, y_val=yv, cfg=cfg,
                                 reporter=reporter, rng=rng,
                                 budget=Budget(60))
    assert stopped == "done"
    assert len(history) == len(reporter.epochs) == 8
    assert best == max(h["val_acc"] for h in history) >= 0.9
    assert accuracy(model, xv, yv) == best  # the model is left at its best epoch
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # cosine schedule: the last step's lr is close to 0
    assert history[-1]["lr"] < 0.01 * 0.05


def test_fit_only_touches_the_given_rows():
    # rows outside ``rows`` carry an invalid label: the loss would raise on them
    rng = random.Random(6)
    x, y = blobs(rng, 64, 4, 2, spread=0.4)
    labels = y.tolist()
    rows = [i for i in range(64) if i % 4]
    for i in range(0, 64, 4):
        labels[i] = 99
    y = Tensor.from_list(labels, (64,), "int32")
    model = mlp([4, 8, 2], "tanh", rng)
    cfg = configure("mlp", batch_size=8, epochs=3, warmup_epochs=0, schedule="constant")
    history, best, stopped, _ = fit(model, SGD(model.parameters(), lr=0.05), x, y, rows=rows,
                                 x_val=None, y_val=None, cfg=cfg, reporter=_Reporter(),
                                 rng=rng, budget=Budget(60))
    assert stopped == "done" and best is None and len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_fit_gives_up_after_repeated_divergence():
    from pynn import PynnError
    rng = random.Random(8)
    x, y = blobs(rng, 32, 4, 2)
    model = mlp([4, 8, 2], "relu", rng)
    cfg = configure("mlp", batch_size=8, epochs=5, warmup_epochs=0, schedule="constant")
    reporter = _Reporter()
    with pytest.raises(PynnError, match="diverged"):
        fit(model, Adam(model.parameters(), lr=1e30), x, y, rows=range(32), x_val=x,
            y_val=y, cfg=cfg, reporter=reporter, rng=rng, budget=Budget(60))
    assert len(reporter.notes) == 3  # MAX_RECOVERIES notes, then the error


class _Cores:
    """A pynn.cpu.SharedCores whose looks at the machine give ``counts`` in turn"""

    def __init__(self, threads, counts):
        self.threads, self.counts, self.looks = threads, list(counts), 0

    def update(self):
        self.looks += 1
        self.threads = self.counts.pop(0)
        return self.threads


@needs_threads
def test_fit_fits_the_threads_to_the_free_cores_between_epochs():
    # products of 32 x 64 x 128: large enough to run on every thread (csrc/internal.h PAR_MIN_FLOPS)
    rng = random.Random(9)
    x, y = blobs(rng, 128, 64, 10)
    cfg = configure("mlp", batch_size=32, epochs=4, warmup_epochs=0, schedule="constant")

    def run(cores):
        model = mlp([64, 128, 10], "relu", random.Random(3))
        reporter = _Reporter()
        history, _, _, _ = fit(model, SGD(model.parameters(), lr=0.05), x, y, rows=range(128),
                               x_val=None, y_val=None, cfg=cfg, reporter=reporter,
                               rng=random.Random(4), budget=Budget(60), cores=cores)
        return [h["train_loss"] for h in history], reporter.notes

    before = get_threads()
    try:
        set_threads(2)
        cores = _Cores(2, [1, 1, 2])
        losses, notes = run(cores)
        assert cores.looks == 3  # after each epoch but the last
        assert get_threads() == 2
        assert notes == [f"threads {a} -> {b}: the cores other processes left free during the "
                         "last epoch (the results do not depend on it)" for a, b in ((2, 1), (1, 2))]
        assert losses == run(None)[0]  # the same losses, bit for bit, on two threads throughout
    finally:
        set_threads(before)


# ---- learning-rate schedule -------------------------------------------------------

def test_lr_cosine_without_warmup():
    total = 1000
    assert lr_factor(0, total, 0, "cosine") == 1.0
    assert lr_factor(total // 2, total, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(total - 1, total, 0, "cosine") == pytest.approx(0.0, abs=1e-5)
    assert lr_factor(total, total, 0, "cosine") == pytest.approx(0.0, abs=1e-12)
    f = [lr_factor(s, total, 0, "cosine") for s in range(total)]
    assert all(a >= b for a, b in zip(f, f[1:]))  # never increases
    assert all(0.0 <= v <= 1.0 for v in f)


def test_lr_warmup_ramps_linearly_then_cosine():
    total, warmup = 200, 10
    ramp = [lr_factor(s, total, warmup, "cosine") for s in range(warmup)]
    assert ramp == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    steps = [b - a for a, b in zip(ramp, ramp[1:])]
    assert steps == pytest.approx([1 / warmup] * (warmup - 1))  # linear
    assert ramp[-1] == 1.0
    assert lr_factor(warmup, total, warmup, "cosine") == 1.0  # cosine starts at 1
    mid = warmup + (total - warmup) // 2
    assert lr_factor(mid, total, warmup, "cosine") == pytest.approx(0.5)
    assert lr_factor(total - 1, total, warmup, "cosine") < 1e-3


def test_lr_constant_schedule():
    assert [lr_factor(s, 50, 0, "constant") for s in range(50)] == [1.0] * 50
    assert lr_factor(0, 50, 5, "constant") == pytest.approx(0.2)
    assert lr_factor(4, 50, 5, "constant") == 1.0
    assert lr_factor(49, 50, 5, "constant") == 1.0


def test_lr_warmup_longer_than_training():
    # total <= warmup: ramp, then a flat 1 (no division by zero)
    assert lr_factor(0, 3, 5, "cosine") == pytest.approx(0.2)
    assert lr_factor(5, 5, 5, "cosine") == 1.0
    assert lr_factor(0, 0, 0, "cosine") == 1.0


# ---- the lecture's three algorithms: batch, online, minibatch ---------------------

def one_epoch(model, opt, x, y, batch_size, rows):
    cfg = configure("mlp", batch_size=batch_size, epochs=1, warmup_epochs=0, schedule="constant")
    return fit(model, opt, x, y, rows=rows, x_val=None, y_val=None, cfg=cfg,
               reporter=_Reporter(), rng=random.Random(1), budget=Budget(60))


def test_batch_gradient_descent_is_one_step_on_the_mean_gradient(monkeypatch):
    """--batch-size 0: one step per epoch, w -= lr * dE/dw of the mean loss over
    all rows; computed in chunks (7 rows here: 3 chunks of 7, 7 and 6), it is
    the gradient of one forward pass over all 20 rows."""
    import pynn.train

    monkeypatch.setattr(pynn.train, "FULL_BATCH_CHUNK", 7)
    rng = random.Random(12)
    x, y = blobs(rng, 20, 4, 3)
    model = mlp([4, 6, 3], "tanh", random.Random(2))
    twin = mlp([4, 6, 3], "tanh", random.Random(2))
    opt = SGD(model.parameters(), lr=0.5, momentum=0.0)
    history, _, stopped, _ = one_epoch(model, opt, x, y, 0, range(20))
    # the twin: one forward and backward pass of all 20 rows, one step
    twin_opt = SGD(twin.parameters(), lr=0.5, momentum=0.0)
    loss_fn = CrossEntropyLoss()
    loss, _ = loss_fn.forward(twin.forward(x), y)
    twin.backward(loss_fn.backward())
    twin_opt.step()
    assert stopped == "done" and abs(history[0]["train_loss"] - loss) < 1e-5
    for p, q in zip(model.parameters(), twin.parameters()):
        assert all(abs(a - b) < 1e-6 for a, b in zip(p.value.tolist(), q.value.tolist()))


def test_online_algorithm_steps_once_per_row():
    rng = random.Random(13)
    x, y = blobs(rng, 30, 4, 2, spread=0.4)
    model = mlp([4, 5, 2], "relu", rng)
    opt = Adam(model.parameters(), lr=0.01)
    history, _, _, _ = one_epoch(model, opt, x, y, 1, range(30))
    assert opt.t == 30 and len(history) == 1


def test_validation_loss_is_the_mean_loss_of_the_validation_rows():
    """fit() reports each epoch's validation loss: the mean loss of the kept
    model over x_val in evaluation mode (dropout off), as one forward pass
    computes it; 2345 rows, so predict() takes them in 3 batches (1000, 1000,
    345) whose losses are weighted by their sizes."""
    rng = random.Random(14)
    x, y = blobs(rng, 40, 4, 3)
    xv, yv = blobs(random.Random(15), 2345, 4, 3)
    model = mlp([4, 8, 3], "tanh", rng, dropout=0.5)
    cfg = configure("mlp", batch_size=8, epochs=1, warmup_epochs=0, schedule="constant")
    history, _, _, _ = fit(model, Adam(model.parameters(), lr=0.01), x, y, rows=range(40),
                        x_val=xv, y_val=yv, cfg=cfg, reporter=_Reporter(), rng=rng,
                        budget=Budget(60))
    model.train(False)
    loss, _ = CrossEntropyLoss().forward(model.forward(xv), yv)
    assert abs(history[0]["val_loss"] - loss) < 1e-5


def test_online_algorithm_refuses_batch_norm_after_a_dense_layer():
    from pynn import PynnError, build

    rng = random.Random(16)
    x, y = blobs(rng, 10, 4, 2)
    model = build("f8", 4, 2, "relu", rng, batchnorm="all")
    with pytest.raises(PynnError, match="--batch-size 1: batch norm after a dense layer"):
        one_epoch(model, SGD(model.parameters(), lr=0.1), x, y, 1, range(10))


def test_weight_averaging_follows_the_formula_and_is_what_predicts():
    """--ema: after each step the average moves (1 - decay_t) of the way to
    the weights, decay_t = min(decay, (1 + t) / (10 + t)); fit() validates
    and keeps the average, so the model it leaves holds averaged weights."""
    from pynn.train import Average
    rng = random.Random(4)
    x, y = blobs(rng, 64, 5, 3)
    model = mlp([5, 8, 3], "relu", random.Random(1))
    opt = Adam(model.parameters(), lr=0.05)
    average = Average(model, 0.9)
    want = model.parameters().values.tolist()
    for t in range(1, 6):
        train_steps(model, opt, x, y, 1)
        average.update()
        d = min(0.9, (1 + t) / (10 + t))
        now = model.parameters().values.tolist()
        want = [a + (1 - d) * (w - a) for a, w in zip(want, now)]
    got = average.state()[0].tolist()
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    live = model.parameters().values.tolist()
    with average.applied():
        assert model.parameters().values.tolist() == got
    assert model.parameters().values.tolist() == live

    def run(ema):
        m = mlp([5, 8, 3], "relu", random.Random(1))
        cfg = configure("mlp", batch_size=8, epochs=3, ema=ema)
        fitted = fit(m, Adam(m.parameters(), lr=0.05), x, y, range(64), x, y, cfg,
                     _Reporter(), random.Random(2), Budget(60))
        return m, fitted
    plain, _ = run(0.0)
    averaged, fitted = run(0.9)
    assert averaged.parameters().values.tolist() != plain.parameters().values.tolist()
    assert accuracy(averaged, x, y) == fitted.val_acc
