"""pynn: a NumPy-free neural network for PV021 - Python orchestration, C kernels.

The public names, in the manner of torch.nn: build a model from layers, train
it with an optimizer against a loss; ``run`` does the whole course project.
"""
import os

# How long an idle OpenMP thread spins before it sleeps. libgomp reads this
# once, when the extension (and with it libgomp) is loaded, so it is set here,
# before that. Its default, 300 000 spins, is right for a machine of our own;
# on a shared machine whose cores are busy, threads waiting at a barrier burn
# the time slice of the thread they wait for: measured with the two cores
# loaded, an epoch on 2 threads took 8.3 s instead of 0.5 s. 10 000 spins
# cover the gaps between kernels of a step and give way quickly when a core
# is contended. An explicit GOMP_SPINCOUNT in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from ._kernels import lib as _lib
from .app import run
from .config import ALLOWED_SEEDS, PRESETS, Config, configure
from .data import Normalizer, load_labels, load_vectors
from .errors import PynnError
from .layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, MSELoss
from .model import Sequential, build, mlp
from .optim import SGD, Adam
from .tensor import Tensor

__all__ = [
    "ALLOWED_SEEDS",
    "PRESETS",
    "SGD",
    "Adam",
    "BatchNorm1d",
    "BatchNorm2d",
    "Config",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2d",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "Normalizer",
    "PynnError",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Tensor",
    "build",
    "configure",
    "get_threads",
    "load_labels",
    "load_vectors",
    "mlp",
    "run",
    "set_threads",
]


def set_threads(n):
    """Threads for the kernels; 0 = all cores, at most 16."""
    _lib.pynn_set_threads(n)


def get_threads():
    """The kernels' thread count now."""
    return _lib.pynn_get_threads()
