"""Per-call timings of the core and its peers (pytest-benchmark tables), and
the ratio targets checked on interleaved timings of the same run."""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast
from thyrofast.bench import peers
from thyrofast.bench.preprocess_bench import _frame, bench_preprocess_cpu

FRAME = _frame()


@pytest.mark.parametrize("denoise", ["none", "median5", "srad"])
def test_ours_single_frame(benchmark, denoise):
    pre = thyrofast.Preprocessor(size=(224, 224), denoise=denoise, threads=1)
    out = np.empty((1, 1, 224, 224), np.float32)
    benchmark(pre, FRAME, out=out)


def test_peer_opencv_median5(benchmark):
    pytest.importorskip("cv2").setNumThreads(1)
    benchmark(peers.cv2_area_median5_percentile, FRAME)


def test_peer_numpy_srad(benchmark):
    pytest.importorskip("cv2").setNumThreads(1)
    benchmark(peers.cv2_area_numpy_srad_percentile, FRAME)


def test_ratio_targets():
    res = bench_preprocess_cpu(rounds=60)
    failed = [r["case"] for r in res["rows"] if r.get("pass") is False]
    assert not failed, f"missed targets: {failed}"
