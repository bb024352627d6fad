"""What the user sees. The only module that prints."""
import sys


class Reporter:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def line(self, text=""):
        print(text, file=self.stream, flush=True)

    def note(self, text):
        self.line(f"note: {text}")

    def start(self, model, n_train, n_val, cfg, threads):
        self.line(f"model {model}")
        self.line(f"train {n_train} rows, validation {n_val} rows, "
                  f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, "
                  f"{cfg.epochs} epochs, seed {cfg.seed}, threads {threads}")

    def progress(self, epoch, step, steps, seconds):
        """Within an epoch: nothing yet (a terminal progress bar belongs here)."""

    def epoch(self, m):
        val = f"{m['val_acc'] * 100:6.2f}%" if m["val_acc"] is not None else "   n/a "
        self.line(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  "
                  f"train {m['train_acc'] * 100:6.2f}%  val {val}  "
                  f"lr {m['lr']:.2e}  {m['seconds']:5.2f}s")

    def summary(self, val_acc, test_acc, seconds):
        if val_acc is not None:
            self.line(f"final validation accuracy {val_acc * 100:.2f}%")
        if test_acc is not None:
            self.line(f"test accuracy {test_acc * 100:.2f}%")
        self.line(f"total time {seconds:.1f}s")


def error(text):
    """The one-line error of a failed run (stderr)."""
    print(f"error: {text}", file=sys.stderr, flush=True)
