"""The CNN as a whole: gradient checks of small networks with every new layer,
the fused batch-norm/ReLU/pool path against the layers one by one, thread
invariance of a training step, test-time flips, --arch parsing and building,
and the time budget that shortens the plan instead of cutting the schedule off."""
import io
import random

import pytest

from pynn import (
    Adam,
    Conv2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    MaxPool2d,
    PynnError,
    ReLU,
    Residual,
    Sequential,
    build,
    get_threads,
    set_threads,
)
from pynn._kernels import lib
from pynn.arch import parse as parse_arch
from pynn.budget import AFTER_TRAINING, Budget
from pynn.config import configure
from pynn.fuse import Conv2dBatchNormReLUMaxPool, fuse, without
from pynn.tensor import Tensor
from pynn.train import Plan, accuracy, fit, planned_steps

from conftest import THREAD_COUNTS, needs_threads
from reference import blobs

EPS = 1e-2
RTOL, ATOL = 2e-2, 2e-4


def batch(rng, B, width, classes):
    x = Tensor.from_list([rng.uniform(-1.5, 1.5) for _ in range(B * width)], (B, width))
    y = Tensor.from_list([rng.randrange(classes) for _ in range(B)], (B,), "int32")
    return x, y


def pool_pattern(model):
    """Which input won each max-pool window (a finite difference across a
    change of winner is meaningless, so the checks assert none happens)."""
    out = []
    for layer in model.modules():
        if isinstance(layer, MaxPool2d):
            B, H, W, C = layer._inp.shape
            v = layer._inp.tolist()
            for b in range(B):
                for y in range(H // 2):
                    for x in range(W // 2):
                        for c in range(C):
                            at = [((b * H + 2 * y + dy) * W + 2 * x + dx) * C + c
                                  for dy in (0, 1) for dx in (0, 1)]
                            out.append(max(range(4), key=lambda k: (v[at[k]], -k)))
    return out


def relu_pattern(model):
    """The sign of every value that entered a ReLU (in the last forward of the
    plain layers; a residual block's sum too): a finite difference across a
    sign change is meaningless too."""
    out = []
    for layer in model.modules():
        if isinstance(layer, ReLU):
            out += [v > 0 for v in layer._inp.tolist()]
        elif isinstance(layer, Residual):
            out += [v > 0 for v in layer._y.tolist()]  # relu(x + F(x)) > 0 where the sum is
    return out


def loss_of(model, loss_fn, x, y):
    """The loss of ``model`` (a plain model or a fused plan) and the pattern of
    pool winners and ReLU signs, read off its plain layers run on x."""
    loss, _ = loss_fn.forward(model.forward(x), y)
    plain = model.plain
    if plain is not model:
        plain.forward(x)  # the same weights: the plan's layers are plain's
    return loss, (pool_pattern(plain), relu_pattern(plain))


def gradcheck(model, x, y, smoothing=0.0, eps=EPS):
    """Central differences (steps of +-eps) of the mean loss against
    model.backward, for every parameter entry whose step moves no pool winner
    and flips no ReLU input (those few have no derivative to compare); a list
    of mismatches (empty: pass). ``model`` may be a fused plan (pynn.fuse): its backward is checked."""
    loss_fn = CrossEntropyLoss(smoothing)
    _, base = loss_of(model, loss_fn, x, y)
    model.backward(loss_fn.backward())
    grads = [p.grad.tolist() for p in model.parameters()]
    bad, skipped, total = [], 0, 0
    for p, g in zip(model.parameters(), grads):
        for i in range(p.value.size):
            v0 = p.value.ptr[i]
            p.value.ptr[i] = v0 + eps
            up, (lp, pp) = p.value.ptr[i], loss_of(model, loss_fn, x, y)
            p.value.ptr[i] = v0 - eps
            down, (lm, pm) = p.value.ptr[i], loss_of(model, loss_fn, x, y)
            p.value.ptr[i] = v0
            total += 1
            if pp != base or pm != base:
                skipped += 1
                continue
            num = (lp - lm) / (up - down)
            if not abs(num - g[i]) <= ATOL + RTOL * max(abs(num), abs(g[i])):
                bad.append(f"{p.name}[{i}]: numeric {num:.6g} analytic {g[i]:.6g}")
    assert skipped <= total // 10, f"{skipped} of {total} entries move a pool winner"
    return bad


@pytest.mark.parametrize("arch, width, batchnorm, smoothing", [
    ("c3,p,f5", 36, "conv", 0.0),        # conv + batch norm (training mode) + pool
    ("c2k5,c3,f4", 25, "all", 0.1),      # 5x5 kernel, two convs, dense batch norm, smoothing
    ("c3,p", 49, "off", 0.0),            # biases, an odd 7x7 image pooled
    ("c2,c2k1,p,p", 64, "conv", 0.2),    # 1x1 kernel, pooling twice
    ("c3,p,c4,g", 36, "conv", 0.0),      # global average pooling to the classes
])
def test_small_cnn_gradients(arch, width, batchnorm, smoothing):
    rng = random.Random(7)
    model = build(arch, width, 3, "tanh", rng, batchnorm=batchnorm)  # tanh: no kinks
    for p in model.parameters():  # non-trivial gammas, betas and biases
        if p.name in ("bias", "beta", "gamma"):
            p.value.ptr[0:p.value.size] = [rng.uniform(0.5, 1.5) if p.name == "gamma"
                                           else rng.uniform(-0.3, 0.3)
                                           for _ in range(p.value.size)]
    x, y = batch(rng, 3, width, 3)
    assert gradcheck(model, x, y, smoothing) == []


@pytest.mark.parametrize("fused", ["layers", "fused", "tails"])
@pytest.mark.parametrize("arch, width", [("c3,p,f5", 36), ("c3,p,c2,f4", 36), ("c2,p", 49)])
def test_small_relu_cnn_gradients(arch, width, fused):
    """The default's ReLU paths: conv, batch norm, ReLU and pool (fused: the
    first block in conv_batchnorm_relu_maxpool; "tails": the conv apart and
    the rest in batchnorm_relu_maxpool, as a later block runs), a conv block
    without pool and dense batch norm with ReLU (fused: batchnorm with
    relu=1), each checked as layers and as the fused plan."""
    rng = random.Random(11)
    model = build(arch, width, 3, "relu", rng, batchnorm="all")
    for p in model.parameters():
        if p.name in ("beta", "gamma"):
            p.value.ptr[0:p.value.size] = [rng.uniform(0.5, 1.5) if p.name == "gamma"
                                           else rng.uniform(-0.3, 0.3)
                                           for _ in range(p.value.size)]
    plan = {"layers": model, "fused": fuse(model),
            "tails": fuse(model, without(Conv2dBatchNormReLUMaxPool))}[fused]
    kinds = [type(layer).__name__ for layer in plan.layers]
    assert kinds.count("Conv2dBatchNormReLUMaxPool") == (fused == "fused" and "p" in arch)
    assert kinds.count("BatchNormReLUMaxPool") == (fused == "tails" and "p" in arch)
    x, y = batch(rng, 4, width, 3)
    assert gradcheck(plan, x, y, 0.1) == []


@pytest.mark.parametrize("arch, activation, batchnorm, fused", [
    ("c2,r2,f3", "relu", "all", False),  # the default's layers in a block
    ("c2,r2,f3", "relu", "all", True),   # its body's batch norm and ReLU in one kernel
    ("c2,r2,r2", "tanh", "off", False),  # two blocks in a row, convs with biases
])
def test_residual_block_gradients(arch, activation, batchnorm, fused):
    """Residual blocks, as layers and as the fused plan. A block's sum adds
    ReLU kinks after batch norm, whose every value moves with every weight:
    at the usual step of 1e-2, a third of the entries crossed one, so the
    step is 2e-3 here (in float32, smaller steps lose the difference)."""
    rng = random.Random(13)
    model = build(arch, 16, 3, activation, rng, batchnorm=batchnorm)
    for p in model.parameters():
        if p.name in ("beta", "gamma"):
            p.value.ptr[0:p.value.size] = [rng.uniform(0.5, 1.5) if p.name == "gamma"
                                           else rng.uniform(-0.3, 0.3)
                                           for _ in range(p.value.size)]
    plan = fuse(model) if fused else model
    block = next(layer for layer in plan.layers if isinstance(layer, Residual))
    body = ["Conv2d", "BatchNormReLU", "Conv2d", "BatchNorm2d"] if fused else \
        ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    if batchnorm == "all":
        assert [type(layer).__name__ for layer in block.body] == body
    x, y = batch(rng, 3, 16, 3)
    assert gradcheck(plan, x, y, 0.1, eps=2e-3) == []


def test_gradcheck_sees_a_missing_skip_gradient(monkeypatch):
    """The check can fail: a residual block whose backward drops the gradient
    around its body (dinp = dbody only) is caught."""
    import pynn.layers

    class NoSkip:
        def __getattr__(self, name):
            return getattr(lib, name)

        @staticmethod
        def residual_backward(dinp, dout, out, dbody, n):
            for i in range(n):
                dinp[i] = dbody[i]

    rng = random.Random(13)
    model = build("c3,r3,f4", 25, 3, "tanh", rng, batchnorm="off")
    monkeypatch.setattr(pynn.layers, "lib", NoSkip())
    x, y = batch(rng, 3, 25, 3)
    assert gradcheck(model, x, y, eps=2e-3) != []


def test_gradcheck_sees_a_wrong_conv_gradient():
    """The check can fail: a conv whose weight gradient is scaled is caught."""
    class Scaled(Conv2d):
        def backward(self, dout):
            dinp = super().backward(dout)
            self.weight.grad.ptr[0] *= 1.1
            return dinp

    rng = random.Random(3)
    model = Sequential(Scaled(1, 2, 3, rng), Flatten(), Linear(32, 3, rng), input_shape=(4, 4, 1))
    x, y = batch(rng, 2, 16, 3)
    assert len(gradcheck(model, x, y)) >= 1


def cnn_step_results(threads, fused):
    set_threads(threads)
    rng = random.Random(11)
    model = build("c8,p,c16,r16,p,f32", 784, 10, "relu", rng)
    model = fuse(model) if fused else model
    opt = Adam(model.parameters(), lr=1e-3)
    loss_fn = CrossEntropyLoss(0.1)
    x, y = batch(rng, 48, 784, 10)
    losses = []
    for _ in range(2):
        loss, _ = loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(loss)
    return losses, [p.value.tolist() for p in model.parameters()], model.predict(x).tolist()


@needs_threads
@pytest.mark.parametrize("fused", [False, True], ids=["layers", "fused"])
def test_cnn_step_is_the_same_on_any_thread_count(fused):
    before = get_threads()
    try:
        one, *others = (cnn_step_results(t, fused) for t in THREAD_COUNTS)
    finally:
        set_threads(before)
    assert all(other == one for other in others)


# ---- test-time flips ------------------------------------------------------------

def mirrored(x, H, W):
    """Each (H*W) row of x mirrored left-right, in Python."""
    rows = x.tolist()
    out = [rows[r * H * W + y * W + (W - 1 - c)] for r in range(x.shape[0])
           for y in range(H) for c in range(W)]
    return Tensor.from_list(out, x.shape)


def test_flip_images_kernel():
    rng = random.Random(5)
    B, H, W, C = 2, 3, 5, 3
    x = Tensor.from_list([rng.uniform(-1, 1) for _ in range(B * H * W * C)], (B, H, W, C))
    out = Tensor(x.shape)
    lib.pynn_flip_images(out.ptr, x.ptr, B, H, W, C)
    v, got = x.tolist(), out.tolist()
    assert got == [v[((b * H + y) * W + (W - 1 - c)) * C + ch] for b in range(B)
                   for y in range(H) for c in range(W) for ch in range(C)]
    y = Tensor.from_list([1.0, 2.0, -3.0], (3,))
    lib.pynn_axpy(y.ptr, 1.0, Tensor.from_list([0.5, 0.25, 3.0], (3,)).ptr, 3)
    assert y.tolist() == [1.5, 2.25, 0.0]
    lib.pynn_axpy(y.ptr, -2.0, Tensor.from_list([0.5, 0.25, 3.0], (3,)).ptr, 3)
    assert y.tolist() == [0.5, 1.75, -6.0]


@pytest.mark.parametrize("arch,width", [("c4,p,f16", 49), ("f16", 25)])
def test_predict_with_flips_sums_the_logits_of_both_images(arch, width):
    """The class is the argmax of logits(image) + logits(mirror image); for a
    CNN and for an MLP on square vectors. Batch 4 of 7 rows: a partial batch."""
    rng = random.Random(8)
    side = int(width ** 0.5)
    model = build(arch, width, 5, "relu", rng).train(False)
    x, _ = batch(rng, 7, width, 5)
    want = []
    for r in range(7):
        row = x.rows(r, r + 1)
        a = model.forward(row).tolist()
        b = model.forward(mirrored(row, side, side)).tolist()
        s = [p + q for p, q in zip(a, b)]
        want.append(s.index(max(s)))
    model.train(True)
    assert model.predict(x, batch_size=4, flip=True).tolist() == want
    # the sum is the same for an image and its mirror image: so is the class
    assert (model.predict(mirrored(x, side, side), batch_size=4, flip=True).tolist() == want)
    assert all(layer.training for layer in model.layers if hasattr(layer, "training"))


def test_predict_gives_the_same_logits_in_batches_of_any_size():
    """model.predict's batch size is a matter of speed only: a fused CNN whose
    convolutions take Winograd's road (8 channels, 10x10 images: edge tiles
    too), batch norm in evaluation mode, with flips, gives the same logits
    bit for bit in batches of 1, 7, 128 (the default) and all 150 rows."""
    rng = random.Random(12)
    model = fuse(build("c8,c8,p,f16", 100, 5, "relu", rng, batchnorm="all"))
    x, _ = batch(rng, 150, 100, 5)
    seen = []
    for batch_size in (1, 7, None, 150):
        seen.append([])
        model.predict(x, batch_size=batch_size, flip=True,
                      on_logits=lambda start, stop, out: seen[-1].extend(out.tolist()))
    assert all(got == seen[0] for got in seen[1:])


def test_predict_with_flips_needs_square_images():
    model = build("f8", 10, 3, "relu", random.Random(0))
    with pytest.raises(PynnError, match="square images"):
        model.predict(Tensor((2, 10)), flip=True)


# ---- --arch ------------------------------------------------------------------

def test_arch_tokens():
    assert parse_arch("c32,c32k5, p,f128,d0.3") == [
        ("c", 32, 3), ("c", 32, 5), ("p",), ("f", 128), ("d", 0.3)]
    assert parse_arch("c8,g") == [("c", 8, 3), ("g",)]
    assert parse_arch("c16,r16,p") == [("c", 16, 3), ("r", 16), ("p",)]
    assert parse_arch("") == []


@pytest.mark.parametrize("arch, token", [
    ("c32,x", "'x'"), ("c0", "'c0'"), ("c32k4", "'c32k4'"), ("f", "'f'"), ("d1.5", "'d1.5'"),
    ("pp", "'pp'"), ("c32k", "'c32k'"), ("g2", "'g2'"), ("r", "'r'"), ("r0", "'r0'"),
    ("r8k5", "'r8k5'"),
])
def test_bad_arch_token_is_named(arch, token):
    with pytest.raises(PynnError) as e:
        parse_arch(arch)
    assert token in str(e.value) and "\n" not in str(e.value)


def test_build_shapes_and_summary():
    model = build("c4,p,c8k5,p,f16,d0.5", 784, 10, "relu", random.Random(0))
    names = [name for name, *_ in model.summary()]
    assert names[:4] == ["Conv2d(1, 4, 3, bias=False)", "BatchNorm2d(4)", "ReLU()", "MaxPool2d()"]
    shapes = [shape for _, shape, *_ in model.summary()]
    assert shapes[3] == (14, 14, 4) and shapes[7] == (7, 7, 8) and shapes[-1] == (10,)
    assert sum(count for _, _, count, _ in model.summary()) == sum(
        p.value.size for p in model.parameters())
    assert "Dropout(0.5)" in names
    # the plain model runs each layer with its own kernel; the fused plan names the fused ones
    assert [k for *_, k in model.summary()][:4] == ["conv2d", "batchnorm", "relu", "maxpool2x2"]
    assert [k for *_, k in fuse(model).summary()][:8] == [
        "conv_batchnorm_relu_maxpool (fused)", "  (fused above)", "  (fused above)",
        "  (fused above)", "conv2d", "batchnorm_relu_maxpool (fused)", "  (fused above)",
        "  (fused above)"]


def test_summary_of_a_residual_block():
    """A residual block is a row of its own (its sum: no parameters), then its
    body's layers indented; fused, its body names the fused kernels; the model
    table counts the kernel pairs each way."""
    from pynn.report import Reporter

    model = build("c4,r4,p", 64, 3, "relu", random.Random(0), batchnorm="all")
    rows = model.summary()
    assert [name for name, *_ in rows][3:9] == [
        "Residual: relu(x + F(x)), F =", "  Conv2d(4, 4, 3, bias=False)", "  BatchNorm2d(4)",
        "  ReLU()", "  Conv2d(4, 4, 3, bias=False)", "  BatchNorm2d(4)"]
    assert [shape for _, shape, *_ in rows][3:9] == [(8, 8, 4)] * 6
    assert [count for _, _, count, _ in rows][3:9] == [0, 144, 8, 0, 144, 8]
    assert sum(count for _, _, count, _ in rows) == sum(p.value.size for p in model.parameters())
    assert [k for *_, k in rows][3:9] == ["residual", "conv2d", "batchnorm", "relu", "conv2d",
                                         "batchnorm"]
    plan = fuse(model)
    assert [k for *_, k in plan.summary()][3:9] == [
        "residual", "conv2d", "batchnorm with relu=1 (fused)", "  (fused above)", "conv2d",
        "batchnorm"]
    out = io.StringIO()
    Reporter(stream=out).model_table(model)
    Reporter(stream=out).model_table(plan)
    Reporter(stream=out).model_table(fuse(build("f8", 16, 3, "tanh", random.Random(0))))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("model")]
    assert "each layer run as written" in lines[0]
    assert "run by 10 kernel pairs (fused" in lines[1]  # c4+bn+relu: 2, block 1 + 4, pool, ...
    assert "each layer run as written" in lines[2]  # nothing fused: not called fused


@pytest.mark.parametrize("arch, width, words", [
    ("c4", 50, "not a square"), ("p,p,p,p,p", 784, "below 1x1"), ("f8,c4", 784, "of a flat vector"),
    ("c4,g,g", 784, "of a flat vector"), ("c4,r8", 784, "input has 4 channels"),
    ("r1,f8,r1", 784, "of a flat vector"),
])
def test_build_errors(arch, width, words):
    with pytest.raises(PynnError, match=words):
        build(arch, width, 10, "relu", random.Random(0))


# ---- the time budget ------------------------------------------------------------

def test_planned_steps():
    # epochs of 10 steps of 1 s, each with a validation pass of 2 s; 1 epoch done of 20
    assert planned_steps(200, 10, 10, 1.0, 2.0, 300.0) == 200  # 19 x 12 s fit in 300 s
    assert planned_steps(200, 10, 10, 1.0, 2.0, 95.0) == 10 + 7 * 10 + 9  # 7 epochs, 9 steps
    assert planned_steps(200, 10, 10, 1.0, 2.0, 2.5) == 10     # nothing more fits
    assert planned_steps(200, 10, 10, 1.0, 2.0, -5.0) == 10    # past the deadline already
    assert planned_steps(200, 10, 10, 0.0, 2.0, 1.0) == 200    # no pace measured: as planned


class Quiet:
    def __init__(self):
        self.notes = []

    def note(self, text):
        self.notes.append(text)

    def progress(self, *args):
        pass

    def epoch(self, m):
        pass


class StepClock:
    """A clock that runs on the work done, not on the machine's speed: each
    optimizer step takes STEP seconds and each prediction call (the
    validation pass) VAL seconds."""

    STEP, VAL = 0.01, 0.02

    def __init__(self, model, optimizer):
        self.t = 0.0
        step, predict = optimizer.step, model.predict

        def timed_step():
            self.t += self.STEP
            step()

        def timed_predict(*args, **kwargs):
            self.t += self.VAL
            return predict(*args, **kwargs)

        optimizer.step, model.predict = timed_step, timed_predict

    def __call__(self):
        return self.t


class SlowStartClock(StepClock):
    """A StepClock whose first ``slow`` optimizer steps take three times as
    long: another job held a core when the run started, then left."""

    def __init__(self, model, optimizer, slow):
        self.steps, self.slow = 0, slow
        super().__init__(model, optimizer)

    @property
    def STEP(self):  # read once per optimizer step
        self.steps += 1
        return StepClock.STEP * (3 if self.steps <= self.slow else 1)


def blob_fit(epochs, budget, slow=0):
    """fit() on blobs with a budget of ``budget`` seconds for training (the
    allowance for what follows training is added), on a StepClock (whose
    first ``slow`` steps take three times as long)."""
    rng = random.Random(2)
    x, y = blobs(rng, 2000, 16, 4, spread=3.0)
    xv, yv = blobs(random.Random(3), 400, 16, 4, spread=3.0)
    model = build("f64", 16, 4, "relu", rng)
    cfg = configure("mlp", batch_size=16, epochs=epochs, schedule="cosine")
    reporter = Quiet()
    optimizer = Adam(model.parameters(), lr=0.01)
    clock = SlowStartClock(model, optimizer, slow) if slow else StepClock(model, optimizer)
    history, best, stopped, plan = fit(model, optimizer, x, y, range(2000), xv, yv, cfg,
                                       reporter, rng, Budget(budget + AFTER_TRAINING, clock=clock))
    return history, best, stopped, reporter.notes, accuracy(model, xv, yv), plan


def test_half_the_time_completes_a_shorter_schedule():
    full, full_best, stopped, notes, _, plan = blob_fit(12, 600.0)
    assert stopped == "done" and len(full) == 12 and notes == [] and plan["why"] is None
    needed = sum(m["seconds"] for m in full)
    assert needed == pytest.approx(12 * (125 * StepClock.STEP + StepClock.VAL))
    half, half_best, stopped, notes, _, plan = blob_fit(12, needed / 2)
    assert stopped == "done", notes           # the plan shrank: no cut-off
    assert len(half) == 6 and abs(plan["steps_planned"] - 6 * 125) <= 2  # half of 12 epochs
    assert any("learning-rate schedule fitted" in n for n in notes), notes
    assert half[-1]["lr"] < 0.05 * 0.01       # the cosine reached its end
    assert half_best >= full_best - 0.03      # and the accuracy is close


def test_a_slow_start_shrinks_the_plan_and_the_recovered_pace_grows_it_back():
    full, _, _, _, _, _ = blob_fit(12, 600.0)
    needed = sum(m["seconds"] for m in full)
    # the first epoch (125 steps) three times as slow; the budget holds the rest with 30 % to spare
    history, _, stopped, notes, _, plan = blob_fit(12, needed * 1.3, slow=125)
    assert history[0]["seconds"] > 2.5 * history[1]["seconds"]
    assert "12 epochs would take" in notes[0] and "training" in notes[0], notes
    again = ("the pace recovered: training 12 epochs (1500 steps) again, the learning-rate "
             "schedule fitted to them")
    assert notes[1:] == [again], notes
    assert stopped == "done" and len(history) == 12
    assert plan["epochs_planned"] == 12 and plan["why"] is None


def test_the_plan_grows_back_by_whole_epochs_or_to_what_was_asked():
    # 10 epochs of 10 steps asked; no validation pass; the clock stands at 0
    now = [0.0]
    budget = Budget(1000.0 + AFTER_TRAINING, start=0.0, clock=lambda: now[0])
    plan = Plan(10, 10, 0, "cosine")
    assert plan.replan(10, 20.0, 0.0, budget) is not None  # 20 s a step: 5 more epochs fit
    assert plan.total == 10 + 50
    assert plan.replan(20, 22.0, 0.0, budget) is None      # 20 + 45 fit: 5 more are no epoch
    assert plan.total == 60
    assert "again" in plan.replan(20, 15.0, 0.0, budget)   # 20 + 66 fit: 26 more
    assert plan.total == 20 + 66 and plan.why is not None  # still short of the 100 asked
    assert "10 epochs (100 steps) again" in plan.replan(30, 1.0, 0.0, budget)
    assert plan.total == 100 and plan.why is None
