"""Feature sampler: frequencies match the configured tables; the posterior is calibrated."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2

from thyrofast.synth import features as F

N = 2500


def _expected(feature: str, label: str) -> dict:
    w = F.SUSPICIOUS_APPEARANCE[label]
    sus = F.NODULE_CATEGORICAL[feature]["MMTN" if label == "MMTN" else "NMTN"]
    ben = F.NODULE_CATEGORICAL[feature]["benign"]
    return {k: w * sus[k] + (1 - w) * ben[k] for k in ben}


@pytest.fixture(scope="module")
def nodules():
    out = {}
    for i, label in enumerate(F.CLASSES):
        rng = np.random.default_rng(100 + i)
        out[label] = [F.sample_nodule(rng, label) for _ in range(N)]
    return out


def _chi2_p(counts: dict, probs: dict) -> float:
    n = sum(counts.values())
    stat, dof = 0.0, -1
    for k, p in probs.items():
        if p * n < 1e-9:
            assert counts.get(k, 0) == 0
            continue
        stat += (counts.get(k, 0) - n * p) ** 2 / (n * p)
        dof += 1
    return float(chi2.sf(stat, dof))


@pytest.mark.parametrize("label", F.CLASSES)
@pytest.mark.parametrize("feature", ["composition", "echogenicity", "shape", "margin", "foci"])
def test_categorical_frequencies(nodules, label, feature):
    probs = _expected(feature, label)
    values = [getattr(n, feature) for n in nodules[label]]
    if feature == "echogenicity":  # defined over non-cystic nodules
        values = [v for n, v in zip(nodules[label], values) if n.composition != "cystic"]
    counts = {k: values.count(k) for k in probs}
    assert sum(counts.values()) == len(values)  # no value outside the table
    assert _chi2_p(counts, probs) > 1e-3


@pytest.mark.parametrize("label", F.CLASSES)
def test_size_and_capsule_frequencies(nodules, label):
    med, sig = F.SIZE_LOGNORMAL[label]
    lo, hi = F.SIZE_RANGE_MM
    cdf = lambda x: 0.5 * math.erfc(-math.log(x / med) / sig / math.sqrt(2))  # noqa: E731
    p10 = (cdf(hi) - cdf(10.0)) / (cdf(hi) - cdf(lo))
    sizes = np.array([n.size_mm for n in nodules[label]])
    assert sizes.min() >= lo and sizes.max() <= hi
    assert abs((sizes >= 10).mean() - p10) < 4 * math.sqrt(p10 * (1 - p10) / N)
    non_ete = [n for n in nodules[label] if n.margin != "extrathyroidal_extension"]
    p = F.CAPSULE_CONTACT[label]
    obs = np.mean([n.capsule_contact for n in non_ete])
    assert abs(obs - p) < 4 * math.sqrt(p * (1 - p) / len(non_ete))


def test_literature_anchors():
    # Moon 2008 and the meta-analysis odds ratios are what the tables encode
    lit = F.LITERATURE_NODULE
    assert lit["shape"]["malignant"]["taller_than_wide"] == pytest.approx(0.40)
    assert lit["shape"]["BTN"]["taller_than_wide"] == pytest.approx(0.086)
    assert lit["foci"]["malignant"]["punctate"] == pytest.approx(0.44)
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(F.CAPSULE_CONTACT["MMTN"]) / odds(F.CAPSULE_CONTACT["NMTN"]) == pytest.approx(3.5)
    assert odds(F.MULTIFOCAL["MMTN"]) / odds(F.MULTIFOCAL["NMTN"]) == pytest.approx(2.0)
    ete = "extrathyroidal_extension"
    m = F.NODULE_CATEGORICAL["margin"]
    assert odds(m["MMTN"][ete]) / odds(m["NMTN"][ete]) == pytest.approx(2.0)
    for table in F.NODULE_CATEGORICAL.values():
        for dist in table.values():
            assert sum(dist.values()) == pytest.approx(1.0)
    assert all(row.source for row in F.TABLE)


def test_patient_level_frequencies():
    rng = np.random.default_rng(7)
    for label in F.CLASSES:
        pats = [F.sample_patient(rng, label) for _ in range(1500)]
        obs_multi = np.mean([p.multifocal for p in pats])
        p = F.MULTIFOCAL[label]
        assert abs(obs_multi - p) < 4 * math.sqrt(p * (1 - p) / 1500)
        counts = {k: sum(len(x.nodes) == k for x in pats) for k in F.NODE_COUNT[label]}
        assert sum(counts.values()) == 1500
        assert _chi2_p(counts, F.NODE_COUNT[label]) > 1e-3


def test_posterior_is_calibrated():
    """If the likelihood were wrong the posterior would not match observed class frequencies."""
    rng = np.random.default_rng(11)
    prior = F.PAPER_PRIOR
    labels = rng.choice(3, size=3000, p=[prior[c] for c in F.CLASSES])
    post = np.array([[q[c] for c in F.CLASSES]
                     for q in (F.posterior(F.sample_patient(rng, F.CLASSES[k])) for k in labels)])
    assert np.allclose(post.sum(1), 1.0)
    onehot = np.eye(3)[labels]
    for k in range(3):
        se = math.sqrt((post[:, k] * (1 - post[:, k])).sum())
        assert abs(post[:, k].sum() - onehot[:, k].sum()) < 4 * se + 1
        # reliability in 4 bins of predicted probability
        bins = np.digitize(post[:, k], [0.25, 0.5, 0.75])
        for b in range(4):
            sel = bins == b
            if sel.sum() < 60:
                continue
            pred, obs = post[sel, k].mean(), onehot[sel, k].mean()
            assert abs(pred - obs) < 4 * math.sqrt(max(pred * (1 - pred), 0.01) / sel.sum()) + 0.01


def test_posterior_prefers_the_true_class_for_typical_findings():
    benign = F.Patient("BTN", [F.Nodule("spongiform", "isoechoic", "wider_than_tall", "smooth", "comet_tail", 25.0,
                                        False)])
    malignant = F.Patient("MMTN", [F.Nodule("solid", "very_hypoechoic", "taller_than_wide", "lobulated_irregular",
                                            "punctate", 14.0, True)],
                          [F.LymphNode(7.0, True, True, True, True, True, True)])
    assert max(F.posterior(benign), key=F.posterior(benign).get) == "BTN"
    assert F.posterior(malignant)["MMTN"] > 0.95
    with pytest.raises(ValueError):
        F.sample_patient(np.random.default_rng(0), "benign")
