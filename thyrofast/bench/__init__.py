"""Benchmarks behind ``thyrofast bench``: ours against peers, as ratios."""
from .preprocess_bench import bench_preprocess_cpu, bench_preprocess_cuda, format_rows

__all__ = ["bench_preprocess_cpu", "bench_preprocess_cuda", "format_rows"]
