"""run(config): the whole PV021 run - load, split, normalize, train (or load a
saved model), predict, write, evaluate, report."""
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

from . import html_report, serialize
from ._kernels import lib
from .config import ALLOWED_SEEDS, configure
from .cpu import default_threads
from .data import Normalizer, check_vectors, gather, load_labels, load_vectors, split
from .errors import PynnError
from .io import (
    CSV_NAMES,
    PREDICTION_NAMES,
    RUN_FILES,
    check_writable,
    new_run_folder,
    write_json,
    write_prediction_files,
    write_text,
)
from .layers import Conv2d, Linear
from .metrics import class_names, evaluate
from .model import build, image_shape, parse_arch
from .optim import OPTIMIZERS
from .report import Reporter
from .train import fit


def build_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return OPTIMIZERS["sgd"](params, cfg.lr, cfg.momentum, cfg.weight_decay)
    return OPTIMIZERS["adam"](params, cfg.lr, weight_decay=cfg.weight_decay)


def fall_back_to_mlp(cfg, width, reporter):
    """The MLP preset when the default (a CNN) was not asked for and the
    vectors are not square images; else cfg (build() names a bad --arch)."""
    wants_conv = any(t[0] in "cp" for t in parse_arch(cfg.arch))
    if not wants_conv or image_shape(width) or {"model", "arch"} & set(cfg.explicit):
        return cfg
    reporter.note(f"the vectors have {width} values, not a square image: "
                  f"training the mlp preset instead of {cfg.model}")
    return configure("mlp", **{k: getattr(cfg, k) for k in cfg.explicit})


def check_tta(cfg, width):
    """--tta flip mirrors images: the vectors must be square ones."""
    if cfg.tta == "flip" and image_shape(width) is None:
        raise PynnError(f"--tta flip: test-time flips need square images, but the vectors "
                        f"have {width} values (not a square number)")


def run(cfg, reporter=None):
    """Train on cfg.data_dir (or load cfg.load), write the two prediction files
    into cfg.out_dir, and a run folder with the report into cfg.out_dir/cfg.runs_dir.

    Returns a dict of results. Raises PynnError for bad input."""
    start = time.perf_counter()
    reporter = reporter or Reporter()
    data, out = Path(cfg.data_dir), Path(cfg.out_dir)
    if cfg.seed not in ALLOWED_SEEDS:
        reporter.note(f"seed {cfg.seed}: the course allows only {ALLOWED_SEEDS}")
    parse_arch(cfg.arch)  # a bad --arch token is named before anything is read
    if cfg.batch_size < 0:
        raise PynnError(f"--batch-size {cfg.batch_size}: must be 0 (all rows per step) or more")
    if not (math.isfinite(cfg.sigmoid_lambda) and cfg.sigmoid_lambda > 0):
        raise PynnError(f"--sigmoid-lambda {cfg.sigmoid_lambda}: must be a number above 0")
    if check_writable(out):
        reporter.note(f"created the output folder {out}")
    if cfg.save:  # checked before training, not after it
        if Path(cfg.save).is_dir():
            raise PynnError(f"{cfg.save}: is a folder; --save needs a file name")
        if check_writable(Path(cfg.save).parent):
            reporter.note(f"created the folder {Path(cfg.save).parent} for --save")
    loaded = serialize.load(cfg.load) if cfg.load else None  # (model, Normalizer)
    lib.pynn_set_threads(cfg.threads or default_threads())
    rng = random.Random(cfg.seed)

    # training data: the only data that shapes the model
    inputs = loaded[0].input_width() if loaded else None
    x = load_vectors(data / CSV_NAMES["train_vectors"], width=inputs)
    # a broken test file is reported now, not after minutes of training: its
    # format is checked (0.02 s); its values are read only for the prediction
    check_vectors(data / CSV_NAMES["test_vectors"], width=x.shape[1])
    if loaded:
        # a saved model: its own normalization; no training, so no validation part
        model, norm = loaded
        classes = model.layers[-1].out_features
        y = load_labels(data / CSV_NAMES["train_labels"], count=x.shape[0], classes=classes)
        norm(x)
        check_tta(cfg, x.shape[1])
        val_rows, x_val, y_val = [], None, None
        reporter.loaded(model, cfg.load)
        history, val_acc, stopped = [], None, "loaded"
    else:
        y = load_labels(data / CSV_NAMES["train_labels"], count=x.shape[0])
        classes = max(y.tolist()) + 1
        rows, val_rows = split(x.shape[0], cfg.val_fraction, rng)
        norm = Normalizer.fit(x, rows)  # statistics of the training part only
        norm(x)
        x_val, y_val = (gather(x, val_rows), gather(y, val_rows)) if val_rows else (None, None)
        cfg = fall_back_to_mlp(cfg, x.shape[1], reporter)
        check_tta(cfg, x.shape[1])
        model = build(cfg.arch, x.shape[1], classes, cfg.activation, rng, cfg.dropout,
                      cfg.batchnorm, cfg.sigmoid_lambda)
        optimizer = build_optimizer(cfg, model.parameters())
        reporter.start(model, len(rows), len(val_rows), cfg, lib.pynn_get_threads())
        history, val_acc, stopped = fit(model, optimizer, x, y, rows, x_val, y_val, cfg,
                                        reporter, rng, start + cfg.time_budget,
                                        fill=norm.normalized(0.0))
    trained = time.perf_counter()

    # predictions: training rows in input order, then the test set (its first use)
    flip = cfg.tta == "flip"
    train_pred = model.predict(x, flip=flip)
    x_test = norm(load_vectors(data / CSV_NAMES["test_vectors"], width=x.shape[1]))
    test_pred = model.predict(x_test, flip=flip)
    y_test, test_acc = None, None
    labels_path = data / CSV_NAMES["test_labels"]
    if labels_path.exists():  # final evaluation only; never used before this line
        y_test = load_labels(labels_path, count=x_test.shape[0], classes=classes)
        test_acc = lib.pynn_count_equal(test_pred.ptr, y_test.ptr, y_test.shape[0]) / y_test.shape[0]
    # written last: a run that fails on any input leaves earlier files untouched
    write_prediction_files({out / PREDICTION_NAMES["train"]: train_pred,
                            out / PREDICTION_NAMES["test"]: test_pred})
    if cfg.save:
        serialize.save(cfg.save, model, norm)
    train_acc = lib.pynn_count_equal(train_pred.ptr, y.ptr, y.shape[0]) / y.shape[0]
    seconds = time.perf_counter() - start

    # evaluation: per class, on the validation part and (if labelled) the test set
    t0 = time.perf_counter()
    val_pred = model.predict(x_val, flip=flip) if x_val is not None else None
    results = {"validation": evaluate(y_val, val_pred, classes) if x_val is not None else None,
               "test": evaluate(y_test, test_pred, classes) if y_test is not None else None}
    for title, key in (("validation", "validation"), ("test (final evaluation)", "test")):
        if results[key] is not None:
            reporter.evaluation(title, results[key])
    reporter.summary(val_acc, test_acc, seconds)
    if cfg.save:
        reporter.saved("model", cfg.save)
    run_dir = None
    if cfg.runs_dir:
        summary = {"run": None, "model": repr(model), "loaded_from": cfg.load or None,
                   "stopped": stopped, "epochs": len(history), "classes": class_names(classes),
                   "train_acc": train_acc, "val_acc": val_acc, "test_acc": test_acc, **results,
                   "timings": {"train_seconds": trained - start, "total_seconds": seconds}}
        images = (html_report.misclassified(x_val, y_val, val_pred, classes, norm,
                                            [r + 1 for r in val_rows])
                  if x_val is not None else [])
        pictures = weight_pictures(model, x_val, norm)
        run_dir = write_run_folder(out / cfg.runs_dir, cfg, history, summary, images, pictures,
                                   t0)
        reporter.saved(f"report ({summary['timings']['report_seconds']:.2f}s)",
                       run_dir / RUN_FILES["report"])
    return {"history": history, "val_acc": val_acc, "test_acc": test_acc,
            "train_acc": train_acc, "stopped": stopped, "seconds": seconds, **results,
            "run_dir": run_dir}


PICTURE_UNITS = 64  # hidden units whose weights report.html shows (MLP)
PICTURE_IMAGES, PICTURE_MAPS = 3, 8  # validation images and filters shown as feature maps (CNN)


def weight_pictures(model, x_val, norm):
    """Plain data for report.html's "weights as pictures"
    (html_report.weight_pictures), or None when the inputs are not square
    one-channel images. MLP: the first Linear's weights into its first
    PICTURE_UNITS hidden units. CNN: the first convolution's filters and
    its output maps of the first PICTURE_IMAGES validation images."""
    first, width = model.layers[0], model.input_width()
    shape = model.input_shape or image_shape(width)
    if shape is None or shape[2] != 1:
        return None
    H, W = shape[:2]
    if isinstance(first, Linear):
        w = first.weight.value.tolist()
        units = [w[j * width:(j + 1) * width] for j in range(min(PICTURE_UNITS, first.out_features))]
        return {"kind": "dense", "shape": (H, W), "units": units, "of": first.out_features,
                "scale": max(abs(v) for u in units for v in u)}
    if not isinstance(first, Conv2d):
        return None
    k, OC, w = first.k, first.out_channels, first.weight.value.tolist()  # (OC, k, k, 1)
    filters = [w[o * k * k:(o + 1) * k * k] for o in range(OC)]
    images, maps = [], []
    n = min(PICTURE_IMAGES, x_val.shape[0]) if x_val is not None else 0
    if n:
        batch = x_val.rows(0, n)
        out = first.forward(batch.view((n, H, W, 1))).tolist()  # (n, H, W, OC)
        values_all = batch.tolist()
        for b in range(n):
            values = values_all[b * width:(b + 1) * width]
            images.append([min(255, max(0, round(v * norm.std + norm.mean))) for v in values])
            maps.append([[out[(b * H * W + r) * OC + o] for r in range(H * W)]
                         for o in range(min(PICTURE_MAPS, OC))])
    return {"kind": "conv", "k": k, "filters": filters, "map_shape": (H, W),
            "scale": max(abs(v) for f in filters for v in f), "images": images, "maps": maps}


def write_run_folder(parent, cfg, history, summary, images, pictures, t0):
    """parent/<timestamp>/: config.json, metrics.jsonl (one epoch a line),
    report.html and summary.json. ``images``, ``pictures``: see html_report;
    ``t0``: when evaluation began (for timing)."""
    folder = new_run_folder(parent)
    summary["run"] = folder.name
    config = asdict(cfg)
    write_json(folder / RUN_FILES["config"], config)
    write_text(folder / RUN_FILES["metrics"], "".join(json.dumps(m) + "\n" for m in history))
    write_text(folder / RUN_FILES["report"],
               html_report.build(summary, history, config, images, pictures))
    summary["timings"]["report_seconds"] = time.perf_counter() - t0
    write_json(folder / RUN_FILES["summary"], summary)
    return folder
