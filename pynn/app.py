"""run(config): the whole PV021 run - load, split, normalize, train, predict, write."""
import random
import time
from pathlib import Path

from ._kernels import lib
from .config import ALLOWED_SEEDS
from .data import Normalizer, gather, load_labels, load_vectors, split
from .io import CSV_NAMES, PREDICTION_NAMES, check_writable, write_predictions
from .model import mlp
from .optim import OPTIMIZERS
from .report import Reporter
from .train import accuracy, fit


def build_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return OPTIMIZERS["sgd"](params, cfg.lr, cfg.momentum, cfg.weight_decay)
    return OPTIMIZERS["adam"](params, cfg.lr, weight_decay=cfg.weight_decay)


def run(cfg, reporter=None):
    """Train on cfg.data_dir, write the two prediction files into cfg.out_dir.

    Returns a dict of results. Raises PynnError for bad input."""
    start = time.perf_counter()
    reporter = reporter or Reporter()
    data, out = Path(cfg.data_dir), Path(cfg.out_dir)
    if cfg.seed not in ALLOWED_SEEDS:
        reporter.note(f"seed {cfg.seed}: the course allows only {ALLOWED_SEEDS}")
    check_writable(out)
    lib.pynn_set_threads(cfg.threads)
    rng = random.Random(cfg.seed)

    # training data: the only data that shapes the model
    x = load_vectors(data / CSV_NAMES["train_vectors"])
    y = load_labels(data / CSV_NAMES["train_labels"], count=x.shape[0])
    classes = max(y.tolist()) + 1
    rows, val_rows = split(x.shape[0], cfg.val_fraction, rng)
    norm = Normalizer.fit(x, rows)  # statistics of the training part only
    norm(x)
    x_val, y_val = (gather(x, val_rows), gather(y, val_rows)) if val_rows else (None, None)

    model = mlp([x.shape[1], *cfg.hidden, classes], cfg.activation, rng)
    optimizer = build_optimizer(cfg, model.parameters())
    reporter.start(model, len(rows), len(val_rows), cfg, lib.pynn_get_threads())
    history, val_acc, stopped = fit(model, optimizer, x, y, rows, x_val, y_val, cfg, reporter,
                                    rng, start + cfg.time_budget)

    # predictions: training rows in input order, then the test set (its first use)
    train_pred = model.predict(x)
    x_test = norm(load_vectors(data / CSV_NAMES["test_vectors"], width=x.shape[1]))
    test_pred = model.predict(x_test)
    test_acc = None
    labels_path = data / CSV_NAMES["test_labels"]
    if labels_path.exists():  # final evaluation only; never used before this line
        y_test = load_labels(labels_path, count=x_test.shape[0], classes=classes)
        test_acc = lib.pynn_count_equal(test_pred.ptr, y_test.ptr, y_test.shape[0]) / y_test.shape[0]
    # written last: a run that fails on any input leaves earlier files untouched
    write_predictions(out / PREDICTION_NAMES["train"], train_pred)
    write_predictions(out / PREDICTION_NAMES["test"], test_pred)
    train_acc = lib.pynn_count_equal(train_pred.ptr, y.ptr, y.shape[0]) / y.shape[0]
    seconds = time.perf_counter() - start
    reporter.summary(val_acc, test_acc, seconds)
    return {"history": history, "val_acc": val_acc, "test_acc": test_acc,
            "train_acc": train_acc, "stopped": stopped, "seconds": seconds}
