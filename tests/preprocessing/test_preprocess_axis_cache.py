"""Resize tables are cached per calling thread and the uint8 area pass has a
SIMD path: geometry changes between calls, concurrent callers and the area
pass's edge cases (no whole rows, column tails, > 257 rows per output) must
all give the float64 reference's result."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import thyrofast

from _reference import preprocess_ref, speckle_frames

TOL = 1e-4  # float32 output vs the float64 reference, as in test_preprocess_reference.py

# (H, W, out_h, out_w): same output size from different inputs, shrink < 2x
# (no whole rows in a box), widths that are not a multiple of the 64-column
# block, and boxes of more than 257 rows (the uint16 row sums' limit)
GEOMETRIES = [
    (240, 320, 64, 48),
    (300, 200, 64, 48),
    (100, 130, 64, 48),
    (97, 83, 64, 48),
    (1100, 260, 4, 3),
    (768, 1024, 7, 9),
]


def _run(frames, oh, ow, **kw):
    return thyrofast.preprocess(frames, size=(oh, ow), denoise="none", **kw)


def _frames(h, w, seed):
    return speckle_frames(np.random.default_rng(seed), 1, h, w)


def test_geometry_changes_between_calls():
    frames = {g: _frames(g[0], g[1], i) for i, g in enumerate(GEOMETRIES)}
    first = {}
    # each geometry after every other one, twice: a stale table would show
    for _ in range(2):
        for g in GEOMETRIES + GEOMETRIES[::-1]:
            got = _run(frames[g], g[2], g[3])
            if g not in first:
                first[g] = got
                want = preprocess_ref(frames[g], size=(g[2], g[3]), denoise="none")
                err = np.abs(got.astype(np.float64) - want).max()
                assert err <= TOL, f"{g}: max abs error {err:.3g}"
            else:
                np.testing.assert_array_equal(got, first[g])


@pytest.mark.parametrize("roi", [(0, 0, 320, 240), (13, 7, 251, 199), (1, 2, 64, 61)])
def test_roi_geometries(roi):
    frames = _frames(240, 320, 3)
    got = _run(frames, 64, 48, roi=roi)
    want = preprocess_ref(frames, size=(64, 48), denoise="none", roi=roi)
    assert np.abs(got.astype(np.float64) - want).max() <= TOL


def test_concurrent_callers_with_different_geometries():
    cases = GEOMETRIES[:4]
    frames = {g: _frames(g[0], g[1], 10 + i) for i, g in enumerate(cases)}
    expected = {g: _run(frames[g], g[2], g[3], threads=1) for g in cases}
    mismatches = []

    def worker(order):
        for _ in range(15):
            for g in order:
                if not np.array_equal(_run(frames[g], g[2], g[3], threads=1), expected[g]):
                    mismatches.append(g)

    threads = [threading.Thread(target=worker, args=(cases[k:] + cases[:k],)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []
