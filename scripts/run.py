#!/usr/bin/env python3
"""PV021 entry point: train on data/, write train_predictions.csv and
test_predictions.csv. Every option's default comes from pynn.config.Config.

    python scripts/run.py [--model cnn] [--arch c32,p,c64,p,f256] [--epochs 15] [...]

Defaults come from a preset (--model, pynn/config.py: PRESETS); any option
given explicitly wins over its value. The options are pynn.cli's (the same
as ``python -m pynn``); this door adds the repository's folders as the
defaults and makes the course CSVs from the shipped IDX files when missing.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    try:
        from pynn.cli import main as cli_main
    except ModuleNotFoundError as e:  # pynn or its built kernels missing: not a bug
        if e.name not in ("pynn", "pynn._kernels", "_cffi_backend", "cffi"):
            raise
        print(f"error: pynn is not installed ({e}); run ./run.sh", file=sys.stderr)
        return 2
    import prepare_data  # the IDX files shipped in data/ -> course CSVs

    return cli_main(argv, root=ROOT, prepare=prepare_data.prepare, prog="run.py")


if __name__ == "__main__":
    sys.exit(main())
