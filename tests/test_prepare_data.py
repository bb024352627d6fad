"""Tests for scripts/prepare_data.py on tiny hand-made IDX files."""

import gzip
import struct
import subprocess
import sys

import pytest

from pynn.errors import PynnError

from conftest import SCRIPTS_DIR, load_script

prep = load_script("prepare_data")

# Three 2x2 "images" and their labels, for both splits.
PIXELS = bytes([0, 1, 2, 3,
                 9, 10, 99, 100,
                 128, 200, 254, 255])
LABELS = bytes([7, 0, 9])
VECTORS_CSV = b"0,1,2,3\n9,10,99,100\n128,200,254,255\n"
LABELS_CSV = b"7\n0\n9\n"


def idx_images(pixels, count, rows, cols):
    return struct.pack(">IIII", 0x00000803, count, rows, cols) + pixels


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + labels


def write_gz(path, data):
    path.write_bytes(gzip.compress(data))
    return path


@pytest.fixture
def data_dir(tmp_path):
    """A folder with the four tiny IDX files under their real names."""
    for split in ("train", "test"):
        write_gz(tmp_path / prep.IDX_NAMES[f"{split}_vectors"],
                 idx_images(PIXELS, 3, 2, 2))
        write_gz(tmp_path / prep.IDX_NAMES[f"{split}_labels"],
                 idx_labels(LABELS))
    return tmp_path


def quiet(*args):
    pass


def test_read_idx(data_dir):
    dims, payload = prep.read_idx(data_dir / prep.IDX_NAMES["train_vectors"])
    assert dims == (3, 2, 2) and payload == PIXELS
    dims, payload = prep.read_idx(data_dir / prep.IDX_NAMES["test_labels"])
    assert dims == (3,) and payload == LABELS


def test_prepare_writes_exact_csvs(data_dir):
    written = prep.prepare(data_dir, log=quiet)
    assert sorted(p.name for p in written) == sorted(prep.CSV_NAMES.values())
    for split in ("train", "test"):
        vectors = data_dir / prep.CSV_NAMES[f"{split}_vectors"]
        labels = data_dir / prep.CSV_NAMES[f"{split}_labels"]
        assert vectors.read_bytes() == VECTORS_CSV
        assert labels.read_bytes() == LABELS_CSV
    assert not list(data_dir.glob("*.tmp"))


def test_width_comes_from_the_idx_dims(tmp_path):
    write_gz(tmp_path / prep.IDX_NAMES["train_vectors"], idx_images(PIXELS, 2, 3, 2))
    write_gz(tmp_path / prep.IDX_NAMES["train_labels"], idx_labels(b"\x01\x02"))
    write_gz(tmp_path / prep.IDX_NAMES["test_vectors"], idx_images(PIXELS, 1, 1, 12))
    write_gz(tmp_path / prep.IDX_NAMES["test_labels"], idx_labels(b"\x05"))
    prep.prepare(tmp_path, log=quiet)
    train = (tmp_path / prep.CSV_NAMES["train_vectors"]).read_bytes()
    test = (tmp_path / prep.CSV_NAMES["test_vectors"]).read_bytes()
    assert train == b"0,1,2,3,9,10\n99,100,128,200,254,255\n"
    assert test == b"0,1,2,3,9,10,99,100,128,200,254,255\n"


def test_existing_csv_is_kept(data_dir):
    grader = data_dir / prep.CSV_NAMES["train_vectors"]
    grader.write_bytes(b"grader's data\n")
    written = prep.prepare(data_dir, log=quiet)
    assert grader not in written and len(written) == 3
    assert grader.read_bytes() == b"grader's data\n"
    assert prep.prepare(data_dir, log=quiet) == []  # nothing left to do
    prep.prepare(data_dir, force=True, log=quiet)
    assert grader.read_bytes() == VECTORS_CSV


def test_bad_magic_names_the_file(data_dir):
    bad = data_dir / prep.IDX_NAMES["train_labels"]
    write_gz(bad, struct.pack(">II", 0x00000802, 3) + LABELS)
    with pytest.raises(PynnError) as exc:
        prep.read_idx(bad)
    assert str(exc.value).startswith(f"{bad}: bad IDX magic 0x00000802")
    with pytest.raises(PynnError, match="bad IDX magic"):
        prep.prepare(data_dir, log=quiet)


def test_truncated_payload(data_dir):
    bad = data_dir / prep.IDX_NAMES["test_vectors"]
    write_gz(bad, idx_images(PIXELS[:-1], 3, 2, 2))
    with pytest.raises(PynnError) as exc:
        prep.read_idx(bad)
    assert str(exc.value) == f"{bad}: payload has 11 bytes, but dimensions 3x2x2 need 12"


def test_not_gzip(data_dir):
    bad = data_dir / prep.IDX_NAMES["train_vectors"]
    bad.write_bytes(idx_images(PIXELS, 3, 2, 2))  # not compressed
    with pytest.raises(PynnError, match="not a valid gzip file"):
        prep.read_idx(bad)


def test_label_count_must_match_image_count(data_dir):
    write_gz(data_dir / prep.IDX_NAMES["train_labels"], idx_labels(b"\x01\x02"))
    with pytest.raises(PynnError, match="has 3 images, but .* has 2 labels"):
        prep.prepare(data_dir, log=quiet)
    assert not list(data_dir.glob("*.csv"))


def test_cli_missing_gz(tmp_path, capsys):
    assert prep.main(["--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    name = prep.IDX_NAMES["train_vectors"]
    assert err == f"error: {tmp_path / name}: file not found\n"


def test_cli_bad_idx_as_subprocess(data_dir):
    write_gz(data_dir / prep.IDX_NAMES["test_labels"], b"\x00\x00\x08\x01")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / "prepare_data.py"), "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    # train was fine and is written; test failed before writing anything
    assert (data_dir / prep.CSV_NAMES["train_vectors"]).read_bytes() == VECTORS_CSV
    assert not (data_dir / prep.CSV_NAMES["test_vectors"]).exists()
