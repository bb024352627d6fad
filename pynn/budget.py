"""The time budget of a run: the whole run, from its start to the last file
written (the course allows 10 minutes for parse, train, predict and write).

Training gets what the rest of the run leaves it. The rest is mostly
prediction: every training row and every test row (twice with test-time
flips), at a pace measured by the run itself. Before the first validation
pass that pace is estimated from the training steps (a forward pass costs
about a third of a training step: forward, backward for the input and
backward for the weights); after it, it is the validation pass's own
images per second. Add a small allowance for loading the test vectors and
writing the files and the report, and the training deadline follows.
"""
import os
import time

FORWARD_SHARE = 1 / 3  # a forward pass, in training steps' time per image
AFTER_TRAINING = 1.0   # seconds: parse the test vectors, write the files and the report
STARTED_ENV = "PYNN_STARTED"  # run.sh's start (seconds since the epoch), if it passed one on


def run_started():
    """When the run began, as a perf_counter() time: run.sh's start when it
    passed one on (so its set-up counts too), else this process's start."""
    now_wall, now = time.time(), time.perf_counter()
    started = os.environ.get(STARTED_ENV, "").replace(",", ".")
    try:
        ago = now_wall - float(started)
    except ValueError:
        ago = _process_age()
    if not 0.0 <= ago <= 3600.0:  # a stale or strange value: not this run's
        ago = _process_age()
    return now - ago


def _process_age():
    """Seconds since this process started (Linux: /proc; elsewhere 0)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Budget:
    """``seconds`` for the whole run, counted from ``start`` (a ``clock()``
    time, default: now; the command line passes run_started()).

    ``to_predict`` images remain to be predicted after training;
    ``measure_training`` and ``measure_prediction`` tell it the pace seen.
    ``clock`` is time.perf_counter; a test may give a clock of its own."""

    def __init__(self, seconds, start=None, to_predict=0, clock=time.perf_counter):
        self.seconds, self.clock = seconds, clock
        self.start = clock() if start is None else start
        self.end = self.start + seconds
        self.to_predict = to_predict
        self.train_rate = self.predict_rate = None  # images per second

    def now(self):
        return self.clock()

    def left(self):
        return self.end - self.clock()

    def measure_training(self, images, seconds):
        if seconds > 0 and images > 0:
            self.train_rate = images / seconds

    def measure_prediction(self, images, seconds):
        if seconds > 0 and images > 0:
            self.predict_rate = images / seconds

    def after_training(self):
        """Seconds the run needs once training stops."""
        rate = self.predict_rate or (self.train_rate / FORWARD_SHARE if self.train_rate else None)
        return AFTER_TRAINING + (self.to_predict / rate if rate else 0.0)

    def deadline(self):
        """The clock() time training must stop by."""
        return self.end - self.after_training()
