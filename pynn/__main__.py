"""python -m pynn [options]: the same command line as scripts/run.py (pynn.cli),
with data/ and the prediction files in the current folder."""
import sys

from .cli import main

sys.exit(main(prog="python -m pynn"))
