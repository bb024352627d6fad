#!/usr/bin/env python3
"""Benchmark figures for pynn, and PyTorch side by side in the same run.

    python scripts/bench.py [--torch] [--threads N] [--repeat R] [--only PART]

The first line names the CPU. Prints, for pynn (and PyTorch with --torch, if
importable; never a dependency):
  - GFLOP/s of each GEMM layout at the network's shapes (batch 64 and 256
    against 784, 256, 128, 10): NT = forward, NN = dL/dinput, TN = dL/dweight;
  - seconds and samples/s of one training epoch of 784-256-128-10, batch 64,
    Adam lr 1e-3 (60 000 rows, the real loop: pynn.train.fit), at 1 thread
    and at --threads (thread scaling); the same for the mlp preset's
    network and batch size (pynn.config: the mlp preset);
  - CSV parse time and MB/s of the course CSVs (when data/ has them);
  - per conv layer of the cnn presets' networks (CONV_PRESETS), or of each
    --cnn-arch given (batch 128, 28x28x1 input): effective GFLOP/s (the
    direct convolution's flops over the time) of conv2d_forward and
    conv2d_backward on both roads, im2col and Winograd, beside
    torch.nn.functional.conv2d on NCHW tensors;
  - ms per CNN training step (the networks of the cnn presets,
    or each --cnn-arch given; batch 128, Adam: gather, forward, loss,
    backward, step), pynn's Sequential against the same network in PyTorch,
    and against pynn's own plans with less fusion (--fusion: what a fused
    kernel pair buys, pynn/fuse.py);
  - where such a step's time goes (--only layers): each layer's forward and
    backward, the loss and the optimizer step, in ms and as shares.
Timings of the GEMM, epoch and parse parts are the best of --repeat runs: the
machine is noisy, the minimum is the figure least disturbed by it. The conv
and CNN-step parts report the median and the best of --repeat blocks, the
contenders taking turns block by block. Nothing here asserts anything.

PyTorch may live in its own venv without pynn installed: this script puts
the repository root first on sys.path, so that venv's python imports this
checkout's pynn (with its in-place extension; cffi must be importable):

    /path/to/venv/bin/python scripts/bench.py --torch --only conv

To measure another build of the kernels (the AVX2 target of the course
server, say), build it apart and point PYNN_BUILD at it:

    PYNN_MARCH=x86-64-v3 PYTHON=.venv/bin/python scripts/build_variant.sh /tmp/avx2
    PYNN_BUILD=/tmp/avx2 .venv/bin/python scripts/bench.py --only cnn-step

The output ends with one line per figure, `bench NAME VALUE UNIT`, for scripts.
"""
import argparse
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this checkout's pynn, from any python; or PYNN_BUILD's, a folder that
# scripts/build_variant.sh made (the kernels built another way: AVX2, ...)
sys.path.insert(0, os.environ.get("PYNN_BUILD") or str(ROOT))

import pynn
from pynn._kernels import ffi, lib
from pynn.arch import parse as parse_arch
from pynn.budget import Budget
from pynn.config import configure
from pynn.fuse import PATTERNS, Conv2dBatchNormReLUMaxPool, fuse, without
from pynn.io import CSV_NAMES
from pynn.layers import Conv2d
from pynn.loss import CrossEntropyLoss
from pynn.model import build
from pynn.optim import Adam
from pynn.report import Reporter
from pynn.tensor import Tensor
from pynn.train import fit

LAYERS = [(784, 256), (256, 128), (128, 10)]  # (C, OC) of 784-256-128-10
BATCHES = (64, 256)
EPOCH_ROWS, EPOCH_BATCH = 60000, 64
CONV_PRESETS, CONV_BATCH, IMAGE = ("cnn", "cnn-large"), 128, (28, 28, 1)
CNN_BATCH, CNN_ROWS = 128, 4096

results = []  # (name, value, unit)


def record(name, value, unit):
    results.append((name, value, unit))
    return value


def best_time(fn, repeat, min_seconds=0.05):
    """Best per-call time of fn over `repeat` rounds of enough calls to last
    min_seconds each."""
    fn()
    calls, t = 1, 0.0
    while True:  # calibrate the number of calls per round
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t = time.perf_counter() - t0
        if t >= min_seconds:
            break
        calls *= 2
    best = t / calls
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def random_tensor(shape, rng):
    t = Tensor(shape)
    t.ptr[0:t.size] = [rng.uniform(-1, 1) for _ in range(t.size)]
    return t


def block_times(fns, repeat, min_seconds=0.1):
    """{name: [seconds per call of each block]} for the functions fns
    {name: fn}: each gets enough calls per block to last min_seconds, and
    they take turns block by block (a slow moment of the machine then falls
    on all of them)."""
    calls = {}
    for name, fn in fns.items():  # warm up, then time one call to size the blocks
        fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-9)))
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / calls[name])
    return times


def median_min(times):
    return statistics.median(times), min(times)


def cpu_name():
    """The CPU's model name: /proc/cpuinfo, else lscpu, else the platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# ---- GEMM ------------------------------------------------------------------

def gemm_cases():
    """(label, ta, tb, M, N, K) of every product a training step makes."""
    for B in BATCHES:
        for C, OC in LAYERS:
            yield f"NT {B}x{C}x{OC}", 0, 1, B, OC, C   # out = inp . W^T
            yield f"NN {B}x{OC}x{C}", 0, 0, B, C, OC   # dinp = dout . W
            yield f"TN {OC}x{B}x{C}", 1, 0, OC, C, B   # dW = dout^T . inp


def bench_gemm(repeat, torch):
    rng = random.Random(0)
    print(f"\nGEMM GFLOP/s, {pynn.get_threads()} threads "
          "(label: layout MxKxN; NT = forward, NN = dinput, TN = dweight)")
    header = f"  {'shape':18s} {'pynn':>8s}"
    if torch:
        header += f" {'torch':>8s} {'ratio':>6s}"
    print(header)
    for label, ta, tb, M, N, K in gemm_cases():
        a = random_tensor((K, M) if ta else (M, K), rng)
        b = random_tensor((N, K) if tb else (K, N), rng)
        c = Tensor((M, N))
        flops = 2.0 * M * N * K
        t = best_time(lambda ta=ta, tb=tb, M=M, N=N, K=K, a=a, b=b, c=c: lib.pynn_gemm(
            ta, tb, M, N, K, a.ptr, b.ptr, ffi.NULL, c.ptr, 0), repeat)
        ours = record(f"gemm_{label.replace(' ', '_')}_gflops", flops / t / 1e9, "GFLOP/s")
        line = f"  {label:18s} {ours:8.1f}"
        if torch:
            ta_ = to_torch(torch, a)
            tb_ = to_torch(torch, b)
            A = ta_.t() if ta else ta_
            Bm = tb_.t() if tb else tb_
            out = torch.empty(M, N)
            tt = best_time(lambda A=A, Bm=Bm, out=out: torch.mm(A, Bm, out=out), repeat)
            theirs = record(f"torch_gemm_{label.replace(' ', '_')}_gflops", flops / tt / 1e9,
                            "GFLOP/s")
            ratio = record(f"ratio_gemm_{label.replace(' ', '_')}", ours / theirs, "x")
            line += f" {theirs:8.1f} {ratio:6.2f}"
        print(line)


def to_torch(torch, t):
    """A torch copy of a pynn Tensor (same values)."""
    return torch.frombuffer(bytearray(ffi.buffer(t.ptr, t.nbytes)),
                            dtype=torch.float32).reshape(t.shape).clone()


# ---- training epoch ----------------------------------------------------------

class _Quiet(Reporter):
    """Prints nothing: the bench times the loop, not the terminal."""

    def line(self, text=""):
        pass


def synthetic_data(n, d, classes, seed=0):
    """n rows: a block of random values repeated (values do not change timing)."""
    rng = random.Random(seed)
    x = Tensor((n, d))
    block = min(n, 512)
    x.ptr[0:block * d] = [rng.gauss(0, 1) for _ in range(block * d)]
    for start in range(block, n, block):
        rows = min(block, n - start)
        ffi.memmove(x.ptr + start * d, x.ptr, rows * d * 4)
    y = Tensor.from_list([rng.randrange(classes) for _ in range(n)], dtype="int32")
    return x, y


def pynn_trainer(x, y, threads, arch="f256,f128", batch=EPOCH_BATCH, wd=0.0):
    """A function that trains one more epoch (the real loop, pynn.train.fit)
    and returns its seconds."""
    rng = random.Random(0)
    model = fuse(build(arch, 784, 10, "relu", rng, batchnorm="off"))  # as a run trains it
    opt = Adam(model.parameters(), 1e-3, weight_decay=wd)
    cfg = configure("mlp", epochs=1, batch_size=batch, schedule="constant")
    rows = list(range(x.shape[0]))

    def epoch():
        pynn.set_threads(threads)
        history, _, _, _ = fit(model, opt, x, y, rows, None, None, cfg, _Quiet(), rng,
                            Budget(1e9))
        return history[0]["seconds"]
    return epoch


def torch_trainer(torch, x, y, threads, loader=False):
    """The same epoch in PyTorch: the same network, Adam, batch, steps.

    loader=False: batches cut from a shuffled index tensor (the fastest plain
    loop); loader=True: torch.utils.data.DataLoader over a TensorDataset with
    shuffle=True, as the tutorials (and most students) write it."""
    torch.manual_seed(0)
    X, Y = to_torch(torch, x), torch.tensor(y.tolist(), dtype=torch.long)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n, B = X.shape[0], EPOCH_BATCH
    data = torch.utils.data
    batches = data.DataLoader(data.TensorDataset(X, Y), batch_size=B, shuffle=True,
                              drop_last=True)

    def index_batches():
        perm = torch.randperm(n)
        for i in range(0, n - B + 1, B):
            idx = perm[i:i + B]
            yield X[idx], Y[idx]

    def epoch():
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for xb, yb in (batches if loader else index_batches()):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0
    return epoch


def fastest(trainers, repeat):
    """{name: best seconds}, the trainers taking turns epoch by epoch so that
    a slow moment of the machine does not fall on one of them only."""
    best = {name: float("inf") for name in trainers}
    for _ in range(repeat):
        for name, epoch in trainers.items():
            best[name] = min(best[name], epoch())
    return best


def bench_epoch(threads, repeat, torch):
    x, y = synthetic_data(EPOCH_ROWS, 784, 10)
    steps = EPOCH_ROWS // EPOCH_BATCH
    samples = steps * EPOCH_BATCH
    print(f"\nTraining epoch: 784-256-128-10, batch {EPOCH_BATCH}, Adam, {EPOCH_ROWS} rows "
          f"({steps} steps); best of {repeat}, contenders taking turns")
    trainers = {"pynn 1": pynn_trainer(x, y, 1), f"pynn {threads}": pynn_trainer(x, y, threads)}
    if torch:
        trainers["torch index"] = torch_trainer(torch, x, y, threads)
        trainers["torch loader"] = torch_trainer(torch, x, y, threads, loader=True)
    best = fastest(trainers, repeat)
    t1 = record("epoch_seconds_1thread", best["pynn 1"], "s")
    tn = record(f"epoch_seconds_{threads}threads", best[f"pynn {threads}"], "s")
    speedup = record("thread_speedup", t1 / tn, "x")
    record("epoch_samples_per_s", samples / tn, "samples/s")
    print(f"  pynn   1 thread : {t1:7.3f} s  ({samples / t1:9.0f} samples/s)")
    print(f"  pynn  {threads:2d} threads: {tn:7.3f} s  ({samples / tn:9.0f} samples/s)"
          f"   speed-up {speedup:.2f}x")
    for what, label in (("index", "index loop"), ("loader", "DataLoader")):
        if f"torch {what}" in best:
            tt = record(f"torch_{what}_epoch_seconds_{threads}threads", best[f"torch {what}"], "s")
            ratio = record(f"ratio_epoch_time_pynn_over_torch_{what}", tn / tt, "x")
            print(f"  torch {threads:2d} threads ({label}): {tt:7.3f} s  "
                  f"({samples / tt:9.0f} samples/s)   pynn/torch time {ratio:.3f}")

    d = configure("mlp")  # the mlp preset's network and batch: what ./run.sh --model mlp trains
    name = "-".join(["784", *(t[1:] for t in d.arch.split(",")), "10"])
    print(f"\nTraining epoch of the mlp preset: {name}, batch {d.batch_size}, AdamW; "
          f"best of {repeat}")
    kw = {"arch": d.arch, "batch": d.batch_size, "wd": d.weight_decay}
    best = fastest({1: pynn_trainer(x, y, 1, **kw), threads: pynn_trainer(x, y, threads, **kw)},
                   repeat)
    d1 = record("default_epoch_seconds_1thread", best[1], "s")
    dn = record(f"default_epoch_seconds_{threads}threads", best[threads], "s")
    record("default_thread_speedup", d1 / dn, "x")
    print(f"  pynn   1 thread : {d1:7.3f} s")
    print(f"  pynn  {threads:2d} threads: {dn:7.3f} s   speed-up {d1 / dn:.2f}x")
    pynn.set_threads(threads)


# ---- CSV parsing ---------------------------------------------------------------

def bench_parse(data_dir, repeat):
    paths = [data_dir / CSV_NAMES[k] for k in ("train_vectors", "test_vectors")]
    if not all(p.exists() for p in paths):
        print(f"\nCSV parse: skipped ({data_dir} has no course CSVs)")
        return
    size = sum(p.stat().st_size for p in paths)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for p in paths:
            pynn.load_vectors(p)
        best = min(best, time.perf_counter() - t0)
    record("parse_train_test_seconds", best, "s")
    record("parse_mb_per_s", size / 1e6 / best, "MB/s")
    print(f"\nCSV parse (train + test vectors, {size / 1e6:.0f} MB, file read included): "
          f"{best:.3f} s, {size / 1e6 / best:.0f} MB/s")


# ---- convolution layers ------------------------------------------------------

def fill_uniform(ffi, ptr, size, rng):
    """ptr[0:size] filled with uniform(-1, 1) floats: one block drawn in
    Python, then copied over (the values do not change the timing; 30 M
    draws would). ffi is the one ptr comes from (scripts/ab_kernels.py
    fills buffers of other builds)."""
    block = min(size, 4096)
    ptr[0:block] = [rng.uniform(-1, 1) for _ in range(block)]
    done = block
    while done < size:
        n = min(done, size - done)
        ffi.memmove(ptr + done, ptr, n * 4)
        done += n


def fill_random(t, rng):
    """t filled with uniform(-1, 1) values (fill_uniform)"""
    fill_uniform(ffi, t.ptr, t.size, rng)
    return t


def preset_networks():
    """[(name, --arch)] of the CONV_PRESETS, the networks measured by default."""
    return [(p, configure(p).arch) for p in CONV_PRESETS]


def network_convs(networks):
    """[(names, (H, W, C, OC, k), first)]: the conv layers of the networks,
    (name, --arch) pairs, as pynn.build makes them, with the image size each
    sees; a layer of the same shape in several networks is listed once, with
    all its names."""
    layers = {}
    for name, arch in networks:
        model = build(arch, 784, 10, "relu", random.Random(0))
        shape, n = model.input_shape, 0
        for layer in model.modules():  # a residual block's body after the block (same shape)
            if isinstance(layer, Conv2d):
                n += 1
                key = (*shape[:2], layer.in_channels, layer.out_channels, layer.k)
                first = not layer.input_grad
                layers.setdefault((key, first), []).append(f"{name}:{n}")
            shape = layer.out_shape(shape)
    return [(" ".join(names), key, first) for (key, first), names in layers.items()]


CONV_ROADS = {"im2col": "PYNN_CONV_IM2COL", "winograd": "PYNN_CONV_WINOGRAD"}


def conv_contenders(B, H, W, C, OC, k, first, torch, rng):
    """{(direction, contender): fn} for one conv layer. Directions: fwd
    (conv2d_forward), dinp (the input gradient: conv2d_backward computes it as
    the forward convolution of dout with the turned kernel, so that is what
    runs here), dw (conv2d_backward's weight gradient alone, dinp NULL).
    Contenders: pynn's two roads, forced (csrc/conv.c; a one-channel layer
    takes its direct loops on both), and PyTorch's conv2d and its autograd."""
    inp, weight = fill_random(Tensor((B, H, W, C)), rng), fill_random(Tensor((OC, k, k, C)), rng)
    out, dout = Tensor((B, H, W, OC)), fill_random(Tensor((B, H, W, OC)), rng)
    dweight, dinp = Tensor(weight.shape), Tensor(inp.shape)
    wflip = fill_random(Tensor((C, k, k, OC)), rng)
    fns = {}
    for road, const in CONV_ROADS.items():
        path = getattr(lib, const)

        def forced(fn, path=path):
            def run():
                lib.pynn_set_conv_path(path)
                fn()
                lib.pynn_set_conv_path(lib.PYNN_CONV_BY_SHAPE)
            return run
        fns[("fwd", road)] = forced(lambda: lib.conv2d_forward(
            out.ptr, inp.ptr, weight.ptr, ffi.NULL, B, H, W, C, OC, k))
        if not first:
            fns[("dinp", road)] = forced(lambda: lib.conv2d_forward(
                dinp.ptr, dout.ptr, wflip.ptr, ffi.NULL, B, H, W, OC, C, k))
        fns[("dw", road)] = forced(lambda: lib.conv2d_backward(
            ffi.NULL, dweight.ptr, ffi.NULL, dout.ptr, inp.ptr, weight.ptr, B, H, W, C, OC, k))
    if torch:
        F, p = torch.nn.functional, k // 2
        x, w = torch.randn(B, C, H, W), torch.randn(OC, C, k, k) * 0.1
        fns[("fwd", "torch")] = lambda: F.conv2d(x, w, padding=p)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = F.conv2d(xg, wg, padding=p)
        g = torch.randn_like(y)
        if not first:
            fns[("dinp", "torch")] = lambda: torch.autograd.grad(y, [xg], g, retain_graph=True)
        fns[("dw", "torch")] = lambda: torch.autograd.grad(y, [wg], g, retain_graph=True)
    return fns


def bench_conv(networks, threads, repeat, torch):
    rng = random.Random(0)
    B = CONV_BATCH
    nets = ", ".join(f"{name} ({arch})" for name, arch in networks)
    print(f"\nConv layers of {nets}, batch {B}, {threads} threads: effective GFLOP/s "
          f"(2 B H W k k C OC, the direct convolution's flops, over the time) at the median "
          f"block (best of {repeat})")
    print("  fwd: conv2d_forward; dinp: the input gradient; dw: the weight gradient; "
          "im2col and winograd: pynn's two roads, forced (pynn takes winograd for 3x3 "
          "layers of 8 or more channels each way)")
    header = (f"  {'layer':21s} {'HxWxC->OC,k':14s} {'':4s} {'im2col':>14s} {'winograd':>14s} "
              f"{'win/im2col':>10s}")
    if torch:
        header += f" {'torch':>14s} {'win/torch':>9s}"
    print(header)
    for names, (H, W, C, OC, k), first in network_convs(networks):
        pynn.set_threads(threads)
        fns = conv_contenders(B, H, W, C, OC, k, first, torch, rng)
        times = block_times(fns, repeat)
        flops = 2.0 * B * H * W * OC * k * k * C
        tag, shape = f"{H}x{W}x{C}_{OC}_k{k}", f"{H}x{W}x{C}->{OC},{k}"
        for n, direction in enumerate(d for d in ("fwd", "dinp", "dw") if (d, "im2col") in times):
            rate = {}
            for who in ("im2col", "winograd", "torch"):
                if (direction, who) in times:
                    med, best = median_min(times[(direction, who)])
                    rate[who] = (flops / med / 1e9, flops / best / 1e9)
                    record(f"conv_{tag}_{direction}_{who}_gflops", rate[who][0], "GFLOP/s")

            def cell(who, rate=rate):
                return f"{rate[who][0]:7.1f} ({rate[who][1]:4.0f})"
            ratio = record(f"ratio_conv_{tag}_{direction}_winograd_over_im2col",
                           rate["winograd"][0] / rate["im2col"][0], "x")
            line = (f"  {names if n == 0 else '':21s} {shape if n == 0 else '':14s} "
                    f"{direction:4s} {cell('im2col'):>14s} {cell('winograd'):>14s} {ratio:10.2f}")
            if "torch" in rate:
                ratio = record(f"ratio_conv_{tag}_{direction}_winograd_over_torch",
                               rate["winograd"][0] / rate["torch"][0], "x")
                line += f" {cell('torch'):>14s} {ratio:9.2f}"
            print(line)
        del fns, times  # the layer's buffers (the largest some 100 MB) go now


# ---- CNN training step ---------------------------------------------------------

# --fusion: the fused patterns of a plan (pynn/fuse.py PATTERNS)
FUSIONS = {"all": PATTERNS, "no-first-block": without(Conv2dBatchNormReLUMaxPool), "none": []}


def pynn_cnn_parts(arch, x, y, fusion="all"):
    """pynn's side of the CNN parts: the model for arch with the layers of the
    PyTorch side-by-side (batch norm after the convs only, no dropout; a run
    of a preset also normalizes the dense layers and drops out), fused as a
    run computes it (or as FUSIONS[fusion] says), Adam lr 1e-3, the loss, and
    a function that gathers the next batch of a shuffled order and returns
    (xb, yb)."""
    rng = random.Random(0)
    model = fuse(build(arch, 784, 10, "relu", rng, batchnorm="conv"), FUSIONS[fusion])
    opt = Adam(model.parameters(), 1e-3, weight_decay=0.0)
    loss_fn = CrossEntropyLoss(0.0)
    n, d, B = x.shape[0], x.shape[1], CNN_BATCH
    rows = list(range(n))
    rng.shuffle(rows)
    idx = Tensor.from_list(rows, dtype="int32")
    xb, yb = Tensor((B, d)), Tensor((B,), "int32")
    state = {"batch": 0}

    def next_batch():
        at = idx.ptr + state["batch"] * B
        state["batch"] = (state["batch"] + 1) % (n // B)
        lib.pynn_gather_rows(xb.ptr, x.ptr, at, B, d)
        lib.pynn_gather_labels(yb.ptr, y.ptr, at, B)
        return xb, yb
    return model, opt, loss_fn, next_batch


def pynn_cnn_stepper(arch, x, y, threads, fusion="all"):
    """A function that runs n training steps of pynn's Sequential for arch
    and returns their seconds."""
    model, opt, loss_fn, next_batch = pynn_cnn_parts(arch, x, y, fusion)

    def steps(count):
        pynn.set_threads(threads)
        t0 = time.perf_counter()
        for _ in range(count):
            xb, yb = next_batch()
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
        return time.perf_counter() - t0
    return steps


def torch_cnn(torch, arch, classes=10):
    """The network pynn.build makes for arch, in PyTorch on NCHW images:
    Conv2d(bias=False) + BatchNorm2d + ReLU, MaxPool2d(2), AdaptiveAvgPool2d(1),
    residual blocks, Flatten, Linear + ReLU, Dropout, and the Linear to the classes."""
    nn = torch.nn

    class Residual(nn.Module):
        """relu(x + F(x)), F = conv, batch norm, ReLU, conv, batch norm"""

        def __init__(self, C):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C), nn.ReLU(),
                                      nn.Conv2d(C, C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    layers, (H, W, C), flat = [], IMAGE, False
    for tok in parse_arch(arch):
        if tok[0] == "r":
            layers.append(Residual(C))
        elif tok[0] == "c":
            layers += [nn.Conv2d(C, tok[1], tok[2], padding=tok[2] // 2, bias=False),
                       nn.BatchNorm2d(tok[1]), nn.ReLU()]
            C = tok[1]
        elif tok[0] == "p":
            layers.append(nn.MaxPool2d(2))
            H, W = H // 2, W // 2
        elif tok[0] == "g":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            flat = True
        elif tok[0] == "f":
            if not flat:
                layers.append(nn.Flatten())
                C, flat = H * W * C, True
            layers += [nn.Linear(C, tok[1]), nn.ReLU()]
            C = tok[1]
        else:
            layers.append(nn.Dropout(tok[1]))
    if not flat:
        layers.append(nn.Flatten())
        C = H * W * C
    return nn.Sequential(*layers, nn.Linear(C, classes))


def torch_cnn_stepper(torch, arch, x, y, threads):
    """The same steps in PyTorch: batches indexed from a tensor, Adam."""
    torch.manual_seed(0)
    X = to_torch(torch, x).reshape(-1, 1, *IMAGE[:2])
    Y = torch.tensor(y.tolist(), dtype=torch.long)
    model = torch_cnn(torch, arch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n, B = X.shape[0], CNN_BATCH
    perm = torch.randperm(n)
    state = {"batch": 0}

    def steps(count):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(count):
            i = state["batch"] * B
            state["batch"] = (state["batch"] + 1) % (n // B)
            idx = perm[i:i + B]
            opt.zero_grad()
            loss = loss_fn(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
        return time.perf_counter() - t0
    return steps


def bench_cnn_step(arch, threads, repeat, steps, torch, fusions=()):
    parse_arch(arch)  # a bad --cnn-arch fails here, with pynn's message
    x, y = synthetic_data(CNN_ROWS, 784, 10)
    print(f"\nCNN training step: --arch {arch}, batch norm after convs, batch {CNN_BATCH}, "
          f"Adam lr 1e-3, {threads} threads; {repeat} blocks of {steps} steps after "
          "warm-up, contenders taking turns")
    # contender -> its stepper, and the stem and tag of its figures' names
    steppers = {"pynn": pynn_cnn_stepper(arch, x, y, threads)}
    names = {"pynn": ("cnn_step", f"[{arch}]")}
    for fusion in fusions:  # the same network, fused less
        label = f"pynn, fusion {fusion}"
        steppers[label] = pynn_cnn_stepper(arch, x, y, threads, fusion)
        names[label] = ("cnn_step", f"[{arch}, {fusion}]")
    if torch:
        steppers["torch"] = torch_cnn_stepper(torch, arch, x, y, threads)
        names["torch"] = ("torch_cnn_step", f"[{arch}]")
    for stepper in steppers.values():  # warm-up: buffers, caches, thread pools
        stepper(3)
    times = {name: [] for name in steppers}
    for _ in range(repeat):
        for name, stepper in steppers.items():
            times[name].append(stepper(steps) / steps)
    ms, width = {}, max(map(len, steppers))
    for name in steppers:
        med, best = median_min(times[name])
        ms[name] = med * 1e3
        stem, tag = names[name]
        record(f"{stem}_ms{tag}", med * 1e3, "ms")
        record(f"{stem}_best_ms{tag}", best * 1e3, "ms")
        print(f"  {name:{width}s}: {med * 1e3:8.2f} ms/step median, {best * 1e3:8.2f} best  "
              f"({CNN_BATCH / med:7.0f} samples/s)")
    for fusion in fusions:
        ratio = record(f"ratio_cnn_step_fused_over_{fusion}[{arch}]",
                       ms["pynn"] / ms[f"pynn, fusion {fusion}"], "x")
        print(f"  pynn/pynn with fusion {fusion} (medians): {ratio:.3f}")
    if torch:
        ratio = record(f"ratio_cnn_step_pynn_over_torch[{arch}]", ms["pynn"] / ms["torch"], "x")
        print(f"  pynn/torch time (medians): {ratio:.3f}")
    pynn.set_threads(threads)


# ---- a step, layer by layer ----------------------------------------------------------

def bench_layers(arch, threads, repeat, steps):
    """Where a training step of arch goes: the median over repeat x steps
    steps of each layer's forward and backward (the fused layers, as a run
    trains them), of the loss and of the optimizer step; each C call returns
    when its work is done, so a layer's time is its calls' time."""
    parse_arch(arch)
    x, y = synthetic_data(CNN_ROWS, 784, 10)
    pynn.set_threads(threads)
    model, opt, loss_fn, next_batch = pynn_cnn_parts(arch, x, y)
    B = CNN_BATCH
    names, shape = [], model.input_shape
    for layer in model.layers:
        names.append((repr(layer), "x".join(map(str, shape))))
        shape = layer.out_shape(shape)
    n_layers = len(model.layers)
    # columns: forward of each layer, backward of each layer, loss (both ways), step
    times = [[] for _ in range(2 * n_layers + 2)]
    clock = time.perf_counter
    for s in range(3 + repeat * steps):  # 3 warm-up steps, not counted
        xb, yb = next_batch()
        row = []
        h = xb.view((B,) + model.input_shape)
        for layer in model.layers:
            t0 = clock()
            h = layer.forward(h)
            row.append(clock() - t0)
        t0 = clock()
        loss_fn.forward(h, yb)
        g = loss_fn.backward()
        t_loss = clock() - t0
        back = []
        for layer in reversed(model.layers):
            t0 = clock()
            g = layer.backward(g)
            back.append(clock() - t0)
        row += back[::-1] + [t_loss]
        t0 = clock()
        opt.step()
        row.append(clock() - t0)
        if s >= 3:
            for col, t in zip(times, row):
                col.append(t)
    med = [statistics.median(col) * 1e3 for col in times]
    total = sum(med)
    print(f"\nA training step of --arch {arch}, layer by layer: batch {B}, {threads} threads, "
          f"the median of {repeat * steps} steps (ms; share of the step)")
    print(f"  {'layer':58s} {'input':>9s} {'forward':>14s} {'backward':>14s}")
    for i, (name, shp) in enumerate(names):
        f, b = med[i], med[n_layers + i]
        print(f"  {name:58s} {shp:>9s} {f:7.2f} ({100 * f / total:4.1f}%) "
              f"{b:7.2f} ({100 * b / total:4.1f}%)")
        record(f"layer_ms[{arch}][{i}:{name.split('(')[0]}]", f + b, "ms")
    loss, step = med[-2], med[-1]
    print(f"  {'loss (forward and backward)':58s} {'':9s} {loss:7.2f} ({100 * loss / total:4.1f}%)")
    print(f"  {'optimizer step (Adam)':58s} {'':9s} {step:7.2f} ({100 * step / total:4.1f}%)")
    print(f"  {'sum of the medians':58s} {'':9s} {total:7.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", action="store_true", help="also measure PyTorch (if importable)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads of pynn and PyTorch alike (0: all cores, at most 16)")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds (blocks); the best is reported (conv, cnn-step: median and best)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("--only", choices=("gemm", "epoch", "parse", "conv", "cnn-step", "layers"),
                   help="one part only")
    p.add_argument("--cnn-arch", action="append",
                   help="a network of the conv, cnn-step and layers parts (again for more; "
                        f"default: the networks of the {', '.join(CONV_PRESETS)} presets)")
    p.add_argument("--fusion", action="append", choices=[f for f in FUSIONS if f != "all"],
                   default=[], help="cnn-step: also time pynn's plan with this fusion (again "
                                    "for more): no-first-block stores the first conv's output, "
                                    "none runs every layer as written (--no-fuse)")
    p.add_argument("--cnn-steps", type=int, default=10,
                   help="training steps per timed block of the cnn-step part (layers: per round)")
    args = p.parse_args(argv)

    print(f"CPU: {cpu_name()}")
    torch = None
    if args.torch:
        try:
            with warnings.catch_warnings():  # a torch without NumPy beside it says so
                warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
                import torch
        except ImportError:
            print("note: PyTorch is not importable; measuring pynn alone")
    pynn.set_threads(args.threads)
    threads = pynn.get_threads()
    print(f"pynn bench: {threads} threads, OpenMP {'on' if lib.pynn_have_openmp() else 'off'}, "
          f"{os.cpu_count()} CPUs, GEMM {ffi.string(lib.pynn_gemm_kernel()).decode()}"
          + (f", torch {torch.__version__}" if torch else ""))
    if torch:
        torch.set_num_threads(threads)
    if args.only in (None, "gemm"):
        bench_gemm(args.repeat, torch)
    if args.only in (None, "epoch"):
        bench_epoch(threads, args.repeat, torch)
    if args.only in (None, "parse"):
        bench_parse(args.data_dir, args.repeat)
    networks = ([(f"arch{i}", arch) for i, arch in enumerate(args.cnn_arch, 1)] if args.cnn_arch
                else preset_networks())
    archs = list(dict.fromkeys(arch for _, arch in networks))
    if args.only in (None, "conv"):
        bench_conv(networks, threads, args.repeat, torch)
    if args.only in (None, "cnn-step"):
        for arch in archs:
            bench_cnn_step(arch, threads, args.repeat, args.cnn_steps, torch, args.fusion)
    if args.only in (None, "layers"):
        for arch in archs:
            bench_layers(arch, threads, args.repeat, args.cnn_steps)
    print()
    for name, value, unit in results:
        print(f"bench {name} {value:.4g} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
