"""Paper preset: Bayes-optimal AUCs in the learnable-but-not-trivial band, reader accuracies
near the paper's 73% (junior) and 84% (senior).  Computed from the plan, no rendering."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from thyrofast.synth import cohort as C
from thyrofast.synth import features as F
from thyrofast.synth import readers as R


@pytest.fixture(scope="module")
def paper():
    return C.plan_cohort("paper", seed=0)


def test_paper_design(paper):
    assert len(paper) == 195
    assert sum(len(p.images) for p in paper) == 3537
    counts = {(c, s): 0 for c in F.CLASSES for s in ("train", "test")}
    for p in paper:
        counts[(p.label, p.split)] += 1
    assert [counts[(c, "train")] for c in F.CLASSES] == [50, 11, 100]
    assert [counts[(c, "test")] for c in F.CLASSES] == [10, 4, 20]
    assert len({p.patient_id for p in paper}) == 195
    # MMTN patients carry lymph-node images; every patient has both planes of a nodule
    views = {p.patient_id: {s.view for s in p.images} for p in paper}
    assert all({"transverse", "longitudinal"} <= v for v in views.values())
    mmtn_ln = np.mean(["lymph_node" in views[p.patient_id] for p in paper if p.label == "MMTN"])
    assert mmtn_ln > 0.7


def test_bayes_auc_on_paper_preset(paper):
    y = np.array([F.CLASSES.index(p.label) for p in paper])
    post = np.array([[p.bayes[c] for c in F.CLASSES] for p in paper])
    aucs = [roc_auc_score(y == k, post[:, k]) for k in range(3)]
    assert all(0.85 <= a <= 0.97 for a in aucs), aucs


def test_bayes_auc_population():
    """The same band for the population (large sample with the paper's prior), so the
    property is not an accident of one draw."""
    rng = np.random.default_rng(2024)
    labels = rng.choice(3, size=2500, p=[F.PAPER_PRIOR[c] for c in F.CLASSES])
    post = np.array([[q[c] for c in F.CLASSES]
                     for q in (F.posterior(F.sample_patient(rng, F.CLASSES[k])) for k in labels)])
    aucs = [roc_auc_score(labels == k, post[:, k]) for k in range(3)]
    assert all(0.87 <= a <= 0.965 for a in aucs), aucs
    # no single feature separates the classes: best single-feature AUC well below Bayes
    pats_rng = np.random.default_rng(5)
    pats = [F.sample_patient(pats_rng, F.CLASSES[k]) for k in labels]
    malignant = labels > 0
    single = {
        "tirads_points": [p.index_nodule.tirads_points for p in pats],
        "size": [p.index_nodule.size_mm for p in pats],
        "n_nodes": [len(p.nodes) for p in pats],
    }
    for name, v in single.items():
        assert roc_auc_score(malignant, v) < 0.9, name


def test_reader_accuracies_on_paper_preset(paper):
    rows = C.readers_rows(paper, 0, C.cohort_prior(paper))
    truth = {p.patient_id: p.label for p in paper}
    acc = {r: np.mean([x["call"] == truth[x["patient_id"]] for x in rows if x["reader"] == r]) for r in R.READERS}
    assert abs(acc["junior"] - 0.73) <= 0.05, acc
    assert abs(acc["senior"] - 0.84) <= 0.05, acc
    assert acc["senior"] > acc["junior"]


def test_readers_rows_format(paper):
    rows = C.readers_rows(paper[:20], 0)
    assert len(rows) == 40
    for x in rows:
        assert x["reader"] in ("junior", "senior")
        assert x["call"] in F.CLASSES
        scores = [x[f"score_{c}"] for c in F.CLASSES]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert abs(sum(scores) - 1.0) < 1e-4
        assert x["call"] == F.CLASSES[int(np.argmax(scores))]
        assert x["split"] in ("train", "test")


def test_noiseless_reader_matches_bayes():
    rng = np.random.default_rng(3)
    pats = [F.sample_patient(rng, c) for c in F.CLASSES for _ in range(30)]
    ideal = R.ReaderModel("ideal", eps=0.0, decision_noise=0.0)
    for p in pats:
        _, scores, _ = R.read_patient(p, ideal, np.random.default_rng(0))
        post = F.posterior(p)
        assert all(abs(scores[c] - post[c]) < 1e-9 for c in F.CLASSES)


def test_scaled_presets():
    counts, test, images = C.scaled_counts(C.PRESETS["paper"], 39)
    assert sum(counts.values()) == 39 and counts == {"BTN": 12, "NMTN": 3, "MMTN": 24}
    assert all(0 < test[c] < counts[c] for c in F.CLASSES)
    assert images == round(3537 * 39 / 195)
    counts, _, _ = C.scaled_counts(C.PRESETS["paper"], 3)
    assert all(v == 1 for v in counts.values())
    with pytest.raises(ValueError):
        C.scaled_counts(C.PRESETS["paper"], 2)
    with pytest.raises(ValueError):
        C.plan_cohort("nope")
    with pytest.raises(ValueError):
        C.plan_cohort("paper", seed=-1)
