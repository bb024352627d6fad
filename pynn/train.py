"""fit(): the training loop of the lecture, in a few named pieces.

    for each epoch:                                         (fit)
        shuffle the training rows                           (Batches.shuffle)
        for each step:                                      (train_epoch)
            gather a batch -> forward -> loss -> backward -> update   (train_step)
        validate: accuracy and loss on the validation rows  (validate)
        keep the best weights; fit the plan to the time budget   (replan)
        and the threads to the cores other processes leave free  (fit_threads)

Python picks rows and calls kernels; in a training step no number passes
through Python one by one (batch gradient descent zeroes its summed gradient
from Python, once a step).
"""
import contextlib
import math
from collections import namedtuple

from ._kernels import lib
from .config import Config
from .errors import PynnError
from .layers import BatchNorm1d
from .loss import LOSSES
from .tensor import Tensor, check

MAX_RECOVERIES = 3  # non-finite losses survived (each halves the learning rate)
FULL_BATCH_CHUNK = 1000  # rows per forward/backward pass of a --batch-size 0 step

# what fit() returns: the epoch lines, the best validation accuracy (or None),
# why training stopped ("done", "time budget", "interrupted"), and the plan
# (epochs and steps planned; "why" says why the plan shrank, or is None)
Fitted = namedtuple("Fitted", "history val_acc stopped plan")


def lr_factor(step, total, warmup, schedule):
    """Multiplier of the base learning rate at a step (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / (total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def accuracy(model, x, y):
    """Fraction of rows of x whose predicted class is y."""
    pred = check(model.predict(x), (y.shape[0],), "int32", "predictions")
    return lib.pynn_count_equal(pred.ptr, y.ptr, y.shape[0]) / max(1, y.shape[0])


def accuracy_and_loss(model, x, y, loss_fn, flip=False):
    """(accuracy, mean loss) on the rows of x with labels y, in evaluation
    mode: the loss of the images as they are (the gap between the training
    and the validation loss is how over-fitting shows; with label smoothing
    it is the smoothed loss, so its minimum is above 0), the accuracy with
    test-time flips when ``flip``."""
    total = 0.0

    def add_loss(start, stop, logits):
        nonlocal total
        loss, _ = loss_fn.forward(logits, y.rows(start, stop))
        total += loss * (stop - start)

    pred = check(model.predict(x, flip=flip, on_logits=add_loss), (y.shape[0],), "int32",
                 "predictions")
    n = max(1, y.shape[0])
    return lib.pynn_count_equal(pred.ptr, y.ptr, y.shape[0]) / n, total / n


class Batches:
    """The rows each step trains on, gathered into one preallocated buffer.

    ``batch_size`` B > 1: minibatch SGD, B random rows a step (an epoch's last
    partial batch is dropped; the shuffle varies it); 1: the online algorithm,
    one row a step; 0: batch gradient descent, one step an epoch on all rows,
    computed in nearly equal chunks of at most FULL_BATCH_CHUNK rows (each
    chunk's gradient weighted by its share of the rows; with batch norm each
    chunk is normalized by its own statistics, so this is the full batch's
    gradient only without batch norm).

    ``image`` (H, W) with ``augment`` "on" or "flip": training images are
    gathered shifted by up to ``shift`` pixels and mirrored left-right with
    probability 1/2 (or mirrored only), and with probability ``erase`` lose a
    rectangle (random erasing); ``fill`` is the normalized background value
    for pixels moved in from outside and for the erased ones. Without
    ``image`` (a network of dense layers only, not read as images) the rows
    are gathered as they are, whatever ``augment`` and ``erase`` say."""

    def __init__(self, x, y, rows, batch_size, image=None, augment="off", fill=0.0,
                 shift=Config.shift, erase=0.0):
        n = self.n_rows = len(rows)
        self.full = batch_size == 0
        self.rows_per_pass = min(FULL_BATCH_CHUNK if self.full else batch_size, n)
        self.steps = 1 if self.full else n // self.rows_per_pass  # steps per epoch
        self.rows_per_step = n if self.full else self.rows_per_pass
        self.chunks = -(-n // self.rows_per_pass) if self.full else 1
        self.x, self.y, self.fill = x, y, fill
        self.image = image if augment != "off" or erase > 0 else None
        self.shift = shift if augment == "on" else 0  # "flip": flips only
        self.flip, self.erase = int(augment != "off"), erase
        self.idx = Tensor.from_list(rows, dtype="int32")
        self.xb = Tensor((self.rows_per_pass, x.shape[1]))
        self.yb = Tensor((self.rows_per_pass,), "int32")

    def shuffle(self, rng):
        """A new random order of the rows for the next epoch (Fisher-Yates in C)."""
        lib.pynn_shuffle(self.idx.ptr, self.n_rows, rng.getrandbits(64))  # in C: 0.3 ms, not 30

    def step(self, s, rng):
        """The chunks of step s, one by one (one chunk but for batch gradient
        descent): (x, y, share of the step's rows), gathered into the same
        buffer, so each must be used before the next is asked for."""
        for c in range(self.chunks):
            first = c * self.n_rows // self.chunks if self.full else s * self.rows_per_pass
            count = ((c + 1) * self.n_rows // self.chunks - first if self.full
                     else self.rows_per_pass)
            yield self.gather(first, count, rng) + (count / self.rows_per_step,)

    def gather(self, first, count, rng):
        """(x, y) of the rows idx[first:first + count], in the step buffers."""
        xb, yb = self.xb, self.yb
        if count != self.rows_per_pass:
            xb, yb = xb.rows(0, count), yb.rows(0, count)
        at = self.idx.ptr + first
        if self.image:
            H, W = self.image
            lib.pynn_gather_augment(xb.ptr, self.x.ptr, at, count, H, W, self.shift, self.flip,
                                    self.erase, self.fill, rng.getrandbits(64))
        else:
            lib.pynn_gather_rows(xb.ptr, self.x.ptr, at, count, self.x.shape[1])
        lib.pynn_gather_labels(yb.ptr, self.y.ptr, at, count)
        return xb, yb


def train_step(model, loss_fn, optimizer, chunks, summed=None):
    """One step of gradient descent, the lecture's loop body:
    forward -> loss -> backward (dE/dw of every parameter) -> update.

    ``chunks`` are (x, y, share) pieces of one batch (Batches.step); with
    more than one, their gradients are added, each weighted by its share,
    into ``summed`` before the update. Returns (mean loss, correct
    predictions); a non-finite loss returns before any update."""
    loss, correct = 0.0, 0
    for n, (x, y, share) in enumerate(chunks):
        chunk_loss, chunk_correct = loss_fn.forward(model.forward(x), y)
        loss, correct = loss + chunk_loss * share, correct + chunk_correct
        if not math.isfinite(loss):
            return loss, correct
        model.backward(loss_fn.backward())
        if summed is not None:
            if n == 0:
                summed.fill_(0.0)
            lib.pynn_axpy(summed.ptr, share, optimizer.grads.ptr, summed.size)
    if summed is not None:
        optimizer.grads.copy_(summed)
    optimizer.step()
    return loss, correct


def planned_steps(total, done, per_epoch, step_seconds, val_seconds, seconds_left):
    """Steps to plan for in all, after ``done`` of ``total`` (at an epoch's
    end): ``total`` when the rest fits in ``seconds_left``, else as many as
    do, each epoch begun costing one validation pass of ``val_seconds``."""
    if step_seconds <= 0:
        return total
    epoch_seconds = per_epoch * step_seconds + val_seconds
    whole = int(max(0.0, seconds_left) // epoch_seconds)
    rest = seconds_left - whole * epoch_seconds - val_seconds
    part = min(per_epoch - 1, int(rest // step_seconds)) if rest > 0 else 0
    return max(done, min(total, done + whole * per_epoch + part))


class Weights:
    """The weights worth going back to: the last ones known to be finite and
    the best by validation accuracy.

    A non-finite loss, or non-finite weights at an epoch's end, bring the
    last finite weights back and halve the learning rate (``lr_scale``); the
    (MAX_RECOVERIES + 1)th time it raises PynnError (no predictions come from
    a diverged model). At the end, the model gets the best weights."""

    def __init__(self, model, optimizer, reporter):
        self.model, self.optimizer, self.reporter = model, optimizer, reporter
        self.recoveries, self.lr_scale = 0, 1.0
        self.last_finite, self.best, self.best_acc = model.state(), None, None

    def finite(self):
        """Whether every weight is a finite number (no NaN, no infinity)."""
        return all(lib.pynn_all_finite(p.value.ptr, p.value.size)
                   for p in self.model.parameters())

    def keep_finite(self):
        """After an epoch whose weights are finite: keep them."""
        self.last_finite = self.model.state()

    def keep_best(self, val_acc):
        """The model's weights (the average, with --ema) as the best when their
        validation accuracy is."""
        if val_acc is not None and (self.best_acc is None or val_acc > self.best_acc):
            self.best_acc, self.best = val_acc, self.model.state()

    def recover(self, epoch, what):
        """Training diverged (``what``: a non-finite loss or weights): back to
        the last finite weights, the optimizer's state reset, the learning rate
        halved from here on; a PynnError after MAX_RECOVERIES such falls."""
        self.recoveries += 1
        if self.recoveries > MAX_RECOVERIES:
            raise PynnError(f"training diverged ({what}) {self.recoveries} times; "
                            "try a lower --lr")
        self.lr_scale *= 0.5
        self.model.load_state(self.last_finite)
        self.optimizer.reset()
        self.reporter.note(f"{what} at epoch {epoch}: weights restored, learning rate halved")

    def restore(self, average=None):
        """The best weights (without validation: the average's, with --ema; and
        should they not be finite, the last finite weights)."""
        if self.best is not None:
            self.model.load_state(self.best)
        elif average is not None:
            self.model.load_state(average.state())
        if not self.finite():
            self.model.load_state(self.last_finite)


class Average:
    """Weight averaging (--ema): the exponential moving average of the weights
    and of batch norm's running statistics, after every step
        average = decay * average + (1 - decay) * weights
    with the decay warmed up, min(decay, (1 + t) / (10 + t)) at step t, so
    that the first steps' random weights fade fast. Validation, the best
    weights and the predictions use the average (``applied``)."""

    def __init__(self, model, decay):
        self.model, self.decay, self.t = model, decay, 0
        self.saved = model.state()  # [the parameter block, then the buffers]

    def update(self):
        """After a step: move the average towards the weights (pynn_ema_update)."""
        self.t += 1
        decay = min(self.decay, (1 + self.t) / (10 + self.t))
        live = [self.model.parameters().values] + self.model.buffers()
        for avg, now in zip(self.saved, live):
            lib.pynn_ema_update(avg.ptr, now.ptr, avg.size, decay)

    def state(self):
        """The averaged weights and buffers, as Sequential.state lays them out."""
        return self.saved

    @contextlib.contextmanager
    def applied(self):
        """The model with the averaged weights inside the block, the trained
        ones back afterwards."""
        live = self.model.state()
        self.model.load_state(self.saved)
        try:
            yield
        finally:
            self.model.load_state(live)


def _epochs(n):
    """12 or 5.21: a number of epochs as a note says it"""
    return str(int(n)) if n == int(n) else f"{n:.2f}"


class Plan:
    """How far training goes: ``total`` steps (``per_epoch`` a full epoch),
    shrunk by ``replan`` when the rest would not fit the time budget."""

    def __init__(self, epochs, per_epoch, warmup_epochs, schedule):
        self.epochs_asked, self.per_epoch = epochs, per_epoch
        self.total = epochs * per_epoch
        self.warmup, self.schedule = int(warmup_epochs * per_epoch), schedule
        self.why = None

    def epochs(self):
        """The epochs planned, the last one maybe partial (when the budget cut it)."""
        return -(-self.total // self.per_epoch)

    def steps_in(self, epoch):
        """Steps of epoch ``epoch`` (1-based): all, but maybe in the last one."""
        return min(self.per_epoch, self.total - (epoch - 1) * self.per_epoch)

    def lr_factor(self, step):
        """The factor of the base learning rate at ``step`` (warm-up, then schedule)."""
        return lr_factor(step, self.total, self.warmup, self.schedule)

    def replan(self, done, step_seconds, val_seconds, budget):
        """Fit the steps left to the time left, at the last epoch's pace: fewer
        when the rest would not fit, and more again, up to those asked, when
        the pace has recovered by an epoch or more (other jobs left the
        machine). A note-worthy text when the plan changed."""
        asked = self.epochs_asked * self.per_epoch
        total = planned_steps(asked, done, self.per_epoch, step_seconds, val_seconds,
                              budget.deadline() - budget.now())
        if total > self.total and (total == asked or total - self.total >= self.per_epoch):
            self.total = total
            self.why = None if total == asked else self.why
            return (f"the pace recovered: training {_epochs(self.total / self.per_epoch)} "
                    f"epochs ({self.total} steps) again, the learning-rate schedule fitted "
                    "to them")
        if total >= self.total:
            return None
        needed = (self.total - done) * step_seconds + (self.epochs() - done // self.per_epoch) \
            * val_seconds
        why = (f"{_epochs(self.total / self.per_epoch)} epochs would take about "
               f"{budget.seconds - budget.left() + needed + budget.after_training():.0f}s, "
               f"over the {budget.seconds:g}s budget")
        self.why = self.why or why  # the first shrink says why the plan is not what was asked
        self.total = total
        return (f"{why}: training {_epochs(self.total / self.per_epoch)} epochs "
                f"({self.total} steps), the learning-rate schedule fitted to them")

    def record(self):
        """The plan as Fitted.plan and the run folder's summary.json keep it."""
        return {"epochs_asked": self.epochs_asked, "epochs_planned": self.total / self.per_epoch,
                "steps_planned": self.total, "why": self.why}


def train_epoch(model, loss_fn, optimizer, batches, plan, weights, epoch, step, ctx):
    """One epoch of minibatch steps (train_step) in a new order of the rows.
    Returns (mean loss, accuracy, rows seen, the step count, why it stopped).
    ``ctx``: the run's _Run (reporter, rng, budget, base learning rate, the
    summed gradient of batch gradient descent, the weights' average)."""
    t0 = ctx.budget.now()
    batches.shuffle(ctx.rng)
    loss_sum, hits, seen, stopped = 0.0, 0, 0, "done"
    every = max(1, batches.steps // 50)  # the progress line is redrawn ~50 times an epoch
    for b in range(plan.steps_in(epoch)):
        optimizer.lr = ctx.lr * weights.lr_scale * plan.lr_factor(step)
        loss, correct = train_step(model, loss_fn, optimizer, batches.step(b, ctx.rng),
                                   ctx.summed)
        if not math.isfinite(loss):
            weights.recover(epoch, "non-finite loss")
            continue
        if ctx.average:
            ctx.average.update()
        step += 1
        loss_sum, hits = loss_sum + loss * batches.rows_per_step, hits + correct
        seen += batches.rows_per_step
        now = ctx.budget.now()
        if b % every == 0:
            ctx.reporter.progress(epoch, b + 1, plan.steps_in(epoch), now - t0)
        ctx.budget.measure_training(seen, now - t0)
        if now > ctx.budget.deadline():
            stopped = "time budget"
            break
    return loss_sum / max(1, seen), hits / max(1, seen), seen, step, stopped


def validate(model, x_val, y_val, loss_fn, flip, weights, budget, average=None):
    """(validation accuracy, validation loss) of the epoch's weights (their
    average, with --ema), or (None, None) without validation rows or with
    non-finite weights (a ReLU maps NaN to 0, so NaN weights can hide behind
    a finite loss: only an epoch that ends with finite weights may be kept)."""
    if not weights.finite():
        return None, None
    weights.keep_finite()
    t0 = budget.now()
    with average.applied() if average else contextlib.nullcontext():
        acc, loss = (accuracy_and_loss(model, x_val, y_val, loss_fn, flip) if x_val is not None
                     else (None, None))
        weights.keep_best(acc)
    if acc is not None:
        budget.measure_prediction(x_val.shape[0] * (2 if flip else 1), budget.now() - t0)
    return acc, loss


def fit_threads(cores, reporter):
    """Set the thread count to the cores other processes left free during
    the last epoch (pynn/cpu.py), and say so when it changes."""
    before, now = cores.threads, cores.update()
    if now != before:
        lib.pynn_set_threads(now)
        reporter.note(f"threads {before} -> {now}: the cores other processes left free "
                      "during the last epoch (the results do not depend on it)")


class _Run:
    """What every epoch of one fit() uses: reporter, rng, budget, the base
    learning rate, and (batch gradient descent) the buffer of summed gradients."""

    def __init__(self, reporter, rng, budget, lr, summed, average):
        self.reporter, self.rng, self.budget, self.lr, self.summed = (reporter, rng, budget,
                                                                       lr, summed)
        self.average = average  # the weights' average (--ema), or None


def fit(model, optimizer, x, y, rows, x_val, y_val, cfg, reporter, rng, budget, fill=0.0,
        cores=None):
    """Train on the given rows of x (N, D) / y (N,) for cfg.epochs epochs (or
    until the time budget or Ctrl-C); leave the model at its best validation
    accuracy (always finite weights). ``budget``: a pynn.budget.Budget;
    ``cores``: a pynn.cpu.SharedCores, or None to keep the thread count.

    After each epoch, when the steps left would not fit before the budget's
    training deadline at the last epoch's pace, the plan shrinks to the steps
    that do (the last epoch may then be partial), and the learning-rate
    schedule is fitted to them: it still ends at a low learning rate instead
    of being cut off high. When the pace recovers (a job that held a core has
    ended), the plan grows back, up to the epochs asked. Should a step still
    pass the deadline, training stops there.

    Returns Fitted(history, best validation accuracy or None, why it stopped,
    the plan)."""
    if cfg.batch_size == 1 and any(isinstance(layer, BatchNorm1d) for layer in model.modules()):
        raise PynnError("--batch-size 1: batch norm after a dense layer needs more than one row "
                        "per step (one row is its own mean); use --batchnorm conv or off")
    loss_fn, val_loss_fn = LOSSES[cfg.loss](cfg.label_smoothing), LOSSES[cfg.loss](cfg.label_smoothing)
    batches = Batches(x, y, rows, cfg.batch_size, model.input_shape and model.input_shape[:2],
                      cfg.augment, fill, cfg.shift, cfg.erase)
    plan = Plan(cfg.epochs, batches.steps, cfg.warmup_epochs, cfg.schedule)
    weights, history, step, stopped, epoch = Weights(model, optimizer, reporter), [], 0, "done", 0
    ctx = _Run(reporter, rng, budget, optimizer.lr,
               Tensor(optimizer.grads.shape) if batches.chunks > 1 else None,
               Average(model, cfg.ema) if cfg.ema else None)
    try:
        while epoch < plan.epochs():
            epoch, t0, first = epoch + 1, budget.now(), step
            loss, acc, _, step, stopped = train_epoch(model, loss_fn, optimizer, batches, plan,
                                                         weights, epoch, step, ctx)
            t1 = budget.now()
            val_acc, val_loss = validate(model, x_val, y_val, val_loss_fn, cfg.tta == "flip",
                                         weights, budget, ctx.average)
            history.append({"epoch": epoch, "train_loss": loss, "train_acc": acc,
                            "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.lr,
                            "seconds": budget.now() - t0})
            reporter.epoch(history[-1])
            if not weights.finite():
                weights.recover(epoch, "non-finite weights")
            if stopped != "done":
                reporter.note(f"stopped after epoch {epoch}: {stopped} reached")
                plan.why = plan.why or f"the {budget.seconds:g}s time budget was reached"
                break
            if epoch < plan.epochs():  # re-planned after every epoch: machines slow down too
                note = plan.replan(step, (t1 - t0) / max(1, step - first), budget.now() - t1,
                                   budget)
                if note:
                    reporter.note(note)
                if cores:
                    fit_threads(cores, reporter)
    except KeyboardInterrupt:
        stopped = "interrupted"
        reporter.note("interrupted: predicting with the best weights so far")
    weights.restore(ctx.average)
    return Fitted(history, weights.best_acc, stopped, plan.record())
