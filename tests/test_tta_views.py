"""scripts/tta_views.py: the views it builds, and that its "identity" and
"flip" sets compute what pynn's predictions with --tta off and flip do."""
import random

from pynn import build
from pynn._kernels import lib
from pynn.data import Normalizer, gather, load_labels, load_vectors, split
from pynn.io import CSV_NAMES

from conftest import load_script

tta = load_script("tta_views")


def test_a_view_mirrors_then_moves_and_fills():
    img = [1, 2, 3,
           4, 5, 6,
           7, 8, 9]
    assert tta.view(img, 3, 0, 0, 0, 0) == img
    assert tta.view(img, 3, 0, 0, 0, 1) == [3, 2, 1, 6, 5, 4, 9, 8, 7]
    assert tta.view(img, 3, 0, 1, 0, 0) == [0, 0, 0, 1, 2, 3, 4, 5, 6]      # down
    assert tta.view(img, 3, 0, 0, -1, 0) == [2, 3, 0, 5, 6, 0, 8, 9, 0]     # left
    assert tta.view(img, 3, -9, -1, 1, 1) == [-9, 6, 5, -9, 9, 8, -9, -9, -9]  # up, right
    assert tta.view(img + img, 3, 0, 0, 0, 1)[9:] == [3, 2, 1, 6, 5, 4, 9, 8, 7]  # per image


def test_identity_and_flip_are_pynns_predictions(subset_dir):
    x = load_vectors(subset_dir / CSV_NAMES["train_vectors"])
    y = load_labels(subset_dir / CSV_NAMES["train_labels"], count=x.shape[0])
    model = build("c4,p,f8", 784, 10, "relu", random.Random(0))
    norm = Normalizer.fit(x, list(range(x.shape[0])))
    found = tta.accuracies(model, norm, subset_dir, 42, 0.5)
    assert set(found) == set(tta.VIEW_SETS)
    _, rows = split(x.shape[0], 0.5, random.Random(42))
    norm(x)
    xv, yv = gather(x, rows), gather(y, rows)
    for name, flip in (("identity", False), ("flip", True)):
        pred = model.predict(xv, flip=flip)
        hits = lib.pynn_count_equal(pred.ptr, yv.ptr, len(rows))
        assert found[name] == 100.0 * hits / len(rows), name
