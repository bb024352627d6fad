#!/usr/bin/env python3
"""Benchmark figures for pynn, and PyTorch side by side in the same run.

    python scripts/bench.py [--torch] [--threads N] [--repeat R] [--quick]

Prints, for pynn (and PyTorch with --torch, if importable; never a dependency):
  - GFLOP/s of each GEMM layout at the network's shapes (batch 64 and 256
    against 784, 256, 128, 10): NT = forward, NN = dL/dinput, TN = dL/dweight;
  - seconds and samples/s of one training epoch of 784-256-128-10, batch 64,
    Adam lr 1e-3 (60 000 rows, the real loop: pynn.train.fit), at 1 thread
    and at all threads (thread scaling); the same for the default run's
    network and batch size (pynn.config.Config);
  - CSV parse time and MB/s of the course CSVs (when data/ has them).
Timings are the best of --repeat runs: the machine is noisy, the minimum is
the figure least disturbed by it. Nothing here asserts anything.

The output ends with one line per figure, `bench NAME VALUE UNIT`, for scripts.
"""
import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import pynn  # noqa: E402
from pynn._kernels import ffi, lib  # noqa: E402
from pynn.config import Config  # noqa: E402
from pynn.io import CSV_NAMES  # noqa: E402
from pynn.model import mlp  # noqa: E402
from pynn.optim import Adam  # noqa: E402
from pynn.report import Reporter  # noqa: E402
from pynn.tensor import Tensor  # noqa: E402
from pynn.train import fit  # noqa: E402

LAYERS = [(784, 256), (256, 128), (128, 10)]  # (C, OC) of 784-256-128-10
BATCHES = (64, 256)
EPOCH_ROWS, EPOCH_BATCH = 60000, 64

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
        t = best_time(lambda: lib.pynn_gemm(ta, tb, M, N, K, a.ptr, b.ptr, ffi.NULL,
                                             c.ptr, 0), repeat)
        ours = record(f"gemm_{label.replace(' ', '_')}_gflops", flops / t / 1e9, "GFLOP/s")
        line = f"  {label:18s} {ours:8.1f}"
        if torch:
            ta_ = to_torch(torch, a)
            tb_ = to_torch(torch, b)
            A = ta_.t() if ta else ta_
            Bm = tb_.t() if tb else tb_
            out = torch.empty(M, N)
            tt = best_time(lambda: torch.mm(A, Bm, out=out), repeat)
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
    model = mlp([784, *hidden, 10], "relu", rng)
    opt = Adam(model.parameters(), 1e-3, weight_decay=wd)
    cfg = Config(epochs=1, batch_size=batch, schedule="constant")
    rows = list(range(x.shape[0]))

    def epoch():
        pynn.set_threads(threads)
        history, _, _ = fit(model, opt, x, y, rows, None, None, cfg, _Quiet(), rng,
                            time.perf_counter() + 1e9)
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

    d = Config()  # the default run's network and batch: what ./run.sh trains
    name = "-".join(map(str, (784, *d.hidden, 10)))
    print(f"\nTraining epoch of the default run: {name}, batch {d.batch_size}, AdamW; "
          f"best of {repeat}")
    kw = dict(hidden=d.hidden, batch=d.batch_size, wd=d.weight_decay)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", action="store_true", help="also measure PyTorch (if importable)")
    p.add_argument("--threads", type=int, default=0, help="threads (0: all cores, at most 16)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("--only", choices=("gemm", "epoch", "parse"), help="one part only")
    args = p.parse_args(argv)

    torch = None
    if args.torch:
        try:
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
    print()
    for name, value, unit in results:
        print(f"bench {name} {value:.4g} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
