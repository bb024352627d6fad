"""fit(): the training loop. Python picks batches and calls kernels; the
numbers never pass through Python one by one."""
import math
import time

from ._kernels import lib
from .config import AUGMENT_SHIFT
from .errors import PynnError
from .layers import BatchNorm1d
from .loss import LOSSES
from .tensor import Tensor

MAX_RECOVERIES = 3  # non-finite losses survived (each halves the learning rate)
FULL_BATCH_CHUNK = 1000  # rows per forward/backward of a --batch-size 0 step


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
    pred = model.predict(x)
    return lib.pynn_count_equal(pred.ptr, y.ptr, y.shape[0]) / max(1, y.shape[0])


def evaluate(model, x, y, loss_fn, flip=False):
    """(accuracy, mean loss) on the rows of x with labels y, in evaluation
    mode: the loss of the images as they are (the gap between the training
    and the validation loss is how over-fitting shows), the accuracy with
    test-time flips when ``flip``."""
    total = 0.0

    def add_loss(start, stop, logits):
        nonlocal total
        loss, _ = loss_fn.forward(logits, y.rows(start, stop))
        total += loss * (stop - start)

    pred = model.predict(x, flip=flip, on_logits=add_loss)
    n = max(1, y.shape[0])
    return lib.pynn_count_equal(pred.ptr, y.ptr, y.shape[0]) / n, total / n


def planned_epochs(epochs, done, seconds, left):
    """How many epochs to plan for in all, after ``done`` epochs took ``seconds``
    and ``left`` seconds remain: ``epochs`` when they fit, else as many as fit
    (at least ``done``), so that the learning-rate schedule can still end."""
    per_epoch = seconds / max(1, done)
    fit_more = int(left / per_epoch) if per_epoch > 0 else epochs
    return max(done, min(epochs, done + fit_more))


def fit(model, optimizer, x, y, rows, x_val, y_val, cfg, reporter, rng, deadline, fill=0.0):
    """Train on the given rows of x (N, D) / y (N,) for cfg.epochs epochs (or
    until ``deadline``, a perf_counter time, or Ctrl-C); leave the model at its
    best validation accuracy (always finite weights).

    After each epoch, when the planned epochs will not fit before the
    deadline at the pace so far, the plan shrinks to the epochs that do, and
    the learning-rate schedule is fitted to those: it still ends (at a low
    learning rate) instead of being cut off high.

    cfg.batch_size 0 is batch gradient descent, the lecture's first algorithm:
    one step per epoch, on the gradient of the mean loss over all rows. It is
    computed in nearly equal chunks of at most FULL_BATCH_CHUNK rows (so
    memory is that of a 1000-row batch), each chunk's gradient weighted by
    its share of the rows (batch norm, if any, then sees each chunk's
    statistics). cfg.batch_size 1 is the online algorithm: one step per row
    (refused with batch norm after a dense layer: one row is its own mean).

    With cfg.augment "on" (or "flip") and an image model, each training batch
    is gathered with random shifts and flips (or flips only); ``fill`` is the
    normalized value of a background pixel, for pixels moved in from outside.

    A non-finite loss, or non-finite weights at the end of an epoch, restore
    the last finite weights and halve the learning rate; the fourth time, fit
    raises PynnError (no predictions come from a diverged model).

    Returns (history, best validation accuracy or None, why it stopped: "done",
    "time budget" or "interrupted")."""
    loss_fn = LOSSES[cfg.loss](cfg.label_smoothing)
    val_loss_fn = LOSSES[cfg.loss](cfg.label_smoothing)  # its own buffers
    n, d = len(rows), x.shape[1]
    full = cfg.batch_size == 0  # batch gradient descent
    B = min(FULL_BATCH_CHUNK if full else cfg.batch_size, n)  # rows per forward pass
    # the last partial batch is dropped (shuffling varies it), but not in full-batch steps
    steps = 1 if full else n // B
    per_step = n if full else B
    # a full batch in k chunks of nearly equal size (the last one never a few rows alone)
    chunks = -(-n // B) if full else 1
    if cfg.batch_size == 1 and any(isinstance(layer, BatchNorm1d) for layer in model.layers):
        raise PynnError("--batch-size 1: batch norm after a dense layer needs more than one row "
                        "per step (one row is its own mean); use --batchnorm conv or off")
    epochs = cfg.epochs
    total = steps * epochs
    augment = cfg.augment != "off" and model.input_shape is not None
    shift = AUGMENT_SHIFT if cfg.augment == "on" else 0  # "flip": flips only
    H, W = model.input_shape[:2] if augment else (0, 0)
    started = time.perf_counter()
    warmup = int(cfg.warmup_epochs * steps)
    idx = Tensor.from_list(rows, dtype="int32")
    xb, yb = Tensor((B, d)), Tensor((B,), "int32")
    summed = Tensor(optimizer.grads.shape) if full else None  # a full batch's gradient
    base_lr, lr_scale, recoveries = optimizer.lr, 1.0, 0
    good = model.state()  # last weights known to be finite
    best_acc, best = None, None
    history, step, stopped = [], 0, "done"
    progress_every = max(1, steps // 50)  # the progress line is redrawn ~50 times an epoch

    def gradient(first, count):
        """Forward and backward of the rows idx[first:first + count] (the
        parameters' gradients written); their mean loss and correct count.
        A non-finite loss is returned before the backward pass."""
        xc, yc = (xb, yb) if count == B else (xb.rows(0, count), yb.rows(0, count))
        if augment:
            lib.pynn_gather_augment(xc.ptr, x.ptr, idx.ptr + first, count, H, W,
                                    shift, 1, fill, rng.getrandbits(64))
        else:
            lib.pynn_gather_rows(xc.ptr, x.ptr, idx.ptr + first, count, d)
        lib.pynn_gather_labels(yc.ptr, y.ptr, idx.ptr + first, count)
        loss, correct = loss_fn.forward(model.forward(xc), yc)
        if math.isfinite(loss):
            model.backward(loss_fn.backward())
        return loss, correct

    def full_gradient():
        """gradient() of all n rows, chunk by chunk: the mean over the rows is
        the chunks' means weighted by their shares of the rows."""
        summed.fill_(0.0)
        loss, correct = 0.0, 0
        for c in range(chunks):
            first = c * n // chunks
            count = (c + 1) * n // chunks - first
            chunk_loss, chunk_correct = gradient(first, count)
            loss, correct = loss + chunk_loss * count / n, correct + chunk_correct
            if not math.isfinite(loss):
                break
            lib.pynn_axpy(summed.ptr, count / n, optimizer.grads.ptr, summed.size)
        optimizer.grads.copy_(summed)
        return loss, correct

    def diverged(epoch, what):
        """Weights back to the last finite ones and half the learning rate; the
        (MAX_RECOVERIES + 1)th time, stop with an error."""
        nonlocal recoveries, lr_scale
        recoveries += 1
        if recoveries > MAX_RECOVERIES:
            raise PynnError(f"training diverged ({what}) {recoveries} times; try a lower --lr")
        lr_scale *= 0.5
        model.load_state(good)
        optimizer.reset()
        reporter.note(f"{what} at epoch {epoch}: weights restored, learning rate halved")

    try:
        epoch = 0
        while epoch < epochs:
            epoch += 1
            t0 = time.perf_counter()
            lib.pynn_shuffle(idx.ptr, n, rng.getrandbits(64))  # seeded, in C: 0.3 ms, not 30
            loss_sum, hits, seen = 0.0, 0, 0
            for b in range(steps):
                optimizer.lr = base_lr * lr_scale * lr_factor(step, total, warmup, cfg.schedule)
                loss, correct = full_gradient() if full else gradient(b * B, B)
                if not math.isfinite(loss):
                    diverged(epoch, "non-finite loss")
                    continue
                optimizer.step()
                step += 1
                loss_sum, hits = loss_sum + loss * per_step, hits + correct
                seen += per_step
                if b % progress_every == 0:
                    reporter.progress(epoch, b + 1, steps, time.perf_counter() - t0)
                if time.perf_counter() > deadline:
                    stopped = "time budget"
                    break
            # A ReLU maps NaN to 0, so NaN weights can hide behind a finite loss:
            # only an epoch that ends with finite weights may become good or best.
            finite = all(lib.pynn_all_finite(p.value.ptr, p.value.size)
                         for p in model.parameters())
            val_acc, val_loss = (evaluate(model, x_val, y_val, val_loss_fn, cfg.tta == "flip")
                                 if x_val is not None and finite else (None, None))
            if finite:
                good = model.state()
                if val_acc is not None and (best_acc is None or val_acc > best_acc):
                    best_acc, best = val_acc, model.state()
            m = {"epoch": epoch, "train_loss": loss_sum / max(1, seen),
                 "train_acc": hits / max(1, seen), "val_loss": val_loss, "val_acc": val_acc,
                 "lr": optimizer.lr, "seconds": time.perf_counter() - t0}
            history.append(m)
            reporter.epoch(m)
            if not finite:
                diverged(epoch, "non-finite weights")
            if stopped != "done":
                reporter.note(f"stopped after epoch {epoch}: {stopped} reached")
                break
            if epoch < epochs:  # re-planned after every epoch: machines slow down too
                now = time.perf_counter()
                fits = planned_epochs(epochs, epoch, now - started, deadline - now)
                if fits < epochs:
                    per_epoch = (now - started) / epoch
                    reporter.note(f"{epochs} epochs would take about {epochs * per_epoch:.0f}s, "
                                  f"over the {cfg.time_budget:g}s budget: training {fits} "
                                  "epochs, the learning-rate schedule fitted to them")
                    epochs, total = fits, steps * fits
    except KeyboardInterrupt:
        stopped = "interrupted"
        reporter.note("interrupted: predicting with the best weights so far")
    if best is not None:
        model.load_state(best)
    if not all(lib.pynn_all_finite(p.value.ptr, p.value.size) for p in model.parameters()):
        model.load_state(good)
    return history, best_acc, stopped
