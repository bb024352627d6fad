"""pynn: a NumPy-free neural network for PV021 - Python orchestration, C kernels.

The public names, in the manner of torch.nn: build a model from layers, train
it with an optimizer against a loss; ``run`` does the whole course project.
"""
from .app import run
from .config import ALLOWED_SEEDS, Config
from .data import Normalizer, load_labels, load_vectors
from .errors import PynnError
from .layers import LeakyReLU, Linear, ReLU, Tanh
from .loss import CrossEntropyLoss
from .model import Sequential, mlp
from .optim import SGD, Adam
from .tensor import Tensor
from ._kernels import lib as _lib

__all__ = ["run", "Config", "ALLOWED_SEEDS", "Normalizer", "load_labels", "load_vectors",
           "PynnError", "Linear", "ReLU", "LeakyReLU", "Tanh", "CrossEntropyLoss",
           "Sequential", "mlp", "SGD", "Adam", "Tensor", "set_threads", "get_threads"]


def set_threads(n):
    """Threads for the kernels; 0 = all cores, at most 16."""
    _lib.pynn_set_threads(n)


def get_threads():
    return _lib.pynn_get_threads()
