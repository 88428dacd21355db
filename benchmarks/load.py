"""Load benchmark for POST /predict: the service (its defaults, then without batching, then
with LiteRT's float weights, then with the SavedModel runtime) beside a tutorial-style app
and the HTTP floor (an app that only reads the upload), and the service without each of its
parts (benchmarks/ablation.py) or without its per-worker sockets, two rounds of the whole
comparison; then the model alone in-process, and (--sweep) worker and thread counts.

The phases and how they load their servers: benchmarks/phases.py; the servers themselves:
harness/server.py; the Markdown: benchmarks/report.py; the model alone: benchmarks/model_alone.py.

Run with `make bench`; it writes docs/benchmarks.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from benchmarks import phases
from benchmarks.report import write
from harness import ROOT


def main() -> None:
    """Parse options, run every phase, write the JSON and Markdown reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load level")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare worker, thread and TensorFlow-thread counts",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = {key: value for key, value in os.environ.items() if key.startswith("FMNIST_")}
    results = phases.run(args.seconds, args.model_dir, settings, args.sweep)
    write(results, args.output)


if __name__ == "__main__":
    main()
