"""Files: their names (defined here, once) and every write pynn makes.

Writes are atomic: a temporary file in the destination folder, then
``os.replace``. A failed or killed run never leaves a truncated file, and
an earlier file of the same name stays untouched until the new one is whole.
"""
import contextlib
import json
import mmap
import os
import signal
import tempfile
import time
from pathlib import Path

from .errors import PynnError

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

# The course's file names.
CSV_NAMES = {
    "train_vectors": "fashion_mnist_train_vectors.csv",
    "train_labels": "fashion_mnist_train_labels.csv",
    "test_vectors": "fashion_mnist_test_vectors.csv",
    "test_labels": "fashion_mnist_test_labels.csv",
}
PREDICTION_NAMES = {"train": "train_predictions.csv", "test": "test_predictions.csv"}
# The files of a run folder (runs/<timestamp>/, see app.py).
RUN_FILES = {"config": "config.json", "metrics": "metrics.jsonl",
             "summary": "summary.json", "report": "report.html"}


def write_atomic(path, chunks):
    """Write the byte strings ``chunks`` to ``path`` via a temporary file."""
    write_files_atomic([(path, chunks)])


def write_files_atomic(files):
    """Write several files, [(path, chunks)], so that they change together:
    each goes whole into a temporary file beside it first, then all are
    renamed, one right after the other, with Ctrl-C held back until the last
    rename. A failure or Ctrl-C before that leaves every earlier file as it
    was and no temporary file; only a SIGKILL or a power cut between two
    renames (microseconds) can split them (and leaves a hidden .tmp file).
    Two runs writing into one folder at once take turns (_folders_locked):
    the pair left is one run's, never a mix."""
    staged, path, replaced = [], None, 0
    try:
        with _folders_locked({Path(p).parent for p, _ in files}):
            for path, chunks in files:
                path = Path(path)
                staged.append((_stage(path, chunks), path))
            with _sigint_held():
                for tmp, path in staged:
                    os.replace(tmp, path)
                    replaced += 1
    except OSError as e:  # a full disk, say: name the file, and what became of the old ones
        for tmp, _ in staged:
            _discard(tmp)
        what = e.strerror.lower() if e.strerror else str(e)
        kept = ("the old files were left as they were" if not replaced else
                f"{replaced} of {len(staged)} files had been replaced already")
        raise PynnError(f"{path}: {what}; {kept}") from None
    except BaseException:
        for tmp, _ in staged:
            _discard(tmp)  # renamed ones are gone already
        raise


@contextlib.contextmanager
def _folders_locked(folders):
    """An exclusive lock on each folder (flock on the folder itself: no lock
    file is left behind), taken in a fixed order, released at the end. Where
    there is no flock (Windows), no lock."""
    with contextlib.ExitStack() as stack:
        if fcntl is not None:
            for folder in sorted(str(f) for f in folders):
                try:
                    fd = os.open(folder, os.O_RDONLY)
                except OSError as e:
                    raise PynnError(f"{folder}: cannot open the output folder "
                                    f"({e.strerror or e})") from None
                stack.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_EX)  # closing the fd releases it
        yield


def _stage(path, chunks):
    """A complete temporary file ``.<name>.XXXX.tmp`` beside ``path`` holding the
    chunks, on disk (fsync); returns its name."""
    # not a with-block: the file must outlive it (renamed by the caller)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",  # noqa: SIM115
                                      suffix=".tmp", delete=False)
    try:
        with tmp:
            for chunk in chunks:
                tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates it as 0600
    except BaseException:
        _discard(tmp.name)
        raise
    return tmp.name


def _discard(name):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


@contextlib.contextmanager
def _sigint_held():
    """Ctrl-C (SIGINT) during the block takes effect after it, as usual then."""
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread: signals are the main thread's business
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)  # default_int_handler: KeyboardInterrupt
        elif caught and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def write_predictions(path, labels):
    """One integer per line, in input order; ``labels`` is an int32 Tensor."""
    write_atomic(path, _prediction_chunks(labels))


def write_prediction_files(files):
    """Several prediction files, {path: int32 labels Tensor}, that change
    together (write_files_atomic): an interrupted run leaves all old or all new."""
    write_files_atomic([(path, _prediction_chunks(labels)) for path, labels in files.items()])


def _prediction_chunks(labels):
    return ["\n".join(map(str, labels.tolist())).encode("ascii"), b"\n"]


def write_text(path, text):
    """A UTF-8 text file."""
    write_atomic(path, [text.encode("utf-8")])


def write_json(path, value):
    """``value`` as indented JSON (readable in an editor, diffable)."""
    write_text(path, json.dumps(value, indent=1) + "\n")


def new_run_folder(parent):
    """Create and return ``parent/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when a
    run in the same second already took the name)."""
    parent = Path(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as e:
        raise PynnError(f"{parent}: cannot create a run folder ({e.strerror})") from None
    raise PynnError(f"{parent}: too many run folders named {stamp}-*")


def check_writable(folder):
    """Fail early (before training) when predictions could not be written.
    A missing folder is created, with its parents; returns True then."""
    folder, created = Path(folder), False
    if not folder.exists() and not folder.is_symlink():
        try:
            folder.mkdir(parents=True)
            created = True
        except (FileExistsError, NotADirectoryError):  # a file where a folder should be
            raise PynnError(f"{folder}: cannot create the output folder (a file is in the "
                            "way)") from None
        except OSError as e:
            raise PynnError(f"{folder}: cannot create the output folder "
                            f"({e.strerror.lower()})") from None
    if not folder.is_dir():
        raise PynnError(f"{folder}: output folder is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PynnError(f"{folder}: output folder is not writable ({e.strerror})") from None
    return created


def read_bytes(path):
    """The whole file as a read-only buffer, or a one-line PynnError naming it.

    The file is memory-mapped: its pages come straight from the page cache,
    with no 133 MB copy (a copy costs more than the parse on a fresh machine)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise PynnError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PynnError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise PynnError(f"{path}: cannot read ({e.strerror})") from None
