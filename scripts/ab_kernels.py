#!/usr/bin/env python3
"""Two builds of the kernels side by side, call by call, in one process.

    python scripts/ab_kernels.py OLD NEW [--threads N] [--rounds R] [--shape H,W,C,OC]

OLD and NEW are builds of pynn's extension: a `_kernels*.so` file, or a
folder with one in it or in its `pynn/` (a checkout, or what
scripts/build_variant.sh made). Both are loaded into this process (each
resolves its own symbols), and each conv layer of the cnn presets
(scripts/bench.py: CONV_PRESETS, preset_networks; or --shape) is timed in both:
forward (conv2d_forward), input gradient (the forward of dout with the
turned kernel, as conv2d_backward computes it) and weight gradient
(conv2d_backward, dinp NULL). The two builds take turns call by call,
the order swapped every round, so that a host whose speed drifts from
minute to minute (the shared machines here: 1.5x between runs of a few
seconds apart) slows both alike; separate runs in turns cannot tell a
5 % change from that drift. Prints, per kernel, both medians and minima,
NEW/OLD at the median, in how many rounds NEW was faster, and whether the
two builds' outputs are the same bits (the same random inputs in both).
Nothing here asserts anything.

    PYTHON=.venv/bin/python scripts/build_variant.sh /tmp/old   # before a change
    .venv/bin/python setup.py -q build_ext --inplace             # after it
    .venv/bin/python scripts/ab_kernels.py /tmp/old . --threads 2
"""
import argparse
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path

from bench import CONV_BATCH, cpu_name, fill_uniform, network_convs, preset_networks


def extension(path):
    """the _kernels*.so of a build: path itself, or the one in path or path/pynn"""
    p = Path(path)
    if p.is_file():
        return p
    for folder in (p, p / "pynn"):
        found = sorted(folder.glob("_kernels*.so"))
        if found:
            return found[0]
    sys.exit(f"error: {path}: no _kernels*.so there or in its pynn/")


def load(path, tag):
    """the extension at path as module TAG._kernels (its init function is
    PyInit__kernels, so the last part of the name must stay _kernels)"""
    spec = importlib.util.spec_from_file_location(f"{tag}._kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_floats(ffi, n, seed):
    """n uniform(-1, 1) floats of this build's ffi"""
    buf = ffi.new("float[]", n)
    fill_uniform(ffi, buf, n, random.Random(seed))
    return buf


def kernels(module, B, H, W, C, OC, first, block=False):
    """{name: fn} of one conv layer in one build (each keeps its inputs
    alive), and the output buffers; with ``block``, also the first conv
    block fused (fused.c: conv_batchnorm_relu_maxpool, training mode)"""
    ffi, lib, k, null = module.ffi, module.lib, 3, module.ffi.NULL
    inp, weight = random_floats(ffi, B * H * W * C, 1), random_floats(ffi, OC * 9 * C, 2)
    dout, wflip = random_floats(ffi, B * H * W * OC, 3), random_floats(ffi, C * 9 * OC, 4)
    out, dinp = ffi.new("float[]", B * H * W * OC), ffi.new("float[]", B * H * W * C)
    dweight = ffi.new("float[]", OC * 9 * C)
    fns = {"fwd": lambda: lib.conv2d_forward(out, inp, weight, null, B, H, W, C, OC, k),
           "dw": lambda: lib.conv2d_backward(null, dweight, null, dout, inp, weight,
                                             B, H, W, C, OC, k)}
    if not first:
        fns["dinp"] = lambda: lib.conv2d_forward(dinp, dout, wflip, null, B, H, W, OC, C, k)
    outs = {"fwd": out, "dw": dweight, "dinp": dinp}
    if block:
        pooled, gamma, beta = ffi.new("float[]", B * H * W * OC // 4), random_floats(ffi, OC, 5), \
            random_floats(ffi, OC, 6)
        mean, invstd, r_mean = (ffi.new("float[]", OC) for _ in range(3))
        r_var = random_floats(ffi, OC, 7)
        dgamma, dbeta, dw_block = ffi.new("float[]", OC), ffi.new("float[]", OC), \
            ffi.new("float[]", OC * 9)
        n_pooled = B * H * W * OC // 4  # the windows' routes (fused.c)
        way, zway = ffi.new("float[]", n_pooled), ffi.new("float[]", n_pooled)
        fns["block fwd"] = lambda: lib.conv_batchnorm_relu_maxpool_forward(
            pooled, way, zway, mean, invstd, r_mean, r_var, inp, weight, gamma, beta, B, H, W,
            OC, k, 0.1, 1e-5, 1)
        fns["block bwd"] = lambda: lib.conv_batchnorm_relu_maxpool_backward(
            dw_block, dgamma, dbeta, dout, way, zway, inp, weight, mean, invstd, gamma,
            B, H, W, OC, k)
        outs.update({"block fwd": pooled, "block bwd": dw_block})
    return fns, outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--shape", action="append", default=[],
                    help="H,W,C,OC of a 3x3 conv layer (again for more; default: the presets')")
    args = ap.parse_args(argv)
    paths = [extension(args.old), extension(args.new)]
    builds = [load(p, tag) for p, tag in zip(paths, ("old", "new"))]
    for m in builds:
        m.lib.pynn_set_threads(args.threads)
    if args.shape:
        layers = [(s, (*map(int, s.split(",")), 3), False) for s in args.shape]
    else:
        layers = network_convs(preset_networks())
    B = CONV_BATCH
    print(f"CPU: {cpu_name()}")
    print(f"old {paths[0]}\nnew {paths[1]}")
    print(f"batch {B}, {args.threads} threads, {args.rounds} rounds, the builds in turns "
          f"call by call (ms)")
    for names, (H, W, C, OC, k), first in layers:
        if k != 3:
            continue
        block = first and all(hasattr(m.lib, "conv_batchnorm_relu_maxpool_forward")
                              for m in builds)
        per = [kernels(m, B, H, W, C, OC, first, block) for m in builds]
        for name in per[0][0]:
            times = ([], [])
            for r in range(args.rounds):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    fn = per[i][0][name]
                    fn()  # warm: the work buffers, the caches
                    t0 = time.perf_counter()
                    fn()
                    times[i].append(time.perf_counter() - t0)
            old, new = times
            same = (bytes(builds[0].ffi.buffer(per[0][1][name]))
                    == bytes(builds[1].ffi.buffer(per[1][1][name])))
            wins = sum(b < a for a, b in zip(old, new))
            med_old, med_new = statistics.median(old), statistics.median(new)
            print(f"  {names:21s} {H}x{W}x{C}->{OC} {name:9s}  old {med_old * 1e3:7.2f} "
                  f"(min {min(old) * 1e3:6.2f})  new {med_new * 1e3:7.2f} "
                  f"(min {min(new) * 1e3:6.2f})  new/old {med_new / med_old:.3f}  "
                  f"new faster {wins}/{args.rounds}  {'same bits' if same else 'BITS DIFFER'}",
                  flush=True)
        del per


if __name__ == "__main__":
    main()
