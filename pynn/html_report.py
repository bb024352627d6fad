"""report.html: a run's results as one self-contained page, no plotting library.

Everything is drawn by hand and inlined, so the file opens offline and can be
mailed or archived as is:

* line plots are SVG: a <polyline> per series, a tick and a label per
  "nice" value on each axis (see ``nice_ticks``), a legend;
* the confusion matrix is an SVG heat map: one <rect> per cell, darker for a
  larger share of its row (its true class), with the count written on it;
* misclassified images are tiny grayscale PNGs, encoded here with zlib and
  struct (``png_gray``), inlined as data: URIs and scaled up by the browser;
* weights and feature maps are colour PNGs (``png_rgb``) on a diverging
  scale (``diverging``): blue below zero, white at zero, red above.

The page is built from plain Python data (the summary dict of app.py, the
epoch history, the config); nothing here reads or writes files.
"""
import base64
import html
import math
import struct
import zlib

MISCLASSIFIED_CAP = 60  # images in the grid: keeps the report a few hundred KB at most
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")  # series colours, in order

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
.headline { font-size: 16px; }
.plots, .sets { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; }
td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
svg text { font-family: system-ui, sans-serif; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 96px; text-align: center; font-size: 11px; }
figure img { width: 84px; height: 84px; image-rendering: pixelated; display: block;
             margin: 0 auto 2px; border: 1px solid #999; }
.wrong { color: #c00; }
.pictures figure { width: 64px; } .pictures figure img { width: 56px; height: 56px; }
.maps figure { width: 72px; } .maps figure img { width: 64px; height: 64px; }
"""


# ---- numbers to text ---------------------------------------------------------

def esc(value):
    """Text made safe to put inside HTML or SVG (escapes <, >, &, quotes)."""
    return html.escape(str(value))


def pct(fraction, digits=2):
    """0.90217 -> "90.22%" (the one format for every accuracy on the page)."""
    return "n/a" if fraction is None else f"{fraction * 100:.{digits}f}%"


# ---- line plots ----------------------------------------------------------------

def nice_ticks(lo, hi, count=5):
    """About ``count`` round tick values covering [lo, hi]: steps of 1, 2 or 5
    times a power of ten, as people draw axes by hand."""
    if hi - lo < 1e-12:  # a flat series: open up a small range around it
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    digits = max(0, -math.floor(math.log10(step)))
    return [round(k * step, digits) for k in range(first, last + 1)], digits


def line_plot(title, series, xlabel, ylabel, width=540, height=320):
    """An SVG line plot. ``series``: list of (name, [(x, y), ...]); x are epochs."""
    left, right, top, bottom = 64, 16, 34, 46
    pw, ph = width - left - right, height - top - bottom
    points = [p for _, pts in series for p in pts]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1 = min(xs), max(xs)  # the x axis spans the epochs exactly
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    xticks = [t for t in nice_ticks(x0, x1, count=min(15, x1 - x0))[0]
              if x0 <= t <= x1 and t == int(t)]  # whole epochs only
    yticks, ydigits = nice_ticks(min(ys), max(ys))  # the y axis: from tick to tick
    y0, y1 = yticks[0], yticks[-1]

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + (y1 - y) / (y1 - y0) * ph

    out = [(f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img">'),
           f'<title>{esc(title)}</title>',
           (f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" '
            f'font-weight="bold">{esc(title)}</text>')]
    for t in yticks:  # horizontal grid lines with their labels
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{t:.{ydigits}f}</text>')
    for t in xticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="#444"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" '
                   f'font-size="11">{t:g}</text>')
    out.append(f'<path d="M{left},{top} V{top + ph} H{left + pw}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" '
               f'font-size="12">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
               f'text-anchor="middle" font-size="12">{esc(ylabel)}</text>')
    for (name, pts), color in zip(series, PALETTE):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:  # a dot per epoch; hovering shows the value
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                       f'<title>{esc(name)}, epoch {x:g}: {y:.{ydigits + 2}f}</title></circle>')
    # the legend goes in the right-hand corner the curves leave free: at the
    # bottom when they end in the upper half (accuracy), else at the top (loss)
    ends = [pts[-1][1] for _, pts in series if pts]
    ends_high = bool(ends) and sum(ends) / len(ends) > (y0 + y1) / 2
    first = top + ph - 12 - 18 * (len(series) - 1) if ends_high else top + 10
    out.append(f'<rect x="{left + pw - 126}" y="{first - 10}" width="124" '
               f'height="{18 * len(series) + 2}" fill="white" opacity="0.85"/>')
    for i, ((name, _), color) in enumerate(zip(series, PALETTE)):
        y = first + 18 * i
        out.append(f'<line x1="{left + pw - 120}" y1="{y}" x2="{left + pw - 96}" y2="{y}" '
                   f'stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{left + pw - 90}" y="{y + 4}" font-size="12">{esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def training_plots(history):
    """The loss plot and the accuracy plot of a run's epochs (empty: no epochs)."""
    if not history:
        return ""
    loss = [("train loss", [(m["epoch"], m["train_loss"]) for m in history])]
    if any(m.get("val_loss") is not None for m in history):
        loss.append(("validation loss", [(m["epoch"], m["val_loss"]) for m in history
                                         if m.get("val_loss") is not None]))
    acc = [("train", [(m["epoch"], m["train_acc"] * 100) for m in history])]
    if any(m["val_acc"] is not None for m in history):
        acc.append(("validation", [(m["epoch"], m["val_acc"] * 100) for m in history
                                   if m["val_acc"] is not None]))
    return ('<div class="plots">'
            + line_plot("Loss", loss, "epoch", "loss")
            + line_plot("Accuracy", acc, "epoch", "accuracy (%)") + "</div>")


# ---- confusion matrix ------------------------------------------------------------

def confusion_svg(cm, names, which, cell=40):
    """The confusion matrix as a heat map: rows are true classes, columns are
    predictions. A cell's shade is its share of the row, square-rooted so that
    a few mistakes still show; the count is written on every cell."""
    n = len(cm)
    left, top = 104, 96
    size = cell * n
    width, height = left + size + 56, top + size + 30  # right: room for slanted labels
    out = [(f'<svg class="confusion" data-set="{esc(which)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">'),
           f'<title>{esc(which)} confusion matrix</title>']
    for k, name in enumerate(names):
        y = top + k * cell + cell / 2 + 4
        out.append(f'<text x="{left - 6}" y="{y}" text-anchor="end" font-size="11">{esc(name)}</text>')
        x = left + k * cell + cell / 2
        out.append(f'<text transform="translate({x + 4} {top - 6}) rotate(-55)" '
                   f'font-size="11">{esc(name)}</text>')
    for t, row in enumerate(cm):
        total = sum(row) or 1
        for p, count in enumerate(row):
            share = (count / total) ** 0.5
            # white (share 0) to dark blue (share 1)
            r, g, b = (round(255 - (255 - c) * share) for c in (8, 48, 107))
            x, y = left + p * cell, top + t * cell
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                       f'fill="rgb({r},{g},{b})" stroke="#fff"><title>true {esc(names[t])}, '
                       f'predicted {esc(names[p])}: {count}</title></rect>')
            ink = "#fff" if share > 0.6 else "#222"
            out.append(f'<text class="count" x="{x + cell / 2}" y="{y + cell / 2 + 4}" '
                       f'text-anchor="middle" font-size="11" fill="{ink}">{count}</text>')
    out.append(f'<text x="{left + size / 2}" y="{height - 8}" text-anchor="middle" '
               f'font-size="12">predicted class</text>')
    out.append(f'<text transform="translate(12 {top + size / 2}) rotate(-90)" '
               f'text-anchor="middle" font-size="12">true class</text>')
    out.append("</svg>")
    return "\n".join(out)


def per_class_table(result, which):
    head = ("<tr><th>class</th><th>precision</th><th>recall</th><th>accuracy</th>"
            "<th>support</th></tr>")
    rows = "".join(f"<tr><td>{esc(r['class'])}</td><td>{pct(r['precision'])}</td>"
                   f"<td>{pct(r['recall'])}</td><td>{pct(r['accuracy'])}</td>"
                   f"<td>{r['support']}</td></tr>" for r in result["per_class"])
    return f'<table class="per-class" data-set="{esc(which)}">{head}{rows}</table>'


def evaluation_section(title, which, result, names):
    if result is None:
        return ""
    return (f"<h2>{esc(title)}</h2>"
            f'<p>{result["count"]} images, accuracy <b class="accuracy" data-set="{esc(which)}">'
            f'{pct(result["accuracy"])}</b>. Accuracy per class is one-vs-rest; '
            f"0/0 counts as 0.</p>"
            f'<div class="sets">{per_class_table(result, which)}'
            f"{confusion_svg(result['confusion'], names, which)}</div>")


# ---- images ------------------------------------------------------------------------

def _png(width, height, color, rows):
    """A PNG file (bytes), 8 bits a channel, colour type ``color`` (0: gray, 2:
    RGB), from ``rows``: each row's bytes. A PNG is a signature and chunks
    (length, type, data, CRC); the image data is zlib-compressed rows, each
    led by a filter byte (0: none)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)  # no interlace
    data = b"".join(b"\0" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b""))


def png_gray(width, height, pixels):
    """A grayscale PNG of ``pixels``: width*height ints 0..255, row by row."""
    return _png(width, height, 0, (bytes(pixels[r * width:(r + 1) * width])
                                   for r in range(height)))


def png_rgb(width, height, pixels):
    """A colour PNG of ``pixels``: width*height (r, g, b) tuples of ints 0..255."""
    return _png(width, height, 2, (bytes(v for px in pixels[r * width:(r + 1) * width]
                                         for v in px) for r in range(height)))


def diverging(value, scale):
    """(r, g, b) of value / scale in [-1, 1]: blue at -1, white at 0, red at 1."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = round(255 * (1.0 - abs(t)))  # the other two channels fade as |t| grows
    return (255, fade, fade) if t > 0 else (fade, fade, 255)


def figure(src, alt, caption, data=""):
    """One picture of a grid: the image (``data``: extra attributes) and its caption."""
    return (f'<figure><img src="{src}" alt="{esc(alt)}"{data}/>'
            f"<figcaption>{caption}</figcaption></figure>")


def picture_uri(side_h, side_w, values, scale):
    pixels = [diverging(v, scale) for v in values]
    return "data:image/png;base64," + base64.b64encode(png_rgb(side_w, side_h, pixels)).decode()


def weight_pictures(pictures):
    """The "weights as pictures" section from ``pictures`` (app.weight_pictures):
    for an MLP the first layer's weights into each of its first hidden units,
    as images; for a CNN the first convolution's filters and, for a few
    validation images, the maps that each filter makes of them."""
    if not pictures:
        return ""
    out = ['<h2 id="weights">Weights as pictures</h2>']
    if pictures["kind"] == "dense":
        h, w = pictures["shape"]
        out.append(f"<p>The first layer's weights w_ji into hidden units "
                   f"j = 1..{len(pictures['units'])} (of {pictures['of']}), one {h}x{w} image "
                   "each, pixel i at its place in the "
                   f"input image: red where a bright pixel raises xi_j, blue where it lowers it, "
                   f"white near 0 (the scale: +-{pictures['scale']:.3g}, all images alike).</p>")
        figures = [figure(picture_uri(h, w, values, pictures["scale"]),
                          f"weights into unit {j + 1}", f"unit {j + 1}", f' data-unit="{j}"')
                   for j, values in enumerate(pictures["units"])]
        out.append(f'<div class="grid pictures">{"".join(figures)}</div>')
        return "\n".join(out)
    k = pictures["k"]
    out.append(f"<p>The first convolution's {len(pictures['filters'])} filters ({k}x{k}; red "
               f"weights raise the output where the image is bright, blue lower it; the scale "
               f"+-{pictures['scale']:.3g}), then what the first filters make of a few "
               "validation images (each map on its own scale, zero white).</p>")
    figures = [figure(picture_uri(k, k, values, pictures["scale"]), f"filter {o + 1}",
                      f"filter {o + 1}", f' data-filter="{o}"')
               for o, values in enumerate(pictures["filters"])]
    out.append(f'<div class="grid pictures">{"".join(figures)}</div>')
    h, w = pictures["map_shape"]
    for n, (image, maps) in enumerate(zip(pictures["images"], pictures["maps"])):
        uri = "data:image/png;base64," + base64.b64encode(png_gray(w, h, image)).decode()
        row = [figure(uri, f"validation image {n + 1}", "image")]
        for o, values in enumerate(maps):
            scale = max((abs(v) for v in values), default=0.0)
            row.append(figure(picture_uri(h, w, values, scale), f"map of filter {o + 1}",
                              f"filter {o + 1}", f' data-map="{n},{o}"'))
        out.append(f'<div class="grid maps">{"".join(row)}</div>')
    return "\n".join(out)


def misclassified(x, truth, pred, classes, norm, lines=None, cap=MISCLASSIFIED_CAP):
    """Up to ``cap`` wrongly predicted rows of x as (pixels 0..255, true, predicted,
    line), at most cap / classes of each true class so that every class shows.

    x holds normalized values; ``norm`` (mean, std) undoes that: pixel =
    value * std + mean. ``lines``: each row's line in the CSV (shown in captions)."""
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        return []  # not square images
    truth, pred = truth.tolist(), pred.tolist()
    per_class = max(1, cap // classes)
    taken, picked = {}, []
    for i, (t, p) in enumerate(zip(truth, pred)):
        if t != p and taken.get(t, 0) < per_class and len(picked) < cap:
            taken[t] = taken.get(t, 0) + 1
            values = x.rows(i, i + 1).tolist()
            pixels = [min(255, max(0, round(v * norm.std + norm.mean))) for v in values]
            picked.append((pixels, t, p, lines[i] if lines else i + 1))
    picked.sort(key=lambda item: item[1])  # grouped by true class
    return picked


def image_grid(images, names):
    if not images:
        return ""
    figures = []
    for pixels, t, p, line in images:
        side = math.isqrt(len(pixels))
        uri = "data:image/png;base64," + base64.b64encode(png_gray(side, side, pixels)).decode()
        figures.append(f'<figure><img src="{uri}" alt="validation image, line {line}"/>'
                       f"<figcaption>{esc(names[t])}<br/>"
                       f'<span class="wrong">as {esc(names[p])}</span><br/>line {line}'
                       "</figcaption></figure>")
    return (f"<h2>Misclassified validation images ({len(images)} shown)</h2>"
            "<p>Caption: the true class, the predicted class, the image's line in the "
            "training CSV.</p>"
            f'<div class="grid">{"".join(figures)}</div>')


# ---- the page ------------------------------------------------------------------------

def build(summary, history, config, images, pictures=None):
    """The whole report.html as a string; ``pictures``: see weight_pictures."""
    names = summary["classes"]
    t = summary["timings"]
    facts = [f"validation accuracy <b>{pct(summary['val_acc'])}</b>",
             f"test accuracy <b>{pct(summary['test_acc'])}</b>",
             f"accuracy on all training rows {pct(summary['train_file_acc'])}"]
    if summary["loaded_from"]:
        run = f"model loaded from {esc(summary['loaded_from'])}, no training"
    else:
        run = (f"{summary['epochs']} epochs ({esc(summary['stopped'])}), "
               f"training {t['train_seconds']:.1f} s")
    config_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>"
                          for k, v in config.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>pynn run {esc(summary['run'])}</title><style>{CSS}</style></head><body>",
        f"<h1>pynn run {esc(summary['run'])}</h1>",
        f'<p class="headline">{", ".join(facts)}</p>',
        f"<p>{esc(summary['model'])}; {run}; total {t['total_seconds']:.1f} s.</p>",
        "<h2>Training</h2>" + (training_plots(history) or "<p>No epochs in this run.</p>"),
        evaluation_section("Validation set", "validation", summary["validation"], names),
        evaluation_section("Test set (final evaluation)", "test", summary["test"], names),
        image_grid(images, names),
        weight_pictures(pictures),
        f'<h2>Configuration</h2><table class="config">{config_rows}</table>',
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
