"""pynn.metrics: confusion matrix and per-class metrics on hand-computed cases."""
import random

import pytest

from pynn.metrics import (
    FASHION_MNIST_CLASSES,
    accuracy,
    class_names,
    confusion_matrix,
    evaluate,
    per_class,
)
from pynn.tensor import Tensor

# 9 items of 3 classes; the mistakes: two 0s called 1, one 2 called 1
TRUTH = [0, 0, 0, 0, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 1, 1, 1, 1, 2, 2]
CM = [[2, 2, 0],   # true 0: 2 right, 2 called "1"
      [0, 2, 0],   # true 1: both right
      [0, 1, 2]]   # true 2: 2 right, 1 called "1"
# by hand:   TP  FN  FP  TN   precision  recall  accuracy (one-vs-rest)
#   class 0   2   2   0   5   2/2        2/4     7/9
#   class 1   2   0   3   4   2/5        2/2     6/9
#   class 2   2   1   0   6   2/2        2/3     8/9
EXPECTED = [(4, 1.0, 2 / 4, 7 / 9), (2, 2 / 5, 1.0, 6 / 9), (3, 1.0, 2 / 3, 8 / 9)]


def test_confusion_matrix_three_classes():
    assert confusion_matrix(TRUTH, PRED, 3) == CM


def test_confusion_matrix_from_int32_tensors():
    truth = Tensor.from_list(TRUTH, dtype="int32")
    pred = Tensor.from_list(PRED, dtype="int32")
    assert confusion_matrix(truth, pred, 3) == CM


def test_per_class_precision_recall_accuracy():
    rows = per_class(CM, ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    for r, (support, precision, recall, acc) in zip(rows, EXPECTED):
        assert r["support"] == support
        assert r["precision"] == pytest.approx(precision)
        assert r["recall"] == pytest.approx(recall)
        assert r["accuracy"] == pytest.approx(acc)
    assert accuracy(CM) == pytest.approx(6 / 9)


def test_class_never_predicted_and_class_absent_are_zero_not_errors():
    """0/0 is defined as 0.0 (the module docstring says so)."""
    # class 2 is never predicted: precision 0/0; class 3 never occurs at all
    cm = confusion_matrix([0, 1, 2, 2], [0, 1, 1, 1], 4)
    assert cm == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    rows = per_class(cm)
    assert rows[2]["precision"] == 0.0 and rows[2]["recall"] == 0.0   # 0/0 and 0/2
    assert rows[3]["precision"] == 0.0 and rows[3]["recall"] == 0.0   # 0/0 and 0/0
    assert rows[3]["support"] == 0 and rows[3]["accuracy"] == 1.0     # never wrong about "3"
    assert rows[1]["precision"] == pytest.approx(1 / 3) and rows[1]["recall"] == 1.0


def test_empty_input():
    cm = confusion_matrix([], [], 2)
    assert cm == [[0, 0], [0, 0]] and accuracy(cm) == 0.0
    assert all(r["precision"] == r["recall"] == r["accuracy"] == 0.0 for r in per_class(cm))


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="3 true labels but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 1], [0, -1], 2)


def test_random_against_the_definitions():
    rng = random.Random(5)
    k, n = 10, 2000
    truth = [rng.randrange(k) for _ in range(n)]
    pred = [t if rng.random() < 0.7 else rng.randrange(k) for t in truth]
    result = evaluate(truth, pred, k)
    assert result["count"] == n
    assert result["accuracy"] == pytest.approx(sum(t == p for t, p in zip(truth, pred)) / n)
    for c, r in enumerate(result["per_class"]):
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        predicted, actual = pred.count(c), truth.count(c)
        assert r["precision"] == pytest.approx(tp / predicted)
        assert r["recall"] == pytest.approx(tp / actual)
        assert r["accuracy"] == pytest.approx(sum((t == c) == (p == c)
                                                  for t, p in zip(truth, pred)) / n)
        assert sum(result["confusion"][c]) == actual == r["support"]


def test_class_names():
    assert class_names(10) == list(FASHION_MNIST_CLASSES)
    assert class_names(10)[0] == "T-shirt/top" and class_names(10)[9] == "Ankle boot"
    assert class_names(3) == ["class 0", "class 1", "class 2"]
    assert per_class(confusion_matrix([0, 1], [0, 1], 2))[1]["class"] == "class 1"
