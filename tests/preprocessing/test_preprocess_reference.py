"""The C++ core against the float64 NumPy reference (tests/_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast

from _reference import preprocess_ref, speckle_frames

# dtype tolerance table: max abs error of the core's output vs the float64 reference
TOL = {"float32": 1e-4, "float16": 2e-3}

# (H, W, out_h, out_w): 1x1, odd sizes, growing, shrinking, mixed, a large device frame
SIZES = [
    (1, 1, 1, 1),
    (1, 1, 5, 3),
    (7, 5, 3, 9),
    (13, 17, 13, 17),
    (31, 45, 64, 64),
    (100, 90, 224, 160),
    (240, 320, 224, 224),
    (333, 257, 97, 113),
    (600, 800, 224, 224),
    (1024, 1280, 224, 224),
]
DENOISE = ["none", "median3", "median5", "srad"]
NORMALIZE = ["percentile", "minmax", "zscore", "none"]


def _case_id(val):
    return "x".join(map(str, val)) if isinstance(val, tuple) else str(val)


def _check(frames, **params):
    dtype = params.get("dtype", "float32")
    got = thyrofast.preprocess(frames, **params)
    ref_params = dict(params)
    ref_params["normalize_mode"] = ref_params.pop("normalize", "percentile")
    want = preprocess_ref(frames, **ref_params)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    assert got.flags.c_contiguous
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= TOL[dtype], f"max abs error {err:.3g} > {TOL[dtype]} for {params}"


@pytest.mark.parametrize("size", SIZES, ids=_case_id)
@pytest.mark.parametrize("denoise", DENOISE)
def test_sizes_and_denoise(size, denoise):
    h, w, oh, ow = size
    rng = np.random.default_rng(hash((size, denoise)) % 2**32)
    frames = speckle_frames(rng, 2, h, w)
    for normalize in NORMALIZE:
        _check(frames, size=(oh, ow), denoise=denoise, normalize=normalize)


@pytest.mark.parametrize("dtype_in", [np.uint8, np.uint16])
@pytest.mark.parametrize("color", ["gray", "rgb", "bgr"])
@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_dtypes_colors(dtype_in, color, out_dtype):
    rng = np.random.default_rng(7)
    frames = speckle_frames(rng, 3, 120, 160, color=color != "gray", dtype=dtype_in)
    order = "bgr" if color == "bgr" else "rgb"
    for denoise in DENOISE:
        _check(frames, size=(64, 80), denoise=denoise, channel_order=order, dtype=out_dtype, channels=3)


def test_single_frame_shapes_match_batch():
    rng = np.random.default_rng(3)
    gray = speckle_frames(rng, 1, 50, 60)[0]
    color = speckle_frames(rng, 1, 50, 60, color=True)[0]
    for frame in (gray, color):
        single = thyrofast.preprocess(frame, size=(32, 32))
        batch = thyrofast.preprocess(frame[None], size=(32, 32))
        assert single.shape == (1, 1, 32, 32)
        np.testing.assert_array_equal(single, batch)
        _check(frame, size=(32, 32))


@pytest.mark.parametrize("roi", [(0, 0, 40, 30), (20, 10, 40, 30), (59, 49, 1, 1), (0, 49, 60, 1), (59, 0, 1, 50)],
                         ids=_case_id)
def test_roi_at_edges(roi):
    rng = np.random.default_rng(11)
    frames = speckle_frames(rng, 2, 50, 60, color=True)
    for denoise in ("none", "srad"):
        _check(frames, roi=roi, size=(24, 24), denoise=denoise)
    x, y, w, h = roi
    cropped = np.ascontiguousarray(frames[:, y:y + h, x:x + w])
    np.testing.assert_array_equal(thyrofast.preprocess(frames, roi=roi, size=(24, 24)),
                                  thyrofast.preprocess(cropped, size=(24, 24)))


def test_parameters_are_honoured():
    rng = np.random.default_rng(5)
    frames = speckle_frames(rng, 2, 90, 70, dtype=np.uint16)
    _check(frames, size=(48, 40), max_value=4095.0, normalize="none", denoise="none")
    _check(frames, size=(48, 40), srad_iterations=3, srad_lambda=0.9, srad_rho=0.3)
    _check(frames, size=(48, 40), percentiles=(0.0, 100.0))
    _check(frames, size=(48, 40), percentiles=(5.0, 60.0), mean=0.5, std=0.25)
    _check(frames, size=(48, 40), srad_iterations=0)
