"""What a run shows: the terminal progress bar."""
import io
import os
import shutil

from pynn import Config
from pynn.report import Reporter


class TTY(io.StringIO):
    """A fake terminal."""

    def isatty(self):
        return True


def epoch_metrics(epoch):
    return {"epoch": epoch, "train_loss": 0.5, "train_acc": 0.8, "val_acc": 0.75,
            "lr": 1e-3, "seconds": 1.0}


def drive(reporter):
    """Two epochs as fit() reports them: progress calls, then the epoch line."""
    reporter.start("MODEL", 640, 100, Config(batch_size=64), 1)
    for epoch in (1, 2):
        for step in (1, 4, 7, 10):
            reporter.progress(epoch, step, 10, 0.01 * step)
        reporter.epoch(epoch_metrics(epoch))
    reporter.note("done")


# ---- progress bar ---------------------------------------------------------------

def test_no_carriage_return_when_not_a_terminal():
    stream = io.StringIO()
    drive(Reporter(stream))
    text = stream.getvalue()
    assert "\r" not in text and "samples/s" not in text
    assert [line[:9] for line in text.splitlines()[2:]] == ["epoch   1", "epoch   2", "note: don"]


def test_progress_bar_on_a_terminal():
    stream = TTY()
    drive(Reporter(stream))
    text = stream.getvalue()
    assert "\r" in text
    # 4 draws an epoch; 64 rows a step, 0.01 s a step: 6,400 samples/s, 0.03 s left at 7/10
    assert text.count("samples/s") == 8
    assert "epoch   1  [################........] 7/10  6,400 samples/s  ETA  0.0s" in text
    assert "[##############################" not in text  # the bar has a fixed width
    lines = text.split("\n")
    for line in lines[2:-1]:
        # what stays on screen is what follows the last \r: the bar was erased
        shown = line.rsplit("\r", 1)[-1]
        assert shown.startswith(("epoch   1  loss", "epoch   2  loss", "note: done")), repr(line)
        if "\r" in line:  # the erase covered the whole bar with spaces
            bar = line.split("\r")[-3]
            assert line.split("\r")[-2] == " " * len(bar)


def test_progress_bar_fits_the_terminal(monkeypatch):
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((40, 20)))
    stream = TTY()
    reporter = Reporter(stream)
    reporter.start("MODEL", 640, 100, Config(batch_size=64), 1)
    reporter.progress(1, 5, 10, 0.5)
    assert all(len(part) <= 39 for part in stream.getvalue().split("\n")[-1].split("\r"))
