"""run(config): the whole PV021 run, as a short list of named steps:

    check the options -> load the training data (the test files checked) ->
    build the model (or load a saved one) -> train -> predict and write the
    two prediction files -> the results and the report

The test vectors enter in one place, predict_and_write, after training; the
test labels after that, for the printed accuracy only. The prediction files
are written before anything that only feeds the report.
"""
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import arch, html_report, metrics, options, serialize
from ._kernels import ffi, lib
from .budget import Budget
from .config import ALLOWED_SEEDS, configure
from .cpu import SharedCores
from .data import (
    Normalizer,
    check_labels,
    check_vectors,
    gather,
    load_labels,
    load_vectors,
    split,
)
from .errors import PynnError
from .fuse import fuse
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
from .metrics import class_names
from .model import build
from .optim import OPTIMIZERS
from .report import Reporter
from .train import fit


@dataclass
class Data:
    """The training set, normalized in place, and what is known of the test set."""
    x: object              # (N, D) float32 Tensor, every training row
    y: object              # (N,) int32 labels
    rows: list             # the rows trained on
    val_rows: list         # the rows held out for validation
    norm: Normalizer       # statistics of the training rows only (--load: the saved ones)
    classes: int
    test_rows: int         # lines of the test vectors (their format checked, values unread)
    test_labels: bool      # whether the test labels passed their check (used after writing)

    @property
    def width(self):
        return self.x.shape[1]


def run(cfg, reporter=None, budget=None):
    """Train on cfg.data_dir (or load cfg.load), write the two prediction files
    into cfg.out_dir, and a run folder with the report into cfg.out_dir/cfg.runs_dir.

    ``budget``: a pynn.budget.Budget (default: cfg.time_budget seconds from
    the run's start). Returns a dict of results. Raises PynnError for bad
    input or options."""
    reporter = reporter or Reporter()
    budget = budget or Budget(cfg.time_budget)
    check_options(cfg, reporter)
    loaded = serialize.load(cfg.load) if cfg.load else None  # (model, Normalizer)
    cores = SharedCores() if not cfg.threads and lib.pynn_have_openmp() else None
    lib.pynn_set_threads(cfg.threads or (cores.threads if cores else 1))
    rng = random.Random(cfg.seed)
    data = load_data(cfg, loaded, rng, reporter)
    if loaded:
        model, fitted = fused_or_plain(loaded[0], cfg), None
        check_images(cfg, data.width, model.input_shape is not None)
        reporter.loaded(model, cfg.load)
    else:
        cfg = fit_to_data(cfg, data.width, reporter)
        budget.to_predict = (data.x.shape[0] + data.test_rows) * (2 if cfg.tta == "flip" else 1)
        model, fitted = train(cfg, data, rng, reporter, budget, cores)
    trained = budget.now()
    train_pred, test_pred = predict_and_write(cfg, model, data)
    seconds = budget.now() - budget.start
    results = results_of(cfg, data, fitted, train_pred, test_pred, reporter)
    reporter.summary(results["val_acc"], results["test_acc"], seconds)
    if cfg.save:
        reporter.saved("model", cfg.save)
    results.update({"seconds": seconds, "train_seconds": trained - budget.start})
    results["run_dir"] = write_report(cfg, model, data, results, reporter)
    return results


def check_options(cfg, reporter):
    """Every option, and the output folders, before any file is read."""
    options.check(cfg)
    if cfg.seed not in ALLOWED_SEEDS:
        reporter.note(f"seed {cfg.seed}: the course allows only {ALLOWED_SEEDS}")
    out = Path(cfg.out_dir)
    if check_writable(out):
        reporter.note(f"created the output folder {out}")
    if cfg.save:  # checked before training, not after it
        if Path(cfg.save).is_dir():
            raise PynnError(f"{cfg.save}: is a folder; --save needs a file name")
        if check_writable(Path(cfg.save).parent):
            reporter.note(f"created the folder {Path(cfg.save).parent} for --save")


def load_data(cfg, loaded, rng, reporter):
    """The training vectors and labels, split and normalized; the test
    vectors' and labels' format checked now (0.02 s), so that a broken file
    is reported at once, not after the training; their values are read only
    after it. A bad test labels file is a note: they only feed the printed
    accuracy."""
    folder = Path(cfg.data_dir)
    width = loaded[0].input_width() if loaded else None
    x = load_vectors(folder / CSV_NAMES["train_vectors"], width=width)
    test_rows, _ = check_vectors(folder / CSV_NAMES["test_vectors"], width=x.shape[1])
    test_labels = check_test_labels(folder / CSV_NAMES["test_labels"], test_rows, reporter)
    if loaded:  # a saved model: its own normalization and classes; no validation part
        model, norm = loaded
        classes = model.layers[-1].out_features
        y = load_labels(folder / CSV_NAMES["train_labels"], count=x.shape[0], classes=classes)
        rows, val_rows = list(range(x.shape[0])), []
    else:
        y = load_labels(folder / CSV_NAMES["train_labels"], count=x.shape[0])
        classes = max(y.tolist()) + 1
        rows, val_rows = split(x.shape[0], cfg.val_fraction, rng)
        norm = Normalizer.fit(x, rows)  # statistics of the training part only
    norm(x)
    return Data(x, y, rows, val_rows, norm, classes, test_rows, test_labels)


def check_test_labels(path, count, reporter):
    """Whether the test labels exist and pass the format and count check."""
    if not path.exists():
        return False
    try:
        check_labels(path, count)
    except PynnError as e:
        reporter.note(f"test labels not used: {e}")
        return False
    return True


def fit_to_data(cfg, width, reporter):
    """cfg, or the MLP preset when the default (a CNN) was not asked for and
    the vectors are not square images; then the image options checked."""
    wants_images = arch.needs_images(arch.parse(cfg.arch))
    if wants_images and not arch.image_shape(width) and not {"model", "arch"} & set(cfg.explicit):
        reporter.note(f"the vectors have {width} values, not a square image: "
                      f"training the mlp preset instead of {cfg.model}")
        cfg = configure("mlp", **{k: getattr(cfg, k) for k in cfg.explicit})
        wants_images = False
    check_images(cfg, width, wants_images)
    return cfg


def check_images(cfg, width, wants_images):
    """Convolutions and test-time flips read each vector as a square image."""
    if arch.image_shape(width):
        return
    problem = f"the vectors have {width} values (not a square number)"
    if wants_images:
        asked = f"--arch {cfg.arch}" if "arch" in cfg.explicit else f"--model {cfg.model}"
        raise PynnError(f"{asked}: convolutions need square images, but {problem}")
    if cfg.tta == "flip":
        raise PynnError(f"--tta flip: test-time flips need square images, but {problem}")


def kernels():
    """What the kernels were built with: the GEMM's kernel (and its
    instruction set) and the compiler."""
    return (f"{ffi.string(lib.pynn_gemm_kernel()).decode()}, "
            f"{ffi.string(lib.pynn_compiler()).decode().strip()}")


def build_optimizer(cfg, params):
    """The --optimizer over the model's parameters: SGD with momentum, whose
    --weight-decay is L2 (added to the gradient, so momentum carries it too),
    or AdamW, whose decay is decoupled (w -= lr * wd * w beside the step)."""
    if cfg.optimizer == "sgd":
        return OPTIMIZERS["sgd"](params, cfg.lr, cfg.momentum, cfg.weight_decay)
    return OPTIMIZERS["adam"](params, cfg.lr, weight_decay=cfg.weight_decay)


def fused_or_plain(model, cfg):
    """What runs: the model's layers through fused kernels, or (--no-fuse)
    each layer as written. Either trains the same Parameters."""
    return fuse(model) if cfg.fuse else model


def train(cfg, data, rng, reporter, budget, cores=None):
    """A new model of cfg.arch, trained on data.rows: (what ran, fit's result).
    ``cores``: a pynn.cpu.SharedCores that fits the thread count to the free
    cores after each epoch, or None (--threads given)."""
    model = fused_or_plain(build(cfg.arch, data.width, data.classes, cfg.activation, rng, cfg.dropout,
                       cfg.batchnorm, cfg.sigmoid_steepness), cfg)
    optimizer = build_optimizer(cfg, model.parameters())
    threads = lib.pynn_get_threads() if lib.pynn_have_openmp() else "1: built without OpenMP"
    reporter.start(model, len(data.rows), len(data.val_rows), cfg, threads, kernels=kernels())
    x_val, y_val = ((gather(data.x, data.val_rows), gather(data.y, data.val_rows))
                    if data.val_rows else (None, None))
    fitted = fit(model, optimizer, data.x, data.y, data.rows, x_val, y_val, cfg, reporter, rng,
                 budget, fill=data.norm.normalized(0.0), cores=cores)
    return model, fitted


def predict_and_write(cfg, model, data):
    """Predictions of every training row (in input order) and of the test set
    (its values' first use), written as the two prediction files together;
    then the model file (--save). Returns both int32 Tensors."""
    flip = cfg.tta == "flip"
    train_pred = model.predict(data.x, flip=flip)
    x_test = data.norm(load_vectors(Path(cfg.data_dir) / CSV_NAMES["test_vectors"],
                                    width=data.width))
    test_pred = model.predict(x_test, flip=flip)
    out = Path(cfg.out_dir)
    write_prediction_files({out / PREDICTION_NAMES["train"]: train_pred,
                            out / PREDICTION_NAMES["test"]: test_pred})
    if cfg.save:
        serialize.save(cfg.save, model, data.norm)
    return train_pred, test_pred


def results_of(cfg, data, fitted, train_pred, test_pred, reporter):
    """Per-class results of the validation rows (their predictions are those
    rows of the training predictions: predicted once) and, when the test
    labels passed their check, of the test set; printed. The results dict."""
    val_pred = y_val = y_test = None
    if data.val_rows:
        val_pred, y_val = gather(train_pred, data.val_rows), gather(data.y, data.val_rows)
    if data.test_labels:
        y_test = load_test_labels(cfg, test_pred.shape[0], data.classes, reporter)
    results = {name: metrics.evaluate(truth, pred, data.classes) if truth is not None else None
               for name, truth, pred in (("validation", y_val, val_pred),
                                         ("test", y_test, test_pred))}
    for title, key in (("validation", "validation"), ("test (final evaluation)", "test")):
        if results[key] is not None:
            reporter.evaluation(title, results[key])
    n = data.y.shape[0]
    results.update({
        "history": fitted.history if fitted else [], "val_acc": fitted.val_acc if fitted else None,
        "test_acc": results["test"]["accuracy"] if results["test"] else None,
        # accuracy of the final model on every row of the training file (the
        # epoch lines' train accuracy is that of the augmented training batches)
        "train_file_acc": lib.pynn_count_equal(train_pred.ptr, data.y.ptr, n) / n,
        "stopped": fitted.stopped if fitted else "loaded", "plan": fitted.plan if fitted else None,
        "val_pred": val_pred, "y_val": y_val})
    return results


def load_test_labels(cfg, count, classes, reporter):
    """The test labels (for the printed accuracy only), or None with a note."""
    try:
        return load_labels(Path(cfg.data_dir) / CSV_NAMES["test_labels"], count=count,
                           classes=classes)
    except PynnError as e:
        reporter.note(f"test labels not used: {e}")
        return None


def write_report(cfg, model, data, results, reporter):
    """The run folder (config, metrics, summary, report.html), or None: none
    asked for, or a note when it cannot be written (the predictions are)."""
    if not cfg.runs_dir:
        return None
    t0 = time.perf_counter()
    try:
        summary = {"run": None, "model": repr(model), "loaded_from": cfg.load or None,
                   "stopped": results["stopped"], "epochs": len(results["history"]),
                   "plan": results["plan"], "classes": class_names(data.classes),
                   **{k: results[k] for k in ("train_file_acc", "val_acc", "test_acc",
                                              "validation", "test")},
                   "timings": {"train_seconds": results["train_seconds"],
                               "total_seconds": results["seconds"]}}
        x_val = gather(data.x, data.val_rows) if data.val_rows else None
        images = (html_report.misclassified(x_val, results["y_val"], results["val_pred"],
                                            data.classes, data.norm,
                                            [r + 1 for r in data.val_rows])
                  if x_val is not None else [])
        pictures = weight_pictures(model, x_val, data.norm)
        folder = write_run_folder(Path(cfg.out_dir) / cfg.runs_dir, cfg, results["history"],
                                  summary, images, pictures, t0)
    except PynnError as e:
        reporter.note(f"report not written: {e}")
        return None
    reporter.saved(f"report ({summary['timings']['report_seconds']:.2f}s)",
                   folder / RUN_FILES["report"])
    return folder


PICTURE_UNITS = 64  # hidden units whose weights report.html shows (MLP)
PICTURE_IMAGES, PICTURE_MAPS = 3, 8  # validation images and filters shown as feature maps (CNN)


def weight_pictures(model, x_val, norm):
    """Plain data for report.html's "weights as pictures"
    (html_report.weight_pictures), or None when the inputs are not square
    one-channel images or the first layer is neither Linear nor Conv2d.
    MLP: the first Linear's weights into its first PICTURE_UNITS hidden
    units. CNN: the first convolution's filters and its output maps of the
    first PICTURE_IMAGES validation images."""
    first, width = model.plain.layers[0], model.input_width()
    shape = model.input_shape or arch.image_shape(width)
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
    ``t0``: when the report began (for timing)."""
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
