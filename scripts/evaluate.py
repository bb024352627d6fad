"""Compare predicted labels with the true labels and print the accuracy.

Usage::

    python scripts/evaluate.py PREDICTIONS TRUTH [--threshold T]

Both files hold one integer label per line (as the course's
``*_labels.csv`` and ``*_predictions.csv`` do).  Output::

    Accuracy 0.8934
    correct 8934 of 10000

Exit status: 0 = fine, 1 = accuracy below ``--threshold``,
2 = bad input (the reason is printed as one ``error:`` line on stderr).

Standard library only.
"""

import argparse
import re
import sys

_INTEGER = re.compile(r"[-+]?[0-9]+")


def read_labels(path):
    """Return the integers in ``path``, one per line.

    A final newline is optional; CRLF line endings and spaces around the
    number are accepted.  Any other line raises
    ``ValueError("<path>:<line>: not an integer: '<text>'")``.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:  # \r\n -> \n, BOM dropped
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the final newline (or an empty file)
        lines.pop()
    labels = []
    for number, line in enumerate(lines, start=1):
        value = line.strip()
        if not _INTEGER.fullmatch(value):
            raise ValueError(f"{path}:{number}: not an integer: {value!r}")
        labels.append(int(value))
    return labels


def evaluate(pred_path, truth_path):
    """Return ``(correct, total)`` for two label files of equal length."""
    predictions = read_labels(pred_path)
    truth = read_labels(truth_path)
    if len(predictions) != len(truth):
        raise ValueError(f"{pred_path} has {len(predictions)} lines "
                         f"but {truth_path} has {len(truth)}")
    if not truth:
        raise ValueError(f"{truth_path} is empty")
    correct = sum(p == t for p, t in zip(predictions, truth))
    return correct, len(truth)


def fraction(text):
    """argparse type: a float between 0 and 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Print the accuracy of predicted labels.")
    parser.add_argument("predictions", help="file with one predicted label per line")
    parser.add_argument("truth", help="file with one true label per line")
    parser.add_argument("--threshold", type=fraction, metavar="T",
                        help="exit with status 1 if the accuracy is below T")
    args = parser.parse_args(argv)

    try:
        correct, total = evaluate(args.predictions, args.truth)
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    accuracy = correct / total
    print(f"Accuracy {accuracy:.4f}")
    print(f"correct {correct} of {total}")

    if args.threshold is not None and accuracy < args.threshold:
        shown = f"{accuracy:.4f}"
        if float(shown) >= args.threshold:  # rounding hid the difference
            shown = repr(accuracy)
        print(f"below threshold: {shown} < {args.threshold}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
