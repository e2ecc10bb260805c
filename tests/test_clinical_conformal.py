"""Conformal prediction sets (thyrofast.conformal): identical to crepes' Mondrian sets, and the coverage
promise holds on a fresh phantom cohort over 20 random calibration/test splits."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from thyrofast.conformal import fit_mondrian, prediction_sets, refer_flags, set_coverage

CLASSES = ("BTN", "NMTN", "MMTN")


def _crepes_sets(cal_p, cal_y, test_p, alpha):
    """crepes' class-conditional sets: one Mondrian category per true class, non-smoothed p-values."""
    crepes = pytest.importorskip("crepes")
    cc = crepes.ConformalClassifier()
    cc.fit(1.0 - cal_p[np.arange(len(cal_y)), cal_y], bins=cal_y)
    keep = np.zeros(test_p.shape, bool)
    for k in range(test_p.shape[1]):
        keep[:, k] = cc.predict_set(1.0 - test_p[:, k], bins=np.full(len(test_p), k), confidence=1 - alpha,
                                    smoothing=False).astype(bool).ravel()
    return [[c for c, m in zip(CLASSES, row) if m] for row in keep]


def _dirichlet(rng, n, sharp=2.0):
    y = rng.integers(0, 3, n)
    a = np.ones((n, 3))
    a[np.arange(n), y] += sharp
    return rng.dirichlet(a[0]) if n == 0 else np.stack([rng.dirichlet(r) for r in a]), y


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 1 / 3])
@pytest.mark.parametrize("n_cal", [5, 29, 30, 200])
def test_sets_equal_crepes(alpha, n_cal):
    rng = np.random.default_rng(int(alpha * 1000) + n_cal)
    cal_p, cal_y = _dirichlet(rng, n_cal)
    test_p, _ = _dirichlet(rng, 300)
    test_p[:20] = cal_p[rng.integers(0, n_cal, 20)]  # ties with calibration scores
    ours = prediction_sets(test_p, fit_mondrian(cal_p, cal_y, CLASSES, alpha), CLASSES)
    assert ours == _crepes_sets(cal_p, cal_y, test_p, alpha)


def test_too_few_calibration_cases_never_rule_a_class_out():
    p = np.array([[0.9, 0.05, 0.05]] * 9)
    cal = fit_mondrian(p, np.zeros(9, int), CLASSES, 0.1)  # 9 cases: 1/(9+1) >= 0.1
    assert cal["thresholds"]["BTN"] is None and cal["thresholds"]["NMTN"] is None
    assert prediction_sets([[0.0, 0.0, 1.0]], cal, CLASSES) == [["BTN", "NMTN", "MMTN"]]
    assert refer_flags([["BTN"], ["BTN", "MMTN"], []]) == [False, True, True]


# ---- coverage on a fresh phantom cohort, through the fixture model
SPLITS, ALPHA = 20, 0.1


def _fresh_patient_probs(tmp_path_factory):
    """Patient probabilities (bundle's aggregation) of a cohort the fixture model never saw: 150 patients,
    4 images each, lesions fainter and smaller than in training so the model errs on some."""
    from thyrofast import Classifier
    from thyrofast.aggregation import aggregate

    import _train_fixture as TF

    bundle, _ = TF.load().trained_bundle(tmp_path_factory)
    rng = np.random.default_rng(2027)
    frames, pids, labels = [], [], []
    for i in range(150):
        y = i % 3
        r = rng.uniform(5, 9)
        cy, cx = rng.uniform(r + 3, TF.FRAME_HW[0] - r - 3), rng.uniform(r + 3, TF.FRAME_HW[1] - r - 3)
        for _ in range(4):
            f = TF.lesion_frame(rng, y, cy + rng.normal(0, 2), cx + rng.normal(0, 2), r).astype(float)
            f = np.clip(f + rng.normal(0, 45, f.shape), 0, 255).astype(np.uint8)
            frames.append(f)
            pids.append(f"p{i}")
        labels.append(y)
    with Classifier.load(bundle, backend="onnxruntime", device="cpu", precision="fp32") as clf:
        probs = np.asarray(clf.predict(frames))
        agg = aggregate(probs, pids, clf.bundle.aggregation)
    return np.stack([agg[f"p{i}"][0] for i in range(150)]), np.array(labels)


def test_patient_coverage_over_random_splits(tmp_path_factory):
    P, y = _fresh_patient_probs(tmp_path_factory)
    acc = float(np.mean(P.argmax(1) == y))
    cov, per, size = [], {c: [] for c in CLASSES}, []
    n_cal = 90
    rng = np.random.default_rng(0)
    for _ in range(SPLITS):
        order = rng.permutation(len(y))
        cal, test = order[:n_cal], order[n_cal:]
        sets = prediction_sets(P[test], fit_mondrian(P[cal], y[cal], CLASSES, ALPHA), CLASSES)
        assert sets == _crepes_sets(P[cal], y[cal], P[test], ALPHA)  # the same sets on the model's own scores
        got = set_coverage(sets, [CLASSES[k] for k in y[test]], CLASSES)
        cov.append(got["coverage"])
        size.append(got["mean_set_size"])
        for c in CLASSES:
            if got["per_class"][c]["coverage"] is not None:
                per[c].append(got["per_class"][c]["coverage"])
    n_test, n_k = len(y) - n_cal, n_cal // 3
    # Finite-sample slack (stated): the split-conformal promise is E[coverage] >= 1 - alpha; the mean over
    # SPLITS splits of n_test test patients fluctuates with sd <= sqrt(alpha (1 - alpha) (1/n_test + 1/(n_k + 2))
    # / SPLITS) (test sampling + calibration quantile, splits taken as independent); slack = 3 sd.
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / n_test + 1 / (n_k + 2)) / SPLITS)
    mean = float(np.mean(cov))
    print(f"\nconformal alpha={ALPHA}: {SPLITS} splits of {len(y)} patients ({n_cal} calibration, {n_test} test); "
          f"model patient accuracy {acc:.3f}; mean coverage {mean:.4f} (>= {1 - ALPHA - slack:.4f}, slack "
          f"{slack:.4f}); per class " + ", ".join(f"{c} {np.mean(v):.4f}" for c, v in per.items())
          + f"; mean set size {np.mean(size):.3f}")
    assert acc < 1.0  # the model errs, so the sets have work to do
    assert mean >= 1 - ALPHA - slack
    for c, v in per.items():  # class-conditional: each class covered too
        assert np.mean(v) >= 1 - ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) * (3 / n_test + 1 / (n_k + 2)) / SPLITS), c
    assert np.mean(size) < 3.0  # not the trivial all-classes set


def test_evaluate_reports_coverage_and_set_size(tmp_path_factory, tmp_path):
    """`evaluate` of a bundle with conformal calibration reports coverage, per-class coverage and set size."""
    from thyrofast.bundle import Bundle
    from thyrofast.evaluate import evaluate_bundle
    from thyrofast.evaluate.report import write_report

    import _train_fixture as TF

    bundle, manifest = TF.load().trained_bundle(tmp_path_factory)
    assert Bundle.load(bundle).conformal is not None
    result = evaluate_bundle(bundle, manifest, split="test", backend="onnxruntime", device="cpu", progress=False,
                             n_boot=100)
    conf = result["conformal"]
    for lvl in ("patient", "image"):
        c = conf[lvl]
        assert 0 <= c["coverage"] <= 1 and 0 <= c["mean_set_size"] <= 3 and set(c["per_class"]) == set(CLASSES)
    paths = write_report(result, tmp_path / "rep", figures=False)
    text = "".join(Path(p).read_text() for p in paths.values() if str(p).endswith(".md"))
    assert "Conformal prediction sets" in text and "Mean set size" in text


def test_card_entries_checked_and_older_bundles_unchanged(bundle_dir, tmp_path):
    """A bundle without the clinical entries (written before them) predicts as before; bad entries are refused."""
    import shutil

    from thyrofast import Classifier
    from thyrofast.bundle import Bundle
    from thyrofast.conformal import calibrate
    from thyrofast.errors import InputError
    from thyrofast.predict import predict_files

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    b = Bundle.load(copy)
    assert b.conformal is None and b.ood is None
    frame = np.clip(np.random.default_rng(0).normal(110, 25, (128, 160)), 0, 255).astype(np.uint8)
    np.save(tmp_path / "f.npy", frame)
    with Classifier.load(copy, backend="onnxruntime", device="cpu", precision="fp32") as clf:
        predict_files(clf, [str(tmp_path / "f.npy")], tmp_path / "r.jsonl", progress=False)
    rec = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok" and not {"prediction_set", "refer", "ood"} & set(rec)

    classes = list(b.classes)
    rng = np.random.default_rng(1)
    p, y = _dirichlet(rng, 60)
    good = calibrate(p, y, p, y, classes, 0.1)
    b.update(conformal=good)
    assert Bundle.load(copy).conformal["patient"]["n"] == good["patient"]["n"]
    with Classifier.load(copy, backend="onnxruntime", device="cpu", precision="fp32") as clf:
        predict_files(clf, [str(tmp_path / "f.npy")], tmp_path / "r2.jsonl", progress=False)
    rec = json.loads((tmp_path / "r2.jsonl").read_text().splitlines()[0])
    assert rec["set_level"] == "image" and rec["refer"] == (len(rec["prediction_set"]) != 1)
    for bad in ({**good, "score": "aps"}, {**good, "patient": {**good["patient"], "alpha": 1.5}},
                {**good, "image": {**good["image"], "thresholds": {"BTN": 0.1}}},
                {**good, "image": {**good["image"], "thresholds": {c: float("nan") for c in classes}}}):
        with pytest.raises(InputError, match="conformal"):
            b.update(conformal=bad)
    with pytest.raises(InputError, match="ood"):
        b.update(ood={"layer": "layer1", "threshold": -1, "means": [[0.0]], "scale": [1.0]})
    with pytest.raises(InputError, match="ood"):
        b.update(ood={"threshold": 1.0, "means": [[0.0]], "scale": [1.0]})  # no layer
