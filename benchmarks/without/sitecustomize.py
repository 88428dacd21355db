"""Started with `benchmarks/without/` on PYTHONPATH: take out what BENCH_WITHOUT names."""

from benchmarks.ablation import apply

apply()
