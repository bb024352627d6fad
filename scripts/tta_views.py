"""Which test-time augmentation pays: a saved model's validation accuracy
with the logits of several views of each image summed (an experiment;
docs/experiments.md, 2026-12-04).

Usage::

    python scripts/tta_views.py MODEL [--data-dir DIR] [--seed S] [--val-fraction F]

MODEL is a file of ``scripts/run.py --save``, trained on DIR with seed S: the
validation rows are then the ones that run held out (pynn.data.split, the
first use of the seeded rng, as pynn.app.load_data does), never the test
set. A view is (dy, dx, mirror): the image mirrored left-right when mirror
is 1, then moved dy pixels down and dx right, the background filling in (as
the training shifts, csrc/data.c pynn_gather_augment). Prints one line per
set of views: its accuracy on the validation rows. "flip" is what
``--tta flip`` computes.

Standard library and pynn only; slow (the views are built in Python).
"""
import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pynn

from pynn import serialize
from pynn.data import gather, load_labels, load_vectors, split
from pynn.io import CSV_NAMES
from pynn.tensor import Tensor

SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))      # one pixel each way
DIAGONALS = ((1, 1), (-1, -1), (1, -1), (-1, 1))
FLIP = ((0, 0, 0), (0, 0, 1))


def both(moves):
    """Each move as it is and mirrored."""
    return tuple((dy, dx, m) for dy, dx in moves for m in (0, 1))


# name -> views (a view listed twice counts twice)
VIEW_SETS = {
    "identity": ((0, 0, 0),),
    "flip": FLIP,
    "flip + 4 shifts, mirrored too": FLIP + both(SHIFTS),
    "flip + 4 shifts": FLIP + tuple((dy, dx, 0) for dy, dx in SHIFTS),
    "flip + horizontal shifts": FLIP + both(SHIFTS[:2]),
    "flip + vertical shifts": FLIP + both(SHIFTS[2:]),
    "flip + 4 diagonal shifts": FLIP + both(DIAGONALS),
    "flip twice + 4 shifts, mirrored too": FLIP + FLIP + both(SHIFTS),
    "all 18": FLIP + both(SHIFTS) + both(DIAGONALS),
}


def view(images, side, fill, dy, dx, mirror):
    """The rows of ``images`` (a list of n * side * side values) as one view."""
    out, blank = [], [fill] * side
    for start in range(0, len(images), side * side):
        img = images[start:start + side * side]
        for y in range(side):
            sy = y - dy
            if not 0 <= sy < side:
                out.extend(blank)
                continue
            row = img[sy * side:(sy + 1) * side]
            if mirror:
                row = row[::-1]
            if dx > 0:
                row = [fill] * dx + row[:side - dx]
            elif dx < 0:
                row = row[-dx:] + [fill] * -dx
            out.extend(row)
    return out


def logits(model, values, n):
    """The model's logits (a flat list, n rows) of n images: those that
    model.predict computes (evaluation mode, its batches)."""
    out = []
    model.predict(Tensor.from_list(values, (n, len(values) // n)),
                  on_logits=lambda start, stop, batch: out.extend(batch.tolist()))
    return out


def accuracies(model, norm, data_dir, seed, val_fraction):
    """{name of a view set: validation accuracy in %} for VIEW_SETS."""
    folder = Path(data_dir)
    x = load_vectors(folder / CSV_NAMES["train_vectors"], width=model.input_width())
    y = load_labels(folder / CSV_NAMES["train_labels"], count=x.shape[0])
    _, val_rows = split(x.shape[0], val_fraction, random.Random(seed))
    norm(x)
    images, labels = gather(x, val_rows).tolist(), gather(y, val_rows).tolist()
    n, side = len(labels), model.input_shape[0]
    fill = norm.normalized(0.0)
    views = {v: logits(model, view(images, side, fill, *v), n)
             for v in {v for vs in VIEW_SETS.values() for v in vs}}
    classes = len(views[(0, 0, 0)]) // n
    result = {}
    for name, vs in VIEW_SETS.items():
        hits = 0
        for i in range(n):
            total = [sum(views[v][i * classes + c] for v in vs) for c in range(classes)]
            hits += max(range(classes), key=total.__getitem__) == labels[i]
        result[name] = 100.0 * hits / max(1, n)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    args = ap.parse_args(argv)
    model, norm = serialize.load(args.model)
    for name, acc in accuracies(model, norm, args.data_dir, args.seed,
                                args.val_fraction).items():
        print(f"{name:40s} {acc:6.2f} %")


if __name__ == "__main__":
    main()
