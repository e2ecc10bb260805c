"""Image -> patient aggregation rules (thyrofast.aggregation) and their use by bundles."""
from __future__ import annotations

import json

import numpy as np
import pytest

from thyrofast import aggregation as A


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _cohort(n_patients: int, seed: int):
    """Patients whose class shows only in one "spike" image among many bland ones.

    Class 0: all images bland.  Class 1: bland but every image slightly shifted
    to class 1.  Class 2: bland plus one image that is confidently class 2 (a
    metastatic lymph node among nodule views).  The mean log-probability
    dilutes the spike as images pile up; a rule that sees the max does not.
    """
    rng = np.random.default_rng(seed)
    probs, ids, labels = [], [], []
    for p in range(n_patients):
        y = p % 3
        n = int(rng.integers(6, 20))
        z = rng.normal(0.0, 0.6, (n, 3))
        if y == 1:
            z[:, 1] += 0.5
        if y == 2:
            z[rng.integers(n), 2] += 4.0
        probs.append(_softmax(z))
        ids += [f"p{seed}-{p}"] * n
        labels += [y] * n
    return np.vstack(probs), ids, np.array(labels)


def _macro_auc(spec, probs, ids, labels):
    from thyrofast.metrics import roc_auc

    agg = A.aggregate(probs, ids, spec)
    first = {pid: labels[ids.index(pid)] for pid in agg}
    P = np.array([agg[p][0] for p in agg])
    y = np.array([first[p] for p in agg])
    return float(np.mean([roc_auc(y == c, P[:, c]) for c in range(3)]))


def test_mean_log_prob_is_the_normalized_geometric_mean():
    rng = np.random.default_rng(0)
    p = _softmax(rng.normal(size=(7, 3)))
    ids = ["a", "b", "a", "a", "b", "c", "a"]
    out = A.aggregate(p, ids)
    assert list(out) == ["a", "b", "c"]  # first-seen order
    for pid in out:
        rows = p[[i for i, q in enumerate(ids) if q == pid]]
        g = np.exp(np.log(rows).mean(axis=0))
        np.testing.assert_allclose(out[pid][0], g / g.sum(), rtol=1e-12)
        assert out[pid][1] == len(rows)
    np.testing.assert_allclose(out["c"][0], p[5], rtol=1e-12)  # one image keeps its probabilities


def test_pooled_logistic_learns_what_the_mean_cannot():
    probs, ids, labels = _cohort(150, seed=1)
    spec = A.fit_pooled_logistic(np.log(probs), ids, labels)
    assert spec["method"] == A.POOLED_LOGISTIC and spec["l2"] in A.L2_GRID
    assert spec["features"][:3] == ["mean_BTN", "mean_NMTN", "mean_MMTN"]
    test = _cohort(150, seed=2)  # held-out patients
    pooled = _macro_auc(spec, *test)
    mean = _macro_auc(A.MEAN_LOG_PROB, *test)
    assert pooled > mean + 0.03, (pooled, mean)
    assert pooled > 0.9
    # plain JSON numbers: the spec survives the bundle card
    again = json.loads(json.dumps(spec))
    a, b = A.aggregate(test[0], test[1], spec), A.aggregate(test[0], test[1], again)
    for pid in a:
        np.testing.assert_array_equal(a[pid][0], b[pid][0])


def test_pooled_is_invariant_to_image_order_and_rows_sum_to_one():
    probs, ids, labels = _cohort(60, seed=3)
    spec = A.fit_pooled_logistic(np.log(probs), ids, labels, l2=1.0)
    assert spec["cv_log_loss"] is None  # l2 given: no cross-validation
    perm = np.random.default_rng(0).permutation(len(ids))
    a = A.aggregate(probs, ids, spec)
    b = A.aggregate(probs[perm], [ids[i] for i in perm], spec)
    for pid in a:
        np.testing.assert_allclose(a[pid][0], b[pid][0], rtol=1e-12)
        assert a[pid][0].sum() == pytest.approx(1.0)


def test_fit_is_deterministic():
    probs, ids, labels = _cohort(60, seed=4)
    assert A.fit_pooled_logistic(np.log(probs), ids, labels) == A.fit_pooled_logistic(np.log(probs), ids, labels)


def test_fit_needs_every_class():
    probs, ids, labels = _cohort(30, seed=5)
    keep = labels != 1
    with pytest.raises(ValueError, match="every class"):
        A.fit_pooled_logistic(np.log(probs[keep]), [i for i, k in zip(ids, keep) if k], labels[keep])


@pytest.mark.parametrize("bad", [
    "max_prob",
    {"method": "pooled_logistic"},
    {"method": "pooled_logistic", "coef": [[0.0] * 15] * 3, "intercept": [0, 0, 0], "mean": [0.0] * 15,
     "scale": [0.0] * 15},
    {"method": "pooled_logistic", "coef": [[float("nan")] * 15] * 3, "intercept": [0, 0, 0],
     "mean": [0.0] * 15, "scale": [1.0] * 15},
    {"method": "pooled_logistic", "coef": [[0.0] * 14] * 3, "intercept": [0, 0, 0], "mean": [0.0] * 14,
     "scale": [1.0] * 14},
])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError):
        A.check_spec(bad)
    with pytest.raises(ValueError):
        A.aggregate(np.full((2, 3), 1 / 3), ["a", "a"], bad)


def test_shape_errors():
    with pytest.raises(ValueError, match="patient ids"):
        A.aggregate(np.full((2, 3), 1 / 3), ["a"])


def test_bundle_carries_and_checks_the_rule(bundle_dir, tmp_path):
    import shutil

    from thyrofast.bundle import Bundle
    from thyrofast.errors import InputError

    probs, ids, labels = _cohort(60, seed=6)
    spec = A.fit_pooled_logistic(np.log(probs), ids, labels, l2=3.0)
    b = Bundle.load(shutil.copytree(bundle_dir, tmp_path / "b"))
    b.update(aggregation=spec)
    again = Bundle.load(tmp_path / "b")
    assert again.aggregation["coef"] == spec["coef"]
    from thyrofast.classifier import aggregate_patients

    got = aggregate_patients(probs, ids, again.aggregation)
    ref = A.aggregate(probs, ids, spec)
    assert all(np.array_equal(got[p][0], ref[p][0]) for p in ref)
    card = json.loads((tmp_path / "b" / "thyrofast.json").read_text())
    card["aggregation"] = {"method": "pooled_logistic", "coef": [[1.0]]}
    (tmp_path / "b" / "thyrofast.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="aggregation"):
        Bundle.load(tmp_path / "b")
    assert again.read_options == {"crop": "auto"}  # bundles without a "read" field: thyrofast.read's default
    card["aggregation"] = spec
    card["read"] = {"crop": "middle"}
    (tmp_path / "b" / "thyrofast.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="read"):
        Bundle.load(tmp_path / "b")


def test_too_few_patients_to_cross_validate_falls_back_to_the_strongest_penalty():
    probs, ids, labels = _cohort(3, seed=7)  # one patient per class: no fold can be scored
    spec = A.fit_pooled_logistic(np.log(probs), ids, labels)
    assert spec["l2"] == max(A.L2_GRID) and spec["cv_log_loss"] is None
