"""Evaluation metrics: the confusion matrix and what it tells per class.

Plain Python on purpose: counting 10k (true, predicted) pairs into a 10x10
table takes a few milliseconds, so there is nothing for C to speed up.

For one class k, with the confusion matrix ``cm[true][predicted]``:

    TP = cm[k][k]                      images of k predicted as k
    FP = column k without TP           other images predicted as k
    FN = row k without TP              images of k predicted as something else
    TN = everything else

    precision = TP / (TP + FP)         "when the model says k, how often is it right?"
    recall    = TP / (TP + FN)         "how many of the k images does it find?"
    accuracy  = (TP + TN) / N          one-vs-rest: "is it k or not?" answered right
                                       (what some texts call per-class accuracy is recall)

0/0 is defined as 0.0: a class the model never predicts has precision 0
(it finds none of its images either), and a class absent from the data has
recall 0. This matches scikit-learn's ``zero_division=0``.
"""

# The Fashion-MNIST labels 0..9, in order.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def class_names(classes):
    """Display names for labels 0..classes-1: Fashion-MNIST's when there are
    ten classes, otherwise "class 0", "class 1", ..."""
    if classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [f"class {k}" for k in range(classes)]


def _values(labels):
    """A list of ints from an int32 Tensor (anything with .tolist()) or a list."""
    return labels.tolist() if hasattr(labels, "tolist") else list(labels)


def confusion_matrix(truth, pred, classes):
    """cm[t][p] = how many items of true class t were predicted as p.

    ``truth`` and ``pred``: int32 Tensors or lists of the same length, with
    labels in [0, classes)."""
    truth, pred = _values(truth), _values(pred)
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predictions")
    cm = [[0] * classes for _ in range(classes)]
    for t, p in zip(truth, pred):
        if not (0 <= t < classes and 0 <= p < classes):
            raise ValueError(f"label pair ({t}, {p}) outside [0, {classes})")
        cm[t][p] += 1
    return cm


def _ratio(a, b):
    return a / b if b else 0.0  # 0/0 := 0.0 (see the module docstring)


def per_class(cm, names=None):
    """One dict per class: name, support (true items), precision, recall,
    accuracy (one-vs-rest), all computed from the confusion matrix ``cm``."""
    classes = len(cm)
    names = names or class_names(classes)
    total = sum(map(sum, cm))
    rows = []
    for k in range(classes):
        tp = cm[k][k]
        fn = sum(cm[k]) - tp
        fp = sum(cm[t][k] for t in range(classes)) - tp
        tn = total - tp - fn - fp
        rows.append({"class": names[k], "support": tp + fn,
                     "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                     "accuracy": _ratio(tp + tn, total)})
    return rows


def accuracy(cm):
    """Overall accuracy: the diagonal over the total (0.0 for no items)."""
    return _ratio(sum(cm[k][k] for k in range(len(cm))), sum(map(sum, cm)))


def evaluate(truth, pred, classes):
    """Everything the report shows for one labelled set, as plain JSON data."""
    cm = confusion_matrix(truth, pred, classes)
    return {"count": sum(map(sum, cm)), "accuracy": accuracy(cm),
            "per_class": per_class(cm), "confusion": cm}
