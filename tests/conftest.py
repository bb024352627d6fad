"""Shared test helpers."""

import importlib.util
import os
from pathlib import Path

import pytest

from pynn._kernels import lib
from pynn.io import CSV_NAMES

# run.sh's start time is for one timed run; the runs the tests start time themselves
os.environ.pop("PYNN_STARTED", None)

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# the small data subset of end-to-end tests: first rows of the real course data
N_TRAIN, N_TEST = 2000, 500
SUBSET = {"train_vectors": N_TRAIN, "train_labels": N_TRAIN,
          "test_vectors": N_TEST, "test_labels": N_TEST}


def load_script(name):
    """Import ``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    path = SCRIPTS_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _have_data():
    return all((DATA_DIR / CSV_NAMES[k]).exists() for k in SUBSET)


# The course CSVs are generated (git-ignored). On a fresh clone they are made
# here from the shipped IDX files, as ./run.sh would (2 s, once), so that the
# end-to-end tests run instead of skipping; they skip only without the data.
if not _have_data():
    try:
        load_script("prepare_data").prepare(DATA_DIR, log=lambda message: None)
    except (OSError, ValueError):
        pass
HAVE_DATA = _have_data()


def head(path, n):
    out = []
    with open(path, "rb") as f:
        for line in f:
            out.append(line)
            if len(out) == n:
                break
    return b"".join(out)


@pytest.fixture(scope="session")
def subset_dir(tmp_path_factory):
    """A data folder with the first rows of the four course CSVs."""
    if not HAVE_DATA:
        pytest.skip("the course CSVs in data/ are missing")
    folder = tmp_path_factory.mktemp("subset_data")
    for key, n in SUBSET.items():
        (folder / CSV_NAMES[key]).write_bytes(head(DATA_DIR / CSV_NAMES[key], n))
    return folder


# where a test claims that a result does not depend on the thread count: one
# thread, the cores here, more, and many more threads than cores
THREAD_COUNTS = (1, 2, 3, 16)
# such a test means nothing on a build that has only one thread
needs_threads = pytest.mark.skipif(not lib.pynn_have_openmp(),
                                   reason="a one-thread build (no OpenMP): no other thread "
                                          "count to compare with")


@pytest.fixture
def conv_path():
    """Set the convolution road for one test (lib.pynn_set_conv_path: by
    shape, im2col or Winograd); back to 'by shape' afterwards."""
    yield lib.pynn_set_conv_path
    lib.pynn_set_conv_path(lib.PYNN_CONV_BY_SHAPE)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Every test leaves the kernels' thread count as it found it."""
    before = lib.pynn_get_threads()
    yield
    lib.pynn_set_threads(before)
