"""Tests for pynn.io: file names, prediction format, atomic writes, early
writability check."""

import os
import random
import stat

import pytest

from pynn import PynnError, Tensor
from pynn.io import CSV_NAMES, PREDICTION_NAMES, check_writable, write_atomic, write_predictions


def labels(values):
    return Tensor.from_list(values, dtype="int32")


def one_line_error(exc_info, path):
    msg = str(exc_info.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg and len(msg.splitlines()) == 1, repr(msg)
    return msg


def test_course_file_names():
    assert CSV_NAMES == {
        "train_vectors": "fashion_mnist_train_vectors.csv",
        "train_labels": "fashion_mnist_train_labels.csv",
        "test_vectors": "fashion_mnist_test_vectors.csv",
        "test_labels": "fashion_mnist_test_labels.csv",
    }
    assert PREDICTION_NAMES == {"train": "train_predictions.csv",
                                "test": "test_predictions.csv"}


# ---- write_predictions ----------------------------------------------------------

def test_write_predictions_format(tmp_path):
    path = tmp_path / "test_predictions.csv"
    write_predictions(path, labels([3, 1, 4, 1, 5, 9, 2, 6, 0]))
    assert path.read_bytes() == b"3\n1\n4\n1\n5\n9\n2\n6\n0\n"


def test_write_predictions_keeps_input_order(tmp_path):
    rng = random.Random(3)
    values = [rng.randrange(10) for _ in range(10000)]
    path = tmp_path / "train_predictions.csv"
    write_predictions(path, labels(values))
    data = path.read_bytes()
    assert data.endswith(b"\n") and not data.endswith(b"\n\n")
    assert b"\r" not in data
    assert [int(v) for v in data.decode("ascii").split("\n")[:-1]] == values


def test_write_predictions_single_and_large_values(tmp_path):
    path = tmp_path / "p.csv"
    write_predictions(path, labels([7]))
    assert path.read_bytes() == b"7\n"
    write_predictions(path, labels([0, 123456, 2147483647]))
    assert path.read_bytes() == b"0\n123456\n2147483647\n"


def test_write_predictions_replaces_and_is_readable(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"old contents that are longer than the new ones\n" * 10)
    write_predictions(path, labels([1, 2]))
    assert path.read_bytes() == b"1\n2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["p.csv"]


# ---- write_atomic ------------------------------------------------------------

def test_write_atomic_joins_chunks(tmp_path):
    path = tmp_path / "out.bin"
    write_atomic(path, (bytes([i]) * 1000 for i in range(50)))
    assert path.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(50))
    assert os.listdir(tmp_path) == ["out.bin"]


def failing_chunks(exc):
    yield b"1\n2\n"
    yield b"3\n" * 100000
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing_behind(tmp_path, exc):
    path = tmp_path / "train_predictions.csv"
    with pytest.raises(type(exc)):
        write_atomic(path, failing_chunks(exc))
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temporary file either


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_keeps_existing_file(tmp_path, exc):
    path = tmp_path / "test_predictions.csv"
    old = b"9\n8\n7\n"
    path.write_bytes(old)
    before = path.stat()
    with pytest.raises(type(exc)):
        write_atomic(path, failing_chunks(exc))
    assert path.read_bytes() == old
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert os.listdir(tmp_path) == ["test_predictions.csv"]


def test_failing_chunk_value_leaves_nothing_behind(tmp_path):
    """A chunk that is not bytes fails inside the write, not before it."""
    path = tmp_path / "p.csv"
    path.write_bytes(b"old\n")
    with pytest.raises(TypeError):
        write_atomic(path, [b"1\n", "not bytes"])
    assert path.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["p.csv"]


# ---- check_writable ---------------------------------------------------------

def test_check_writable_ok_and_leaves_nothing(tmp_path):
    check_writable(tmp_path)
    check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_check_writable_creates_a_missing_folder(tmp_path):
    folder = tmp_path / "missing" / "deeper"
    assert check_writable(folder) is True and folder.is_dir()
    assert check_writable(folder) is False  # there now


def test_check_writable_with_a_file_in_the_way(tmp_path):
    (tmp_path / "a_file").write_bytes(b"x")
    folder = tmp_path / "a_file" / "deeper"
    with pytest.raises(PynnError) as info:
        check_writable(folder)
    assert "a file is in the way" in one_line_error(info, folder)


def test_check_writable_on_a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_bytes(b"x")
    with pytest.raises(PynnError) as info:
        check_writable(path)
    one_line_error(info, path)
    assert path.read_bytes() == b"x"


def writable_anyway(folder):
    """True when this process can create files in a read-only folder (root,
    i.e. os.geteuid() == 0 with CAP_DAC_OVERRIDE)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return False
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def test_check_writable_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if writable_anyway(folder):
            pytest.skip("running as root: a read-only folder is writable anyway")
        with pytest.raises(PynnError) as info:
            check_writable(folder)
        assert "not writable" in one_line_error(info, folder)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_a_full_disk_names_the_file_and_keeps_the_old_ones(tmp_path, monkeypatch):
    """No space for the second file: a one-line error naming it, no .tmp file
    left, and both old files as they were."""
    import errno

    import pynn.io

    old = {tmp_path / "a.csv": b"old a\n", tmp_path / "b.csv": b"old b\n"}
    for path, data in old.items():
        path.write_bytes(data)
    real_stage = pynn.io._stage

    def stage(path, chunks):
        if path.name == "b.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_stage(path, chunks)

    monkeypatch.setattr(pynn.io, "_stage", stage)
    with pytest.raises(PynnError) as info:
        pynn.io.write_files_atomic([(p, [b"new\n"]) for p in old])
    assert str(info.value) == (f"{tmp_path / 'b.csv'}: no space left on device; "
                               "the old files were left as they were")
    assert {p: p.read_bytes() for p in old} == old
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


def test_a_failed_rename_says_which_files_were_replaced(tmp_path, monkeypatch):
    """The second of two renames fails: the message says the first file was
    replaced already (it was), and no .tmp file is left."""
    import errno

    import pynn.io

    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for p in paths:
        p.write_bytes(b"old\n")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(pynn.io.os, "replace", replace)
    with pytest.raises(PynnError) as info:
        pynn.io.write_files_atomic([(p, [b"new\n"]) for p in paths])
    assert str(info.value) == (f"{paths[1]}: input/output error; "
                               "1 of 2 files had been replaced already")
    assert [p.read_bytes() for p in paths] == [b"new\n", b"old\n"]
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]
