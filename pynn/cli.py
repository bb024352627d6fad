"""The command line of pynn, one parser for its two doors: scripts/run.py (the
PV021 entry point, run by run.sh) and ``python -m pynn`` (an installed pynn).
Every option is a field of pynn.config.Config, its default the default
preset's; an option given explicitly wins over the preset's value.
"""
import argparse
import traceback
from dataclasses import fields
from pathlib import Path

from . import arch, options
from .app import run
from .budget import Budget, run_started
from .config import ALLOWED_SEEDS, DEFAULT_MODEL, configure
from .cpu import MAX_DEFAULT_THREADS
from .errors import PynnError
from .io import CSV_NAMES
from .report import error

HELP = {
    "data_dir": "folder with the four course CSVs",
    "out_dir": "folder for the prediction files",
    "model": "preset: a named set of defaults (pynn/config.py)",
    "arch": arch.HELP,
    "activation": "of every hidden layer (sigmoid: the lecture's logistic sigmoid)",
    "sigmoid_steepness": "the steepness lambda of the sigmoid: 1 / (1 + e^(-lambda x))",
    "loss": "cross_entropy (softmax outputs) or mse (the lecture's mean squared error "
            "against one-hot targets, identity outputs)",
    "fuse": "run the first Conv2d+BatchNorm+ReLU+MaxPool2d, BatchNorm+ReLU+MaxPool2d, "
            "Linear+ReLU and BatchNorm+ReLU through fused kernels (faster; the same forward "
            "values, gradients equal up to the order of a few sums, so training ends on "
            "other last bits); --no-fuse runs each layer as written",
    "batchnorm": "batch norm after: conv (each convolution), all (and each hidden dense "
                 "layer) or off",
    "dropout": "dropout probability after each hidden dense activation (0: none)",
    "epochs": "passes over the training part",
    "batch_size": "rows per step (0: all of the training part, batch gradient descent; "
                  "1: the online algorithm; more: minibatch SGD)",
    "optimizer": "adam (AdamW) or sgd (with momentum)",
    "lr": "base learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay on weights (not biases, not batch-norm scales)",
    "label_smoothing": "label smoothing eps: targets (1 - eps) on the label + eps / classes "
                       "on every class (0: none)",
    "augment": "on: random shifts by up to --shift pixels and horizontal flips of training "
               "images (never of validation or test images); flip: flips only; off. For "
               "networks with a conv, pool or residual token only (a dense-only --arch "
               "trains on the rows as they are)",
    "shift": "the largest shift of --augment on, in pixels",
    "erase": "random erasing: the chance that a training image loses a random rectangle "
             "(at most half its height and width) to the background",
    "ema": "weight averaging: validate, keep and predict with the exponential moving "
           "average of the weights, this decay per step (e.g. 0.999; 0: off)",
    "tta": "test-time augmentation: flip = predict each image and its mirror image "
           "and add their logits (validation, training and test predictions); off",
    "val_fraction": "part of the training set held out for validation (0 allowed)",
    "seed": f"random seed (the course allows {', '.join(map(str, ALLOWED_SEEDS))})",
    "threads": f"kernel threads (0: the free cores, at most {MAX_DEFAULT_THREADS})",
    "schedule": "learning-rate schedule after the warm-up",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "time_budget": "seconds for the whole run, counted from its start (run.sh's, when it "
                   "passes it on): training stops early enough for the predictions and the "
                   "files to fit; the course allows 600",
    "runs_dir": "folder for run folders <timestamp>/ with report.html, metrics and "
                "summary, relative to --out-dir; '' writes none",
    "save": "file to save the trained model to",
    "load": "saved model (--save) to predict with; no training",
}
NOT_OPTIONS = ("explicit",)  # Config fields that are not set from the command line


def hidden_sizes(text):
    """--hidden 256,128: the shorthand of --arch f256,f128 ('' for none); the
    same rules as --arch (an empty token inside the list is an error)"""
    if not text.strip():
        return ""
    if any(not s.strip() for s in text.split(",")):
        raise argparse.ArgumentTypeError(f"an empty token in {text!r} (a comma too many?)")
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("hidden sizes must be positive")
    return ",".join(f"f{s}" for s in sizes)


def parser(prog=None, root=None):
    """The options, one per Config field; ``root``: the folder whose data/
    and which prediction files are the defaults (None: the current folder)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train pynn on Fashion-MNIST and write predictions. The defaults shown "
                    f"are those of the default preset, --model {DEFAULT_MODEL}; another "
                    "preset has its own (pynn/config.py), and an option given explicitly "
                    "wins over a preset.")
    defaults = configure()
    for f in fields(defaults):
        if f.name in NOT_OPTIONS:
            continue
        default = getattr(defaults, f.name)
        shown = "none" if default == "" else default
        if root is not None and f.name in ("data_dir", "out_dir"):  # as main() resolves them
            shown = Path(root) / default
        text = HELP[f.name]
        # no default here: only what the user gives reaches configure()
        kind = ({"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else
                {"type": type(default), "choices": options.CHOICES.get(f.name)})
        p.add_argument("--" + f.name.replace("_", "-"), default=argparse.SUPPRESS, **kind,
                       help=f"{text} (default: {shown})".replace("%", "%%"))
    p.add_argument("--hidden", type=hidden_sizes, dest="arch", default=argparse.SUPPRESS,
                   help="hidden dense layer sizes, comma-separated: --hidden 256,128 is "
                        "--arch f256,f128")
    return p


def main(argv=None, root=None, prepare=None, prog=None):
    """The command line: parse argv, run, return the exit code: 0; 2 for bad
    input or options (one line); 130 for Ctrl-C; 1 for a bug (the traceback,
    then one line saying so). ``root`` is the folder whose data/ and which
    prediction files are the defaults (None: the current folder); ``prepare``
    makes missing course CSVs in a data folder from the shipped IDX files
    (scripts/prepare_data.py), or None."""
    started = run_started()  # the run's start: before anything is parsed or read
    given = vars(parser(prog, root).parse_args(argv))
    root = Path(root) if root is not None else Path(".")
    given.setdefault("data_dir", str(root / "data"))
    given.setdefault("out_dir", str(root))
    try:
        cfg = configure(**given)
        options.check(cfg)  # every option first: nothing is read before they are right
        data = Path(cfg.data_dir)
        if not data.is_dir():
            raise PynnError(f"{data}: " + ("not a folder" if data.exists() else "no such folder"))
        needed = ("train_vectors", "train_labels", "test_vectors")
        missing = [k for k in needed if not (data / CSV_NAMES[k]).exists()]
        if missing and prepare:
            try:
                prepare(data)
            except PynnError as e:
                raise PynnError(f"{data / CSV_NAMES[missing[0]]}: no such file, and it cannot "
                                f"be made: {e}") from None
        run(cfg, budget=Budget(cfg.time_budget, started))
    except PynnError as e:
        error(e)
        return 2
    except MemoryError as e:
        error(f"out of memory{f' ({e})' if str(e) else ''}")
        return 2
    except KeyboardInterrupt:
        # a Ctrl-C during training ends training only (fit() catches it); this
        # one came while loading, predicting or writing: prediction files are
        # replaced whole or not at all (pynn.io.write_atomic)
        error("interrupted")
        return 130
    except Exception:  # noqa: BLE001 - not bad input: a bug, whose traceback says where
        traceback.print_exc()
        error("this is a bug in pynn (or in code added to it), not bad input: "
              "the traceback above shows where")
        return 1
    return 0
