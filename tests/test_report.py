"""What a run shows: the terminal progress bar, the printed per-class results,
and the run folder (config.json, metrics.jsonl, summary.json, report.html)."""
import base64
import io
import json
import os
import random
import re
import shutil
import struct
import zlib
from dataclasses import asdict
from html.parser import HTMLParser

import pytest

import pynn
from pynn import Normalizer, Tensor, mlp
from pynn.config import configure
from pynn.html_report import MISCLASSIFIED_CAP, misclassified, nice_ticks, pct, png_gray
from pynn.io import CSV_NAMES, RUN_FILES, new_run_folder
from pynn.report import Reporter


class TTY(io.StringIO):
    """A fake terminal."""

    def isatty(self):
        return True


def epoch_metrics(epoch):
    return {"epoch": epoch, "train_loss": 0.5, "train_acc": 0.8, "val_acc": 0.75,
            "lr": 1e-3, "seconds": 1.0}


MODEL = mlp([4, 3, 2], "relu", random.Random(0))
HEAD = 2 + len(MODEL.summary())  # lines before the first epoch: model table, data line


def drive(reporter):
    """Two epochs as fit() reports them: progress calls, then the epoch line."""
    reporter.start(MODEL, 640, 100, configure("mlp", batch_size=64), 1)
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
    assert [line[:9] for line in text.splitlines()[HEAD:]] == ["epoch   1", "epoch   2", "note: don"]


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
    for line in lines[HEAD:-1]:
        # what stays on screen is what follows the last \r: the bar was erased
        shown = line.rsplit("\r", 1)[-1]
        assert shown.startswith(("epoch   1  loss", "epoch   2  loss", "note: done")), repr(line)
        if "\r" in line:  # the erase covered the whole bar with spaces
            bar = line.split("\r")[-3]
            assert line.split("\r")[-2] == " " * len(bar)


def test_progress_bar_in_a_real_run(subset_dir, tmp_path):
    stream = TTY()
    pynn.run(configure("mlp", data_dir=str(subset_dir), out_dir=str(tmp_path), arch="f8", epochs=2,
                    threads=1, runs_dir=""), reporter=Reporter(stream))
    lines = stream.getvalue().split("\n")
    drawn = [line for line in lines if "\r" in line]
    assert len(drawn) == 2 and all("samples/s" in line for line in drawn)
    assert [line.rsplit("\r", 1)[-1][:15] for line in drawn] == ["epoch   1  loss",
                                                                  "epoch   2  loss"]


def test_progress_bar_fits_the_terminal(monkeypatch):
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((40, 20)))
    stream = TTY()
    reporter = Reporter(stream)
    reporter.start(mlp([4, 3, 2], "relu", random.Random(0)), 640, 100, configure("mlp", batch_size=64), 1)
    reporter.progress(1, 5, 10, 0.5)
    assert all(len(part) <= 39 for part in stream.getvalue().split("\n")[-1].split("\r"))


# ---- the run folder of a real (small) run -----------------------------------------

class Tags(HTMLParser):
    """Checks that tags balance; collects text by (tag, class, data-set) of
    the enclosing elements, and every img src."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.texts, self.images = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag not in self.VOID:
            self.stack.append((tag, attrs.get("class"), attrs.get("data-set")))

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip():
            self.texts.append((tuple(self.stack), data.strip()))

    def inside(self, tag, cls=None, which=None, leaf=None):
        """Texts within an element (tag, class, data-set), optionally directly
        inside a leaf element of class ``leaf``."""
        return [text for stack, text in self.texts
                if any(t == tag and (cls is None or c == cls) and (which is None or w == which)
                       for t, c, w in stack)
                and (leaf is None or stack[-1][1] == leaf)]


def parse(html):
    tags = Tags()
    tags.feed(html)
    tags.close()
    return tags


def small_run(data, out, **kwargs):
    settings = {"arch": "f16", "epochs": 2, "batch_size": 32, "threads": 1}
    settings.update(kwargs)
    cfg = configure("mlp", data_dir=str(data), out_dir=str(out), **settings)
    stream = io.StringIO()
    return cfg, pynn.run(cfg, reporter=Reporter(stream)), stream.getvalue()


@pytest.fixture(scope="module")
def full_run(subset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_out")
    cfg, result, text = small_run(subset_dir, out)
    folder = result["run_dir"]
    files = {k: (folder / name).read_text("utf-8") for k, name in RUN_FILES.items()}
    return cfg, result, text, folder, files


def test_run_folder_files(full_run):
    cfg, result, text, folder, files = full_run
    assert folder.parent.name == "runs" and re.fullmatch(r"\d{8}-\d{6}", folder.name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES.values())
    assert json.loads(files["config"]) == json.loads(json.dumps(asdict(cfg)))
    epochs = [json.loads(line) for line in files["metrics"].splitlines()]
    assert epochs == result["history"] and len(epochs) == 2
    # the validation loss beside the training loss: a mean cross-entropy, in the epoch line
    assert all(0.0 < m["val_loss"] < 5.0 for m in epochs)
    assert f"val loss {epochs[1]['val_loss']:.4f}" in text
    summary = json.loads(files["summary"])
    assert summary["val_acc"] == result["val_acc"] and summary["test_acc"] == result["test_acc"]
    assert summary["validation"] == result["validation"]
    assert summary["test"] == result["test"]
    assert summary["validation"]["accuracy"] == result["val_acc"]  # the best model is kept
    assert summary["test"]["accuracy"] == result["test_acc"]
    assert summary["classes"][0] == "T-shirt/top"
    assert set(summary["timings"]) >= {"train_seconds", "total_seconds", "report_seconds"}
    assert f"report ({summary['timings']['report_seconds']:.2f}s): {folder}" in text


def test_report_is_balanced_html_with_svg(full_run):
    html = full_run[4]["report"]
    assert html.startswith("<!DOCTYPE html>")
    tags = parse(html)
    assert tags.errors == [] and tags.stack == []
    assert html.count("<svg") == 4  # loss, accuracy, two confusion matrices
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline
    assert len(html.encode()) < 400_000


def test_report_numbers_match_summary(full_run):
    files = full_run[4]
    summary, tags = json.loads(files["summary"]), parse(files["report"])
    for which in ("validation", "test"):
        result = summary[which]
        counts = tags.inside("svg", "confusion", which, leaf="count")
        assert list(map(int, counts)) == [c for row in result["confusion"] for c in row]
        cells = tags.inside("table", "per-class", which)
        expected = ["class", "precision", "recall", "accuracy", "support"]
        for r in result["per_class"]:
            expected += [r["class"], pct(r["precision"]), pct(r["recall"]), pct(r["accuracy"]),
                         str(r["support"])]
        assert cells == expected
        assert tags.inside("b", "accuracy", which) == [pct(result["accuracy"])]
    assert pct(summary["val_acc"]) in files["report"] and pct(summary["test_acc"]) in files["report"]


def test_report_misclassified_images(full_run, subset_dir):
    _, result, _, _, files = full_run
    images = [img for img in parse(files["report"]).images
              if img["alt"].startswith("validation image, line")]
    wrong = result["validation"]["count"] - round(result["validation"]["accuracy"]
                                                  * result["validation"]["count"])
    assert 0 < len(images) <= min(wrong, MISCLASSIFIED_CAP)
    lines = (subset_dir / CSV_NAMES["train_vectors"]).read_text().splitlines()
    for img in images[:5]:
        # the pixels drawn are the CSV's own (un-normalized) values
        line = int(re.search(r"line (\d+)", img["alt"]).group(1))
        raw = [int(v) for v in lines[line - 1].split(",")]
        assert decode_png(base64.b64decode(img["src"].split(",", 1)[1])) == (28, 28, raw)


def test_printed_per_class_results(full_run):
    _, result, text, _, _ = full_run
    assert "validation: " in text and "test (final evaluation): " in text
    assert "Ankle boot" in text and "confusion matrix" in text
    row = result["test"]["per_class"][1]
    assert f"  Trouser      {row['precision'] * 100:8.2f}%" in text


def test_report_without_validation_or_test_labels(subset_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for key in ("train_vectors", "train_labels", "test_vectors"):
        (data / CSV_NAMES[key]).write_bytes((subset_dir / CSV_NAMES[key]).read_bytes())
    _, result, text = small_run(data, tmp_path, val_fraction=0.0, epochs=1)
    assert result["validation"] is None and result["test"] is None
    html = (result["run_dir"] / RUN_FILES["report"]).read_text()
    tags = parse(html)
    assert tags.errors == [] and tags.stack == []
    assert all("data-unit" in img for img in tags.images)  # weights, no misclassified images
    assert html.count("<svg") == 2 and "confusion" not in html
    assert "validation:" not in text


def test_no_run_folder_when_runs_dir_is_empty(subset_dir, tmp_path):
    _, result, text = small_run(subset_dir, tmp_path, runs_dir="", epochs=1)
    assert result["run_dir"] is None and not (tmp_path / "runs").exists()
    assert "report" not in text


def test_run_folders_of_the_same_second_differ(tmp_path):
    folders = [new_run_folder(tmp_path / "runs") for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)


# ---- pieces ------------------------------------------------------------------------

def decode_png(data, color=0):
    """(width, height, pixels) of an 8-bit PNG without filters, checking CRCs:
    grayscale (color 0: ints) or RGB (color 2: (r, g, b) tuples)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, found = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, found) == (8, color) and b"IEND" in chunks
    channels = 3 if color == 2 else 1
    raw, stride = zlib.decompress(chunks[b"IDAT"]), width * channels + 1
    rows = [raw[r * stride:(r + 1) * stride] for r in range(height)]
    assert all(row[0] == 0 for row in rows)
    values = [v for row in rows for v in row[1:]]
    if channels == 3:
        values = [tuple(values[i:i + 3]) for i in range(0, len(values), 3)]
    return width, height, values


def test_png_round_trip():
    pixels = [(7 * i) % 256 for i in range(5 * 3)]
    assert decode_png(png_gray(5, 3, pixels)) == (5, 3, pixels)


def test_misclassified_undoes_the_normalization():
    raw = [[(31 * r + c) % 256 for c in range(16)] for r in range(4)]
    x = Tensor.from_list([v for row in raw for v in row], (4, 16))
    norm = Normalizer.fit(x)
    norm(x)
    truth = Tensor.from_list([0, 1, 1, 0], dtype="int32")
    pred = Tensor.from_list([0, 0, 1, 1], dtype="int32")
    picked = misclassified(x, truth, pred, 2, norm, lines=[10, 11, 12, 13])
    assert picked == [(raw[3], 0, 1, 13), (raw[1], 1, 0, 11)]  # sorted by true class
    # at most cap images; without ``lines`` a caption shows the row number from 1
    assert misclassified(x, truth, pred, 2, norm, cap=1) == [(raw[1], 1, 0, 2)]


@pytest.mark.parametrize("lo, hi, ticks", [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (83.27, 96.36, [80, 85, 90, 95, 100]),
    (0.1063, 0.4639, [0.1, 0.2, 0.3, 0.4, 0.5]),
    (1, 15, list(range(0, 16, 5))),
])
def test_nice_ticks(lo, hi, ticks):
    assert nice_ticks(lo, hi)[0] == pytest.approx(ticks)


def test_nice_ticks_of_a_flat_series():
    ticks, _ = nice_ticks(0.9, 0.9)
    assert ticks[0] < 0.9 < ticks[-1]


# ---- weights as pictures -----------------------------------------------------------

def pictures_of(html, attr):
    """{attribute value: (width, height, RGB pixels)} of the report's images
    that carry ``attr`` (data-unit, data-filter, data-map)."""
    return {img[attr]: decode_png(base64.b64decode(img["src"].split(",", 1)[1]), color=2)
            for img in parse(html).images if attr in img}


def test_weights_of_an_mlp_as_pictures():
    """The first layer's weights into the first 64 hidden units, 28x28 each,
    every pixel the diverging colour of its weight on the common scale."""
    from pynn.app import weight_pictures
    from pynn.html_report import diverging
    from pynn.html_report import weight_pictures as section

    model = pynn.build("f80", 784, 10, "relu", random.Random(3))
    pictures = weight_pictures(model, None, Normalizer(0.0, 1.0))
    html = section(pictures)
    assert "Weights as pictures</h2>" in html and "(of 80)" in html
    got = pictures_of(html, "data-unit")
    assert sorted(map(int, got)) == list(range(64))
    w = model.layers[0].weight.value.tolist()
    scale = max(abs(v) for v in w[:64 * 784])
    for unit in (0, 41, 63):
        width, height, pixels = got[str(unit)]
        assert (width, height) == (28, 28)
        assert pixels == [diverging(v, scale) for v in w[unit * 784:(unit + 1) * 784]]
    assert diverging(scale, scale) == (255, 0, 0) and diverging(-scale, scale) == (0, 0, 255)
    assert diverging(0.0, scale) == (255, 255, 255)


def test_filters_and_maps_of_a_cnn_as_pictures():
    """The first convolution's filters (k x k) and its output maps of the
    first validation images, as the reference convolution computes them."""
    from pynn.app import weight_pictures
    from pynn.html_report import diverging
    from pynn.html_report import weight_pictures as section

    import cnn_reference as cref

    rng = random.Random(4)
    model = pynn.build("c4k5,p,f8", 49, 3, "relu", rng)
    x = Tensor.from_list([rng.uniform(-1, 1) for _ in range(5 * 49)], (5, 49))
    html = section(weight_pictures(model, x, Normalizer(0.5, 2.0)))
    filters, maps = pictures_of(html, "data-filter"), pictures_of(html, "data-map")
    w = model.layers[0].weight.value.tolist()
    scale = max(abs(v) for v in w)
    assert sorted(filters) == ["0", "1", "2", "3"]
    assert filters["2"] == (5, 5, [diverging(v, scale) for v in w[2 * 25:3 * 25]])
    assert len(maps) == 3 * 4  # 3 validation images x 4 filters
    out = cref.conv2d_forward(x.tolist()[49:98], w, None, 1, 7, 7, 1, 4, 5)  # image 2
    map_values = [out[r * 4 + 3] for r in range(49)]  # filter 4
    map_scale = max(abs(v) for v in map_values)
    width, height, pixels = maps["1,3"]
    assert (width, height) == (7, 7)
    assert all(abs(a - b) <= 1 for p, q in zip(pixels, [diverging(v, map_scale)
                                                        for v in map_values])
               for a, b in zip(p, q))


def test_report_has_the_weights_section(full_run):
    html = full_run[4]["report"]
    assert "Weights as pictures" in html
    assert len(pictures_of(html, "data-unit")) == 16  # the f16 network's hidden units
