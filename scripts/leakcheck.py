#!/usr/bin/env python3
"""Leak checks of a small training run.

    python scripts/leakcheck.py                 # the workload (run it under LeakSanitizer)
    python scripts/leakcheck.py --verdict FILE... # read LeakSanitizer's reports of it
    python scripts/leakcheck.py --steady        # memory must not grow run after run

The workload trains on a small synthetic data set twice (both optimizers),
predicts, writes, and goes through the error paths of the loaders.
scripts/sanitize.sh runs it against the ASan build with detect_leaks=1; the
interpreter's own exit-time leaks (python is not instrumented and frees little
at exit) are in the report too, so ``--verdict`` fails only on leaks whose
allocation stack passes through pynn's C code (csrc/, pynn._kernels).

``--steady`` (normal build) repeats the run: after four warm-up runs, twenty
more must not grow the resident set by more than 2 MB (the weights, gradients and
Adam state of one 784-256-128-10 model are 3.7 MB), so no buffer, cffi object
or model is kept from one run to the next.
"""
import gc
import io
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def package_dir(module):
    """The folder a package was loaded from, as named (its files may be symlinks)."""
    return os.path.dirname(os.path.abspath(module.__file__))


def loaded_pynn():
    """pynn, imported before anything that puts the checkout first on
    sys.path (bad_inputs does): under scripts/sanitize.sh, PYTHONPATH names
    the sanitizer build, and that is the one the leak check must run. Exits
    with an error when PYNN_SANITIZED names another than the one loaded."""
    import pynn

    want = os.environ.get("PYNN_SANITIZED")
    got = package_dir(pynn)
    if want and got != os.path.abspath(want):
        sys.exit(f"leakcheck: loaded pynn from {got}, not the sanitizer build {want}")
    return pynn


def workload(folder, runs=2):
    pynn = loaded_pynn()  # first: bad_inputs puts the checkout's pynn first on sys.path
    from bad_inputs import synthetic

    from pynn.report import Reporter

    data = synthetic(Path(folder) / "data")
    for i in range(runs):
        out = Path(folder) / f"out{i}"
        out.mkdir(exist_ok=True)
        # an MLP with adam, and a CNN with sgd (conv, fused batch norm + pool,
        # augmenting gather, label smoothing); each saves and loads itself
        arch = ("f256,f128", "c4,p,c8,p,f16")[i % 2]
        cfg = pynn.Config(data_dir=str(data), out_dir=str(out), arch=arch, epochs=2,
                          batch_size=8, threads=2, runs_dir="", augment="on",
                          label_smoothing=0.1, optimizer=("adam", "sgd")[i % 2],
                          save=str(out / "model.bin"))
        pynn.run(cfg, reporter=Reporter(io.StringIO()))
        cfg = pynn.Config(data_dir=str(data), out_dir=str(out), runs_dir="", threads=2,
                          load=str(out / "model.bin"))
        pynn.run(cfg, reporter=Reporter(io.StringIO()))
    for bad in (b"1,2\n3\n", b"", b"x\n", b"\x00" * 100, b"," * 5000 + b"\n1\n" * 100):
        path = Path(folder) / "bad.csv"
        path.write_bytes(bad)
        for load in (pynn.load_vectors, pynn.load_labels):
            try:
                load(path)
            except pynn.PynnError:
                pass


def rss_kb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def steady(limit_kb=2048):
    with tempfile.TemporaryDirectory() as tmp:
        workload(tmp, runs=4)
        gc.collect()
        before = rss_kb()
        for _ in range(10):  # 20 runs, both optimizers
            workload(tmp, runs=2)
        gc.collect()
        after = rss_kb()
    print(f"steady: resident set {before} KB after 4 warm-up runs, {after} KB after 20 more "
          f"({after - before:+d} KB; one model with gradients and Adam state is 3700 KB)")
    return 0 if after - before <= limit_kb else 1


def verdict(paths):
    """0 when no leak record of the LeakSanitizer reports involves pynn's C code."""
    records, ours = 0, []
    for path in paths:
        text = Path(path).read_text(errors="replace")
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text):
            if not re.match(r"(Direct|Indirect) leak of ", block):
                continue
            records += 1
            if re.search(r"_kernels|/csrc/|\bpynn_|\bdense_|\bgemm", block):
                ours.append(block)
    print(f"leak check: {len(paths)} report(s), {records} leak record(s) at exit, "
          f"{len(ours)} with pynn's C code on the stack")
    for block in ours[:5]:
        print(block)
    return 1 if ours else 0


def main(argv):
    if argv[:1] == ["--verdict"]:
        paths = [p for p in argv[1:] if Path(p).exists()]
        if not paths:
            print("leak check: no LeakSanitizer report was written (no leaks at all)")
            return 0
        return verdict(paths)
    if argv[:1] == ["--steady"]:
        return steady()
    if argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workload(tmp)
    import pynn
    print(f"leak check workload done (pynn from {package_dir(pynn)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
