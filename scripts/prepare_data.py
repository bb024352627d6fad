"""Write the course's Fashion-MNIST CSV files from the IDX ``.gz`` files.

Usage::

    python scripts/prepare_data.py [--data-dir DIR] [--force]

The PV021 course hands out Fashion-MNIST as four CSV files: one image per
line as 784 comma-separated integers 0-255, and one label 0-9 per line.
This repository ships the original IDX files instead (see data/README.md)
and this script converts them.

A CSV that already exists is left alone (it may be the grader's data),
unless ``--force`` is given.  Every file is written to a temporary file in
the same folder first and then renamed, so an interrupted run never leaves
a half-written CSV behind.

The standard library and pynn's own io and errors modules: run it with the
Python that has pynn (.venv/bin/python, which ./run.sh makes).
"""

import argparse
import gzip
import struct
import sys
import zlib
from pathlib import Path

from pynn.errors import PynnError
from pynn.io import CSV_NAMES, write_atomic

# The course CSV names are defined once, in pynn/io.py; the IDX names only here.
IDX_NAMES = {
    "train_vectors": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_vectors": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
SPLITS = ("train", "test")

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte)
# and the number of dimensions.
MAGIC_LABELS = 0x00000801  # 1 dimension: count
MAGIC_IMAGES = 0x00000803  # 3 dimensions: count, rows, columns

# b"0", b"1", ..., b"255": formatting a byte is then a single list lookup.
_DECIMAL = [str(i).encode("ascii") for i in range(256)]


def read_idx(path):
    """Read a gzip'ed IDX file of unsigned bytes.

    Returns ``(dims, payload)``: the dimensions as a tuple of ints and the
    data as ``bytes`` (row-major, one byte per element).  Raises
    ``PynnError("<path>: ...")`` if the file is not a valid IDX file.
    """
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise PynnError(f"{path}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise PynnError(f"{path}: cannot read ({e.strerror or e})") from None

    if len(data) < 4:
        raise PynnError(f"{path}: too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (MAGIC_LABELS, MAGIC_IMAGES):
        raise PynnError(
            f"{path}: bad IDX magic 0x{magic:08x} "
            f"(expected 0x{MAGIC_LABELS:08x} or 0x{MAGIC_IMAGES:08x})"
        )

    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise PynnError(f"{path}: IDX header is truncated")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])

    expected = 1
    for d in dims:
        expected *= d
    payload = data[header_size:]
    if len(payload) != expected:
        shape = "x".join(str(d) for d in dims)
        raise PynnError(
            f"{path}: payload has {len(payload)} bytes, "
            f"but dimensions {shape} need {expected}"
        )
    return dims, payload


def csv_lines(payload, width):
    """Yield one CSV line (bytes, ending in b"\\n") per ``width`` bytes."""
    lookup = _DECIMAL.__getitem__
    for start in range(0, len(payload), width):
        yield b",".join(map(lookup, payload[start:start + width])) + b"\n"


def _read_split(data_dir, split):
    """Read and cross-check the image and label IDX files of one split."""
    images_path = data_dir / IDX_NAMES[f"{split}_vectors"]
    labels_path = data_dir / IDX_NAMES[f"{split}_labels"]
    for p in (images_path, labels_path):
        if not p.is_file():
            raise PynnError(f"{p}: file not found")

    image_dims, images = read_idx(images_path)
    label_dims, labels = read_idx(labels_path)
    if len(image_dims) != 3:
        raise PynnError(f"{images_path}: expected images (3 dimensions), "
                         f"got {len(image_dims)} dimension(s)")
    if len(label_dims) != 1:
        raise PynnError(f"{labels_path}: expected labels (1 dimension), "
                         f"got {len(label_dims)} dimensions")
    if image_dims[0] != label_dims[0]:
        raise PynnError(f"{images_path}: has {image_dims[0]} images, but "
                         f"{labels_path.name} has {label_dims[0]} labels")

    width = image_dims[1] * image_dims[2]  # 28 x 28 = 784 for Fashion-MNIST
    return images, width, labels


def prepare(data_dir, force=False, log=print):
    """Write the missing course CSVs in ``data_dir``; return their paths.

    Existing CSVs are kept unless ``force`` is true.  ``log`` receives one
    message per written file.
    """
    data_dir = Path(data_dir)
    written = []
    for split in SPLITS:
        keys = [f"{split}_vectors", f"{split}_labels"]
        todo = [k for k in keys
                if force or not (data_dir / CSV_NAMES[k]).exists()]
        if not todo:
            continue

        images, width, labels = _read_split(data_dir, split)
        contents = {
            f"{split}_vectors": (images, width),  # one image per line
            f"{split}_labels": (labels, 1),       # one label per line
        }
        for key in todo:
            payload, line_width = contents[key]
            path = data_dir / CSV_NAMES[key]
            write_atomic(path, csv_lines(payload, line_width))
            log(f"wrote {path} ({len(payload) // line_width} lines)")
            written.append(path)
    return written


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Write the Fashion-MNIST course CSVs from the IDX files.")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder with the .gz files (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="rewrite CSVs that already exist")
    args = parser.parse_args(argv)
    try:
        prepare(args.data_dir, force=args.force)
    except PynnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
