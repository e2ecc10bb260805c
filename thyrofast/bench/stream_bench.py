"""``thyrofast bench stream``: live cine through the C++ runtime's Stream (issue 26).

A 600-frame phantom cine (speckle frames, 768 x 1024 uint8) is pushed at 30 fps into a
``thyrofast.runtime.Stream`` (capacity 4, 2 workers with 1 inference thread each: 2 threads
in all) in front of the bundle's OpenVINO classifier.  Reported: the per-frame latency (push
-> result delivered) p50 / p99 / p99.9 / max, frames classified and dropped (drop-oldest
policy), and the queue's high-water mark, which never exceeds its capacity.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .preprocess_bench import synthetic_frame

FRAMES = 600
FPS = 30.0
CAPACITY = 4
WORKERS = 2


def cine(n: int = FRAMES, distinct: int = 8) -> np.ndarray:
    """``n`` frames: ``distinct`` speckle frames, each shown shifted a little (a slow probe sweep)."""
    base = [synthetic_frame(seed=i) for i in range(distinct)]
    return np.stack([np.roll(base[i % distinct], 3 * i, axis=1) for i in range(n)])


def run(bundle, *, frames: int = FRAMES, fps: float = FPS, precision: str = "fp32",
        capacity: int = CAPACITY, workers: int = WORKERS, smoothing: float = 0.3) -> dict[str, Any]:
    from .. import Classifier
    from .. import runtime as rt

    if not rt.available():
        raise RuntimeError(f"bench stream needs the C++ runtime: {rt.status()['runtime_reason']}")
    video = cine(frames)
    clf = Classifier.load(bundle, backend="openvino", precision=precision, threads=1, max_batch=1, runtime=True)
    try:
        with rt.Stream(clf, height=video.shape[1], width=video.shape[2], capacity=capacity, workers=workers,
                       smoothing=smoothing, keep_results=False) as s:
            for f in video[:3]:  # warm-up: first inferences compile kernels
                s.push(f)
                s.flush()
        with rt.Stream(clf, height=video.shape[1], width=video.shape[2], capacity=capacity, workers=workers,
                       smoothing=smoothing, keep_results=False) as s:
            period = 1.0 / fps
            t0 = time.perf_counter()
            for i, f in enumerate(video):
                delay = t0 + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                s.push(f)
            s.flush()
            wall = time.perf_counter() - t0
            st = s.stats()
    finally:
        clf.close()
    row = {"case": f"stream {frames} frames @ {fps:g} fps, {workers} workers x 1 thread, capacity {capacity}, "
                   f"openvino {precision}",
           "ours": {"median_ms": st["p50_ms"], "p99_ms": st["p99_ms"], "p99.9_ms": st["p99.9_ms"],
                    "max_ms": st["max_ms"], "rounds": int(st["processed"])},
           "frames": st["pushed"], "classified": st["processed"], "dropped": st["dropped"],
           "max_queue_depth": st["max_queue_depth"], "capacity": capacity, "wall_s": wall,
           "peer": "queue bound", "ratio": float(st["max_queue_depth"]) / capacity, "target": 1.0,
           "kind": "x_floor", "pass": st["max_queue_depth"] <= capacity}
    return {"rows": [row], "bundle": str(bundle)}


def format_stream(res: dict[str, Any]) -> str:
    lines = []
    for r in res["rows"]:
        o = r["ours"]
        lines.append(r["case"])
        lines.append(f"  latency ms: p50 {o['median_ms']:.2f}  p99 {o['p99_ms']:.2f}  p99.9 {o['p99.9_ms']:.2f}  "
                     f"max {o['max_ms']:.2f}")
        lines.append(f"  frames {r['frames']}  classified {r['classified']}  dropped {r['dropped']}  "
                     f"max queue {r['max_queue_depth']} / {r['capacity']}  ({r['wall_s']:.1f} s)")
    return "\n".join(lines)
