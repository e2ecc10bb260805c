"""SRAD far outside the usual y = pixel / max_value in [0, 1].

J = exp(y) then spans up to e^88; the core's q^2 works on J^2-sized terms,
so it shifts y (SRAD is scale-invariant in J) and must still match the
float64 reference, including the reference's clip of y at 88.
"""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast

from _reference import preprocess_ref


@pytest.mark.parametrize("max_value", [2.0, 3.0, 5.0, 20.0])
@pytest.mark.parametrize("normalize", ["none", "percentile"])
def test_srad_matches_reference_for_large_y(max_value, normalize):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(2, 60, 80), dtype=np.uint8)
    params = dict(size=(30, 40), denoise="srad", max_value=max_value)
    got = thyrofast.preprocess(frames, normalize=normalize, **params)
    with np.errstate(all="ignore"):  # the float64 reference itself is fine; NumPy may flag inf/inf
        want = preprocess_ref(frames, normalize_mode=normalize, **params)
    assert np.isfinite(want).all()
    scale = max(1.0, float(np.abs(want).max()))  # "none" keeps log J: values up to ~88
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-4 * scale, f"max abs error {err:.3g} for max_value={max_value}, {normalize}"
