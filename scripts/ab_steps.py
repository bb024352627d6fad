#!/usr/bin/env python3
"""Whole CNN training steps of two builds, side by side, taking turns.

    python scripts/ab_steps.py OLD NEW [--arch A] [--rounds R] [--steps S] [--threads N]

OLD and NEW are folders with a pynn package in them (a checkout, or what
scripts/build_variant.sh made: the kernels of one build beside links to
this checkout's Python, so that only the kernels differ; both workers use
this checkout's scripts/bench.py).
Each runs in its own worker process (a process imports one pynn), which
builds the network of --arch as scripts/bench.py's CNN step does (the same
layers as the PyTorch side-by-side, Adam, batch 128, random images and
labels of a fixed seed), warms up, and then waits. The two workers take
turns at S steps each, the order swapped every round, so that a host whose
speed drifts from minute to minute slows both alike: scripts/ab_kernels.py
does this kernel by kernel, this does it for what a run pays, with every
layer in between pushing the others' tensors out of the caches (the fused
first block and the stored windows' routes were slower alone and faster
in whole steps: docs/performance.md). Prints both medians and minima,
NEW/OLD at the median, in how many rounds NEW was faster, and whether the
two builds computed the same losses, bit for bit, step after step.
Nothing here asserts anything.

    PYTHON=.venv/bin/python scripts/build_variant.sh /tmp/old   # before a change
    .venv/bin/python scripts/ab_steps.py /tmp/old . --arch c32,p,c64,p,f256
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

# The worker: bench.py puts PYNN_BUILD first on sys.path, so it and the
# network it builds come from that build's pynn. Protocol: "ready" once
# warm; then, for each "go", the seconds of S steps; for "losses", the
# hex of every loss so far (the bits to compare); any other line ends it.
WORKER = r"""
import random, sys, time
sys.path.insert(0, sys.argv[1])
import bench
import pynn
from pynn.tensor import Tensor

arch, steps, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
n = 4 * bench.CNN_BATCH
x = bench.fill_random(Tensor((n, 784)), rng)
y = Tensor.from_list([rng.randrange(10) for _ in range(n)], dtype="int32")
model, opt, loss_fn, next_batch = bench.pynn_cnn_parts(arch, x, y)
pynn.set_threads(threads)
losses = []

def run(count):
    for _ in range(count):
        xb, yb = next_batch()
        loss, _ = loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss).hex())

run(3)
print("ready", bench.CNN_BATCH, flush=True)
for line in sys.stdin:
    if line.strip() == "go":
        t0 = time.perf_counter()
        run(steps)
        print(time.perf_counter() - t0, flush=True)
    elif line.strip() == "losses":
        print(" ".join(losses), flush=True)
    else:
        break
"""


def folder(path):
    """the folder whose pynn/ a worker imports: path itself, with a pynn/ in it"""
    p = Path(path).resolve()
    if not (p / "pynn" / "__init__.py").is_file():
        sys.exit(f"error: {path}: no pynn package in it (a checkout, or scripts/build_variant.sh's folder)")
    return p


def worker(build, args):
    env = {**os.environ, "PYNN_BUILD": str(build)}
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(SCRIPTS), args.arch, str(args.steps),
                          str(args.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    ready = p.stdout.readline().split()
    if not ready or ready[0] != "ready":
        sys.exit(f"error: the worker of {build} did not start (its error is above)")
    return p, int(ready[1])


def ask(p, build, what):
    """the worker's answer to one line, or a one-line error if it has stopped"""
    try:
        p.stdin.write(what + "\n")
        p.stdin.flush()
        answer = p.stdout.readline().strip()
    except BrokenPipeError:
        answer = ""
    if not answer:
        try:
            code = p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its output closed, itself still running
            p.kill()
            code = p.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        sys.exit(f"error: the worker of {build} stopped ({how}; its error, if any, is above)")
    return answer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--arch", default="c32,p,c64,p,f256", help="the network (default: cnn's)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="steps a turn")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    builds = [folder(args.old), folder(args.new)]
    (w_old, batch), (w_new, _) = (worker(b, args) for b in builds)
    workers = [w_old, w_new]
    times = ([], [])
    try:
        for r in range(args.rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                times[i].append(float(ask(workers[i], builds[i], "go")) / args.steps)
        same = ask(workers[0], builds[0], "losses") == ask(workers[1], builds[1], "losses")
    finally:
        for p in workers:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.wait()
    med = [statistics.median(t) * 1e3 for t in times]
    wins = sum(n < o for o, n in zip(*times))
    print(f"old {builds[0]}\nnew {builds[1]}")
    print(f"--arch {args.arch}, batch {batch}, {args.threads} threads, "
          f"{args.rounds} rounds of {args.steps} steps, the builds in turns (ms a step)")
    print(f"  old {med[0]:7.2f} (min {min(times[0]) * 1e3:7.2f})  new {med[1]:7.2f} "
          f"(min {min(times[1]) * 1e3:7.2f})  new/old {med[1] / med[0]:.3f}  "
          f"new faster {wins}/{args.rounds}  {'same losses' if same else 'LOSSES DIFFER'}")


if __name__ == "__main__":
    main()
