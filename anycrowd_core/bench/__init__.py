"""Benchmarks: `python -m anycrowd_core.bench.attention` times the attention modes."""
