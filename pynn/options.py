"""What every option may be, checked in one place, before any file is read.

The choices come from where the things are defined (the activations from
pynn.layers, the losses from pynn.loss, ...), so that the command line, the
checks and the code can never disagree. A bad value is a PynnError naming
the option: one line, exit code 2."""
import math

from . import arch
from .config import AUGMENT, BATCHNORM, PRESETS, SCHEDULES, TTA
from .errors import PynnError
from .layers import ACTIVATIONS
from .loss import LOSSES
from .optim import OPTIMIZERS

CHOICES = {"model": tuple(PRESETS), "activation": tuple(ACTIVATIONS), "loss": tuple(LOSSES),
           "batchnorm": BATCHNORM, "optimizer": tuple(OPTIMIZERS), "augment": AUGMENT,
           "tta": TTA, "schedule": SCHEDULES}

# what a number must be: (test, the words an error uses); every number must also be finite
RANGES = {
    "sigmoid_steepness": (lambda v: v > 0, "above 0"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "erase": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "ema": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "shift": (lambda v: 0 <= v <= 8, "0 to 8 pixels"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lr": (lambda v: v >= 0, "0 or more"),
    "momentum": (lambda v: v >= 0, "0 or more"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "time_budget": (lambda v: v > 0, "above 0"),
    "epochs": (lambda v: v >= 1, "1 or more"),
    "batch_size": (lambda v: v >= 0, "0 (all rows per step) or more"),
    "threads": (lambda v: 0 <= v <= 256, "0 (the free cores) to 256"),
}


def flag(name):
    return "--" + name.replace("_", "-")


def check(cfg):
    """Raise PynnError for the first option of cfg (a Config) that is not allowed."""
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise PynnError(f"{flag(name)} {value}: not one of {', '.join(choices)}")
    for name, (test, what) in RANGES.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and test(value)):
            raise PynnError(f"{flag(name)} {value:g}: must be {what}")
    arch.parse(cfg.arch)  # names a bad token
