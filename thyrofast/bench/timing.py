"""Interleaved timing: contenders take turns each round, so drifting machine
load hits all of them alike and their ratio stays meaningful."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved(contenders: dict[str, Callable[[], object]], *, rounds: int = 50, warmup: int = 3,
                inner: int = 1) -> dict[str, np.ndarray]:
    """Seconds per call for each contender, one sample per round."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples = {name: np.empty(rounds) for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name][r] = (time.perf_counter() - t0) / inner
    return samples


def summarize(s: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(s) * 1e3), "p99_ms": float(np.percentile(s, 99) * 1e3),
            "min_ms": float(s.min() * 1e3), "rounds": int(s.size)}


def copy_bandwidth(nbytes: int = 64 << 20, rounds: int = 10) -> float:
    """Single-thread copy bandwidth in bytes/s, counting bytes read + written."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    best = np.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best
