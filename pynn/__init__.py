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

from .app import run  # noqa: E402
from .config import ALLOWED_SEEDS, PRESETS, Config, configure
from .data import Normalizer, load_labels, load_vectors
from .errors import PynnError
from .layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, LeakyReLU, Linear,
                     MaxPool2d, ReLU, Tanh)
from .loss import CrossEntropyLoss
from .model import Sequential, build, mlp
from .optim import SGD, Adam
from .tensor import Tensor
from ._kernels import lib as _lib

__all__ = ["run", "Config", "configure", "PRESETS", "ALLOWED_SEEDS", "Normalizer", "load_labels",
           "load_vectors", "PynnError", "Linear", "ReLU", "Dropout", "LeakyReLU", "Tanh",
           "Conv2d", "MaxPool2d", "BatchNorm1d", "BatchNorm2d", "Flatten", "CrossEntropyLoss",
           "Sequential", "build", "mlp", "SGD", "Adam", "Tensor", "set_threads", "get_threads"]


def set_threads(n):
    """Threads for the kernels; 0 = all cores, at most 16."""
    _lib.pynn_set_threads(n)


def get_threads():
    return _lib.pynn_get_threads()
