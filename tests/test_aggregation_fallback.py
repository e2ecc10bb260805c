"""The fitted patient rule degrades gracefully: with fewer images than it was fitted on, a patient gets
the mean log-probability (the bundle states the count).

Reproduces the failure a user met: the demo's rule, fitted on patients with ~18 images each, turned
one-image patients called MMTN at image level into BTN (225 of 258).  Here a rule is fitted on
simulated demo-like patients (18 images; MMTN patients are heterogeneous: nodes, nodules and normal
tissue, so their per-class minimum is low) and applied to one-image patients.
"""
from __future__ import annotations

import numpy as np
import pytest

from thyrofast.aggregation import MEAN_LOG_PROB, aggregate, check_spec, fit_pooled_logistic

K = 3


def _patient(label: int, n: int, rng) -> np.ndarray:
    out = []
    for _ in range(n):
        if label == 0:
            look, s = 0, 0.5
        elif label == 1:
            look, s = (1 if rng.random() < 0.5 else 0), 1.0
        else:
            look, s = (2 if rng.random() < 0.5 else 0), 2.0
        z = rng.normal(0, s, K)
        z[look] += 3
        out.append(z - np.log(np.exp(z).sum()))
    return np.array(out)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    lp, ids, ys = [], [], []
    for p in range(120):
        y = p % 3
        x = _patient(y, 18 if p % 10 else 17, rng)  # 17 or 18 images: the 10th percentile is 17
        lp.append(x)
        ids += [p] * len(x)
        ys += [y] * len(x)
    spec = fit_pooled_logistic(np.vstack(lp), ids, ys, seed=0)
    singles = []
    while len(singles) < 100:
        x = _patient(2, 1, rng)[0]
        if x.argmax() == 2:  # called MMTN at image level
            singles.append(np.exp(x))
    return spec, np.array(singles)


def test_the_rule_states_its_range(fitted):
    spec, _ = fitted
    assert spec["fallback"] == {"rule": MEAN_LOG_PROB, "below_images": 17}
    assert check_spec(spec)["fallback"]["below_images"] == 17
    for bad in ({"rule": "max", "below_images": 3}, {"rule": MEAN_LOG_PROB, "below_images": 0},
                {"rule": MEAN_LOG_PROB, "below_images": True}, [MEAN_LOG_PROB, 3]):
        with pytest.raises(ValueError, match="fallback"):
            check_spec({**spec, "fallback": bad})


def test_one_image_patients_are_not_flipped(fitted):
    spec, singles = fitted
    ids = list(range(len(singles)))
    old = {k: v for k, v in spec.items() if k != "fallback"}  # a rule as bundles stored it before
    flipped = [pid for pid, (p, _) in aggregate(singles, ids, old).items() if p.argmax() != 2]
    # the failure, reproduced: without the fallback nearly every one-image MMTN call is flipped
    assert len(flipped) >= 90, len(flipped)
    new = aggregate(singles, ids, spec)
    for i, (p, n) in new.items():  # with it: the mean log-probability, i.e. the image's own probabilities
        assert n == 1
        np.testing.assert_allclose(p, singles[i] / singles[i].sum(), rtol=1e-9)
        assert p.argmax() == 2


def test_patients_within_range_keep_the_fitted_rule(fitted):
    spec, _ = fitted
    rng = np.random.default_rng(5)
    probs = np.exp(np.vstack([_patient(k % 3, 18, rng) for k in range(6)]))
    ids = np.repeat(np.arange(6), 18).tolist()
    old = {k: v for k, v in spec.items() if k != "fallback"}
    a, b = aggregate(probs, ids, spec), aggregate(probs, ids, old)
    for pid in a:
        np.testing.assert_allclose(a[pid][0], b[pid][0])
    # 16 images (< 17): the fallback
    short = aggregate(probs[:16], [0] * 16, spec)[0][0]
    lp = np.log(probs[:16]).mean(0)
    np.testing.assert_allclose(short, np.exp(lp) / np.exp(lp).sum(), rtol=1e-9)
