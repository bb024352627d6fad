#!/usr/bin/env python3
"""Regression: a small tanh network fits y = sin(x) on [-pi, pi].

The lecture's setting for the squared error: identity output units, the
error E = 1/p sum_k 1/2 (y_k - d_k)^2 over the p training points, gradients
by backpropagation. A 1-32-32-1 network with tanh hidden units is trained by
Adam on minibatches; it prints E as it goes, then the error on 200 points
of another grid than the training points, and writes an SVG of target against
fit (into runs/, which git ignores, as it does pynn's run folders).

    python scripts/examples/regression.py [--out runs/regression.svg] [--steps N] [--seed S]
"""
import argparse
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's pynn

from pynn import Adam, Linear, MSELoss, Sequential, Tanh, Tensor
from pynn.io import write_text


def target(x):
    return math.sin(x)


def train(seed=0, steps=3000, batch=32, lr=1e-2, report_every=500, out=print):
    """(network, training xs) after ``steps`` Adam steps on 256 training points."""
    rng = random.Random(seed)
    net = Sequential(Linear(1, 32, rng), Tanh(), Linear(32, 32, rng), Tanh(), Linear(32, 1, rng))
    xs = [-math.pi + 2 * math.pi * i / 255 for i in range(256)]
    loss_fn, opt = MSELoss(), Adam(net.parameters(), lr=lr)
    xb, db = Tensor((batch, 1)), Tensor((batch, 1))
    for t in range(steps + 1):
        picks = [rng.choice(xs) for _ in range(batch)]
        xb.ptr[0:batch] = picks
        db.ptr[0:batch] = [target(v) for v in picks]
        error, _ = loss_fn.forward(net.forward(xb), db)
        if t % report_every == 0:
            out(f"step {t:5d}  E = {error:.6f}")
        if t == steps:
            break
        opt.lr = lr * 0.5 * (1 + math.cos(math.pi * t / steps))  # cosine decay
        net.backward(loss_fn.backward())
        opt.step()
    return net, xs


def fit_on(net, xs):
    """The network's outputs for the inputs xs."""
    return net.forward(Tensor.from_list(xs, (len(xs), 1))).tolist()


def svg(xs, want, got, width=480, height=280, pad=30):
    """A small line chart: the target (grey) and the network (blue)."""
    def px(x):
        return pad + (x - xs[0]) / (xs[-1] - xs[0]) * (width - 2 * pad)

    def py(y):
        return height / 2 - y * (height / 2 - pad)

    def path(ys, colour, style):
        d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}"
                     for i, (x, y) in enumerate(zip(xs, ys)))
        return f'<path d="{d}" fill="none" stroke="{colour}"{style}/>'

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n'
            f'<line x1="{pad}" y1="{py(0):.1f}" x2="{width - pad}" y2="{py(0):.1f}" '
            'stroke="#ccc"/>\n'
            + path(got, "#1f77b4", ' stroke-width="4"') + "\n"  # under the dashed target
            + path(want, "#333", ' stroke-width="1.5" stroke-dasharray="6 4"') + "\n"
            f'<text x="{pad}" y="18" font-family="sans-serif" font-size="13">'
            "sin(x) (dashed) over the network's fit (blue), x in [-pi, pi]</text>\n</svg>\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "regression.svg"),
                   help="the SVG file to write (default: the checkout's runs/regression.svg)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    net, _ = train(args.seed, args.steps)
    grid = [-math.pi + 2 * math.pi * (i + 0.5) / 200 for i in range(200)]  # not the training grid
    want, got = [target(x) for x in grid], [v for v in fit_on(net, grid)]
    error = sum(0.5 * (g - w) ** 2 for g, w in zip(got, want)) / len(grid)
    worst = max(abs(g - w) for g, w in zip(got, want))
    print(f"\nerror on 200 new points: E = {error:.2e}, largest |y - d| = {worst:.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), svg(grid, want, got))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
