#!/usr/bin/env python3
"""PV021 entry point: train on data/, write train_predictions.csv and
test_predictions.csv. Every option's default comes from pynn.config.Config.

    python scripts/run.py [--hidden 256,128] [--epochs 15] [...]
"""
import argparse
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

HELP = {
    "data_dir": "folder with the four course CSVs",
    "out_dir": "folder for the prediction files",
    "hidden": "hidden layer sizes, comma-separated (e.g. 256,128)",
    "activation": "relu, leaky_relu or tanh",
    "dropout": "dropout probability after each hidden activation (0: none)",
    "epochs": "passes over the training part",
    "batch_size": "rows per step",
    "optimizer": "adam or sgd",
    "lr": "base learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay on weights (not biases)",
    "val_fraction": "part of the training set held out for validation (0 allowed)",
    "seed": "random seed (the course allows 0, 1, 2, 3, 42)",
    "threads": "kernel threads (0: the free cores, at most 16)",
    "schedule": "learning-rate schedule: cosine or constant",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "time_budget": "seconds after which training stops (best weights are kept)",
    "runs_dir": "folder for run folders <timestamp>/ with report.html, metrics and "
                "summary, relative to --out-dir; '' writes none",
    "save": "file to save the trained model to",
    "load": "saved model (--save) to predict with; no training",
}
CHOICES = {"activation": ("relu", "leaky_relu", "tanh"), "optimizer": ("adam", "sgd"),
           "schedule": ("cosine", "constant")}


def hidden_sizes(text):
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("hidden sizes must be positive")
    return sizes


def parser():
    from pynn.config import Config

    p = argparse.ArgumentParser(description="Train pynn on Fashion-MNIST and write predictions.")
    defaults = Config()
    for f in fields(Config):
        default = getattr(defaults, f.name)
        kind = hidden_sizes if f.name == "hidden" else type(default)
        shown = ",".join(map(str, default)) if f.name == "hidden" else default
        if default == "":
            shown = "none"
        if f.name == "data_dir":
            default = str(ROOT / "data")
        if f.name == "out_dir":
            default = str(ROOT)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default,
                       choices=CHOICES.get(f.name), help=f"{HELP[f.name]} (default: {shown})")
    return p


def main(argv=None):
    try:
        import pynn
    except ImportError as e:
        print(f"error: pynn is not installed ({e}); run ./run.sh", file=sys.stderr)
        return 2
    from pynn.config import Config
    from pynn.io import CSV_NAMES
    from pynn.report import error

    args = parser().parse_args(argv)
    cfg = Config(**vars(args))
    try:
        data = Path(cfg.data_dir)
        if not data.is_dir():
            raise pynn.PynnError(f"{data}: " + ("not a folder" if data.exists() else "no such folder"))
        needed = ("train_vectors", "train_labels", "test_vectors")
        missing = [k for k in needed if not (data / CSV_NAMES[k]).exists()]
        if missing:
            import prepare_data  # the IDX files shipped in data/ -> course CSVs

            try:
                prepare_data.prepare(data)
            except FileNotFoundError as e:
                raise pynn.PynnError(f"{data / CSV_NAMES[missing[0]]}: no such file, "
                                     f"and it cannot be made: {e}") from None
        pynn.run(cfg)
    except pynn.PynnError as e:
        error(e)
        return 2
    except (OSError, ValueError) as e:  # e.g. from prepare_data
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
