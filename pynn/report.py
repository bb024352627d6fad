"""What the user sees. The only module that prints (but for the traceback
of a bug, which cli.py prints)."""
import shutil
import sys

from .layers import Residual


def kernel_pairs(layers):
    """The kernel pairs a run of layers calls: one a layer, and a residual
    block's own (its sum) besides its body's."""
    return sum(1 + kernel_pairs(layer.body) if isinstance(layer, Residual) else 1
               for layer in layers)


class Reporter:
    """Prints a run's progress and results to ``stream`` (stdout by default).

    On a terminal, a progress bar is redrawn in place within each epoch: a
    carriage return ``\\r`` moves the cursor back to the start of the line,
    so the next draw overwrites the last. Anywhere else (a pipe, a log file,
    CI) a ``\\r`` would only clutter the output, so there is just one line
    per epoch.
    """

    BAR = 24  # characters of the bar itself

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.batch_size = 1
        self._drawn = 0  # width of the progress line on screen (0: none)

    def line(self, text=""):
        self._erase()
        print(text, file=self.stream, flush=True)

    def note(self, text):
        self.line(f"note: {text}")

    def start(self, model, n_train, n_val, cfg, threads, kernels=None):
        """The model table and the run's settings; ``threads`` is the thread
        count, or a text (``1: built without OpenMP``); ``kernels`` names the
        build (the GEMM's kernel and instruction set)."""
        self.batch_size = min(cfg.batch_size or n_train, n_train)  # rows per step, as fit()
        self.model_table(model)
        batch = {0: f"all {n_train} rows (batch gradient descent)",
                 1: "1 (the online algorithm)"}.get(cfg.batch_size, cfg.batch_size)
        self.line(f"train {n_train} rows, validation {n_val} rows, "
                  f"{cfg.optimizer} lr {cfg.lr:g}, batch {batch}, "
                  f"{cfg.epochs} epochs, seed {cfg.seed}, threads {threads}")
        if kernels:
            self.line(f"kernels {kernels}")
        images = model.input_shape is not None
        extras = [f"label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "",
                  {"on": f"augmented (shifts of up to {cfg.shift}, flips)",
                   "flip": "augmented (flips)"}.get(cfg.augment, "") if images else "",
                  f"random erasing {cfg.erase:g}" if cfg.erase and images else "",
                  f"weight averaging (EMA {cfg.ema:g})" if cfg.ema else ""]
        if any(extras):
            self.line("training " + ", ".join(e for e in extras if e))
        if cfg.tta == "flip":
            self.line("predicting with test-time flips (each image and its mirror image)")

    def model_table(self, model):
        """The model line, then each layer with its output shape, parameters
        and the C kernels that compute it (csrc/: <kernel>_forward/_backward)."""
        rows = model.summary()
        total = sum(row[2] for row in rows)
        fused = kernel_pairs(model.layers) < kernel_pairs(model.plain.layers)
        how = (f", run by {kernel_pairs(model.layers)} kernel pairs (fused; --no-fuse runs "
               "each layer)"
               if fused else ", each layer run as written")
        self.line(f"model {len(rows)} layers, {total:,} parameters{how}")
        width = max(len(row[0]) for row in rows)
        for name, shape, count, kernel in rows:
            shown = "x".join(map(str, shape)) if shape else "?"
            self.line(f"  {name:<{width}}  -> {shown:<10} {count:>10,}  {kernel}")

    def loaded(self, model, path):
        self.line(f"loaded from {path} (no training):")
        self.model_table(model)

    def progress(self, epoch, step, steps, seconds):
        """Within an epoch, on a terminal: bar, samples/s and time left."""
        if not self.tty:
            return
        rate = step * self.batch_size / seconds if seconds > 0 else 0.0
        left = (steps - step) * seconds / step if step else 0.0
        filled = self.BAR * step // max(1, steps)
        text = (f"epoch {epoch:3d}  [{'#' * filled}{'.' * (self.BAR - filled)}] "
                f"{step}/{steps}  {rate:,.0f} samples/s  ETA {left:4.1f}s")
        # never wider than the terminal: a wrapped line cannot be redrawn by \r
        text = text[:shutil.get_terminal_size().columns - 1]
        # pad with spaces to cover a longer previous draw
        self.stream.write("\r" + text.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(text)

    def _erase(self):
        """Blank the progress line (if any) so the next line starts clean."""
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def epoch(self, m):
        """One line an epoch. loss and train are the training batches' own
        figures (with label smoothing, dropout and augmentation, as trained);
        val loss and val are the validation rows' (evaluation mode)."""
        val = f"{m['val_acc'] * 100:6.2f}%" if m["val_acc"] is not None else "   n/a "
        val_loss = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "  n/a "
        self.line(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  val loss {val_loss}  "
                  f"train {m['train_acc'] * 100:6.2f}%  val {val}  "
                  f"lr {m['lr']:.2e}  {m['seconds']:5.2f}s")

    def evaluation(self, title, result):
        """Per-class precision/recall/accuracy and the confusion matrix of one
        labelled set (``result`` from pynn.metrics.evaluate)."""
        rows, cm = result["per_class"], result["confusion"]
        width = max(11, *(len(r["class"]) for r in rows))
        self.line()
        self.line(f"{title}: {result['count']} images, accuracy {result['accuracy'] * 100:.2f}%")
        self.line(f"  {'class':<{width}}  precision  recall  accuracy  support")
        for r in rows:
            self.line(f"  {r['class']:<{width}}  {r['precision'] * 100:8.2f}%"
                      f" {r['recall'] * 100:6.2f}%  {r['accuracy'] * 100:7.2f}%  {r['support']:7d}")
        cell = max(4, len(str(max(map(max, cm)))) + 1)
        self.line("  confusion matrix (rows: true class, columns: predicted class)")
        self.line(f"  {'':<{width + 4}}" + "".join(f"{k:>{cell}}" for k in range(len(cm))))
        for k, (r, counts) in enumerate(zip(rows, cm)):
            self.line(f"  {k:>2}  {r['class']:<{width}}" + "".join(f"{c:>{cell}}" for c in counts))

    def summary(self, val_acc, test_acc, seconds):
        self.line()
        if val_acc is not None:
            self.line(f"validation accuracy of the weights kept (the best epoch) "
                      f"{val_acc * 100:.2f}%")
        if test_acc is not None:
            self.line(f"test accuracy {test_acc * 100:.2f}%")
        self.line(f"total time {seconds:.1f}s")

    def saved(self, what, path):
        self.line(f"{what}: {path}")


def error(text):
    """The one-line error of a failed run (stderr)."""
    print(f"error: {text}", file=sys.stderr, flush=True)
