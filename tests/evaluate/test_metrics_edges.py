"""thyrofast.metrics: undefined cases, tiny samples, bootstrap, per-class, calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest

from thyrofast import metrics as M

# ----------------------------------------------------------------------------
# undefined and degenerate cases never raise


def test_absent_class_gives_nan_not_an_error():
    y = np.zeros(6, int)
    s = np.linspace(0, 1, 6)
    assert math.isnan(M.roc_auc(y, s))
    auc, lo, hi = M.delong_ci(y, s)
    assert all(math.isnan(v) for v in (auc, lo, hi))
    fpr, tpr, thr = M.roc_curve(y, s)
    assert np.all(np.isnan(tpr)) and np.all(np.isfinite(fpr))
    z, p = M.delong_test(y, s, s[::-1])
    assert math.isnan(z) and math.isnan(p)
    assert math.isnan(M.weighted_roc_auc(y, s, np.ones(6)))


def test_single_positive_has_auc_but_no_delong_interval():
    y = np.array([1, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.95, 0.3])
    auc, lo, hi = M.delong_ci(y, s)
    assert auc == pytest.approx(0.75)
    assert math.isnan(lo) and math.isnan(hi)
    lo2, hi2 = M.auc_score_ci(auc, 1, 4)
    assert 0 <= lo2 < auc < hi2 <= 1


def test_perfect_separation_delong_is_degenerate_score_interval_is_not():
    y = np.array([1] * 4 + [0] * 30)
    s = np.r_[np.linspace(0.8, 0.9, 4), np.linspace(0.0, 0.7, 30)]
    auc, lo, hi = M.delong_ci(y, s)
    assert auc == lo == hi == 1.0
    slo, shi = M.auc_score_ci(auc, 4, 30)
    assert shi == 1.0 and 0.5 < slo < 0.95
    # more cases, narrower interval
    assert M.auc_score_ci(1.0, 40, 300)[0] > slo


@pytest.mark.parametrize("auc,m,n", [(0.85, 30, 40), (0.7314, 41, 72), (0.6, 100, 100)])
def test_score_interval_close_to_wald_away_from_the_bounds(auc, m, n):
    # with the Hanley-McNeil variance at the estimate, the Wald interval is auc ± z·sd;
    # the score interval must be close to it when the AUC is not extreme and n is moderate
    lo, hi = M.auc_score_ci(auc, m, n)
    sd = math.sqrt(M._hanley_mcneil_var(np.float64(auc), m, n))
    assert lo < auc < hi
    # about as wide as the Wald interval, shifted towards 1/2 as score intervals are
    assert 0.9 <= (hi - lo) / (2 * 1.96 * sd) <= 1.2
    assert lo <= auc - 1.96 * sd + 1e-9 and hi <= auc + 1.96 * sd + 1e-9


def test_score_interval_coverage_small_samples():
    # 4 positives vs 30 negatives (the paper's NMTN): coverage of the true AUC near nominal
    rng = np.random.default_rng(0)
    shift = 2.3  # binormal: true AUC = Phi(shift / sqrt(2))
    true = float(__import__("scipy.stats", fromlist=["norm"]).norm.cdf(shift / math.sqrt(2)))
    hits = 0
    reps = 400
    for _ in range(reps):
        y = np.r_[np.ones(4, bool), np.zeros(30, bool)]
        s = rng.normal(size=34) + shift * y
        lo, hi = M.auc_score_ci(M.roc_auc(y, s), 4, 30)
        hits += lo <= true <= hi
    assert 0.88 <= hits / reps <= 1.0


def test_delong_identical_and_constant_inputs():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.8, 0.3, 0.7, 0.2, 0.4])
    assert M.delong_test(y, s, s) == (0.0, 1.0)
    r = M.delong_paired(y, np.ones(6), np.ones(6))
    assert r["diff"] == 0.0 and r["p"] == 1.0


@pytest.mark.parametrize("bad", [
    dict(y=[0, 1, 2], s=[0.1, 0.2, 0.3]),
    dict(y=[0, 1], s=[0.1, float("nan")]),
    dict(y=[0, 1], s=[0.1, 0.2, 0.3]),
    dict(y=[[0, 1]], s=[[0.1, 0.2]]),
])
def test_bad_binary_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        M.roc_auc(bad["y"], bad["s"])


def test_bad_arguments():
    with pytest.raises(ValueError):
        M.delong_ci([0, 1, 0, 1], [1, 2, 3, 4], level=1.5)
    with pytest.raises(ValueError):
        M.wilson_ci(5, 4)
    with pytest.raises(TypeError):
        M.delong_cov([0, 1])
    with pytest.raises(TypeError):
        M.roc_auc(np.array(["a", "b"]), [0.1, 0.2])
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 3], [0, 1])


def test_wilson_zero_n_is_nan_and_bounds():
    assert all(math.isnan(v) for v in M.wilson_ci(0, 0))
    lo, hi = M.wilson_ci(0, 4)
    assert lo == pytest.approx(0.0, abs=1e-15) and 0 < hi < 1
    lo, hi = M.wilson_ci(4, 4)
    assert 0 < lo < 1 and hi == pytest.approx(1.0)


def test_mcnemar_counts_edge_cases():
    r = M.mcnemar_counts(0, 0, exact=True)
    assert r.pvalue == 1.0
    r = M.mcnemar_counts(0, 0, exact=False)
    assert math.isnan(r.pvalue)
    # exact two-sided binomial by hand: b=1, c=8 -> 2·P(X<=1 | 9, 1/2) = 2·10/512
    assert M.mcnemar_counts(1, 8).pvalue == pytest.approx(20 / 512)
    with pytest.raises(ValueError):
        M.mcnemar([True, False], [True])


# ----------------------------------------------------------------------------
# bootstrap


def test_cluster_bootstrap_is_seeded_and_resamples_whole_clusters():
    clusters = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    x = clusters.astype(float)  # the value identifies the cluster

    def n_distinct_with_full_rows(v):
        # every drawn cluster appears with all its rows (a multiple of its size)
        vals, counts = np.unique(v, return_counts=True)
        sizes = np.bincount(clusters)[vals.astype(int)]
        assert np.all(counts % sizes == 0)
        return float(vals.size)

    a = M.cluster_bootstrap(n_distinct_with_full_rows, x, clusters=clusters, n_boot=200, seed=3)
    b = M.cluster_bootstrap(n_distinct_with_full_rows, x, clusters=clusters, n_boot=200, seed=3)
    c = M.cluster_bootstrap(n_distinct_with_full_rows, x, clusters=clusters, n_boot=200, seed=4)
    assert a == b
    assert a["ci"] != c["ci"] or a["se"] != c["se"]
    assert a["value"] == 10.0 and a["ci"][1] <= 10.0


def test_cluster_bootstrap_wider_than_row_bootstrap_for_correlated_rows():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(30), 10)
    effect = rng.normal(size=30)[patients]  # shared within a patient
    x = effect + 0.1 * rng.normal(size=patients.size)
    per_patient = M.cluster_bootstrap(np.mean, x, clusters=patients, n_boot=500, seed=0)
    per_row = M.cluster_bootstrap(np.mean, x, n_boot=500, seed=0)
    width = lambda r: r["ci"][1] - r["ci"][0]  # noqa: E731
    assert width(per_patient) > 2 * width(per_row)


def test_stratified_weights_keep_class_counts():
    y = np.array([0] * 10 + [1] * 4 + [2] * 20)
    codes, W = M.bootstrap_weights(np.arange(34), n_boot=300, seed=0, strata=y)
    for k, n in ((0, 10), (1, 4), (2, 20)):
        assert np.all(W[:, y == k].sum(axis=1) == n)
    with pytest.raises(ValueError):
        M.bootstrap_weights([0, 0, 1], strata=[0, 1, 1])  # stratum varies inside a cluster


def test_bootstrap_nan_replicates_are_counted():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    s = np.linspace(1, 0, 8)
    r = M.cluster_bootstrap(M.roc_auc, y, s, n_boot=300, seed=0)
    assert r["n_invalid"] > 0 and r["value"] == 1.0


# ----------------------------------------------------------------------------
# per class, accuracy, calibration


def test_per_class_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    p = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 2])
    r = M.per_class_metrics(y, p, n_boot=200)
    btn = r["BTN"]  # tp=2, fn=1, fp=1, tn=6
    assert btn["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert btn["specificity"]["value"] == pytest.approx(6 / 7)
    assert btn["ppv"]["value"] == pytest.approx(2 / 3)
    assert btn["npv"]["value"] == pytest.approx(6 / 7)
    assert btn["f1"]["value"] == pytest.approx(2 / 3)
    assert btn["sensitivity"]["ci"] == pytest.approx(M.wilson_ci(2, 3))
    mm = r["MMTN"]  # tp=4, fn=1, fp=1, tn=4
    assert mm["f1"]["value"] == pytest.approx(0.8)
    lo, hi = mm["f1"]["ci"]
    assert 0 <= lo <= 0.8 <= hi <= 1
    assert r["NMTN"]["support"] == 2


def test_per_class_metrics_absent_prediction_class():
    y = np.array([0, 1, 2, 2])
    p = np.array([0, 0, 2, 2])  # NMTN never predicted
    r = M.per_class_metrics(y, p, n_boot=100)
    assert math.isnan(r["NMTN"]["ppv"]["value"])
    assert r["NMTN"]["sensitivity"]["value"] == 0.0


def test_accuracy_ci_is_wilson():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 1, 2, 0, 0])
    r = M.accuracy_ci(y, p)
    assert (r["value"], r["k"], r["n"]) == (0.6, 3, 5)
    assert r["ci"] == pytest.approx(M.wilson_ci(3, 5))


def test_ece_by_hand_and_perfect_calibration():
    y = np.array([0, 0, 1, 1])
    P = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.75, 0.05], [0.65, 0.3, 0.05]])
    # bins: 0.9 -> (0.8,0.9] acc 1; 0.6 -> (0.5,0.6] acc 1; 0.75 -> (0.7,0.8] acc 1; 0.65 -> (0.6,0.7] acc 0
    expected = (abs(1 - 0.9) + abs(1 - 0.6) + abs(1 - 0.75) + abs(0 - 0.65)) / 4
    assert M.ece(y, P) == pytest.approx(expected)
    rb = M.reliability_bins(y, P)
    assert rb["count"].sum() == 4 and rb["edges"][0] == 0 and rb["edges"][-1] == 1
    # one-hot correct predictions: perfectly calibrated
    assert M.ece([0, 1, 2], np.eye(3)) == 0.0


def test_kappa_perfect_and_chance():
    y = np.array([0, 1, 2, 0, 1, 2])
    assert M.cohen_kappa(y, y) == 1.0
    assert math.isnan(M.cohen_kappa([0, 0], [0, 0]))  # no variability: undefined
    r = M.cohen_kappa_ci([0, 0], [0, 0])
    assert math.isnan(r["value"]) and math.isnan(r["ci"][0])
