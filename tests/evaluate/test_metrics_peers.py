"""thyrofast.metrics against its peers: scikit-learn, statsmodels and pROC.

pROC (Robin et al. 2011, BMC Bioinformatics 12:77) is the reference DeLong
implementation of clinical papers.  Its published values on its own aSAH data
set are pinned below; they come from pROC's own test suite
(github.com/xrobin/pROC, tests/testthat/test-auc.R, test-var.R, test-cov.R,
test-ci.auc.R, test-roc.test.R) and its documented example output
(`roc(aSAH$outcome, aSAH$s100b)`: "Area under the curve: 0.7314",
"95% CI: 0.6301-0.8326 (DeLong)").
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thyrofast import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics")
sm_contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
sm_proportion = pytest.importorskip("statsmodels.stats.proportion")
sm_inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")

ASAH = Path(__file__).resolve().parents[2].parent / "shared" / "external" / "aSAH.csv"


# ----------------------------------------------------------------------------
# an independent DeLong: the O(m·n) placement-value definition (DeLong 1988)


def psi(x, y):
    return (x > y) + 0.5 * (x == y)


def delong_reference(y, *scores):
    y = np.asarray(y, bool)
    aucs, v10s, v01s = [], [], []
    for s in scores:
        s = np.asarray(s, float)
        X, Y = s[y], s[~y]
        P = psi(X[:, None], Y[None, :])  # (m, n)
        aucs.append(P.mean())
        v10s.append(P.mean(axis=1))
        v01s.append(P.mean(axis=0))
    V10, V01 = np.array(v10s), np.array(v01s)
    m, n = V10.shape[1], V01.shape[1]
    S10 = np.cov(V10, ddof=1).reshape(len(scores), len(scores))
    S01 = np.cov(V01, ddof=1).reshape(len(scores), len(scores))
    return np.array(aucs), S10 / m + S01 / n


# ----------------------------------------------------------------------------
# ROC / AUC vs scikit-learn


def _random_cases(seed, n=200, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.round(s * 2) / 2  # about a dozen distinct values: many ties
    return y, s


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_equals_sklearn(seed, ties, drop):
    y, s = _random_cases(seed, ties=ties)
    ours = M.roc_curve(y, s, drop_intermediate=drop)
    ref = sklearn_metrics.roc_curve(y, s, drop_intermediate=drop)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_equals_sklearn(seed, ties):
    y, s = _random_cases(seed, ties=ties)
    assert M.roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    # the area under our ROC points is the same number
    fpr, tpr, _ = M.roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.roc_auc(y, s), abs=1e-12)


def test_roc_auc_all_tied_scores_is_half():
    y = np.array([0, 1, 0, 1, 1])
    s = np.ones(5)
    assert M.roc_auc(y, s) == 0.5 == sklearn_metrics.roc_auc_score(y, s)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auc_equals_sklearn_sample_weight(seed):
    y, s = _random_cases(seed, n=80, ties=True)
    rng = np.random.default_rng(100 + seed)
    W = rng.integers(0, 4, size=(6, y.size))  # bootstrap-like multiplicities
    ours = M.weighted_roc_auc(y, s, W)
    for b in range(W.shape[0]):
        ref = sklearn_metrics.roc_auc_score(y, s, sample_weight=W[b])
        assert ours[b] == pytest.approx(ref, abs=1e-12)
        # and it equals the AUC of the data set with rows repeated
        idx = np.repeat(np.arange(y.size), W[b])
        assert ours[b] == pytest.approx(M.roc_auc(y[idx], s[idx]), abs=1e-12)


def test_micro_and_macro_auc_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 1.2 * np.eye(3)[y]
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert M.macro_auc(y, P) == pytest.approx(sklearn_metrics.roc_auc_score(y, P, multi_class="ovr",
                                                                             average="macro"), abs=1e-12)
    Yb = np.eye(3)[y]
    assert M.micro_auc(y, P) == pytest.approx(sklearn_metrics.roc_auc_score(Yb, P, average="micro"), abs=1e-12)


# ----------------------------------------------------------------------------
# DeLong vs the O(n^2) definition


@pytest.mark.parametrize("seed", range(6))
def test_delong_cov_equals_placement_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 120))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s1 = rng.normal(size=n) + y
    s2 = np.round(s1 + rng.normal(size=n), 1)  # correlated, with ties
    s3 = rng.integers(0, 4, n).astype(float)  # ordinal, heavy ties
    aucs, cov = M.delong_cov(y, s1, s2, s3)
    ra, rc = delong_reference(y, s1, s2, s3)
    np.testing.assert_allclose(aucs, ra, atol=1e-12)
    np.testing.assert_allclose(cov, rc, atol=1e-12)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 6)), min_size=4, max_size=40))
def test_delong_paired_matches_definition_property(rows):
    y = np.array([r[0] for r in rows])
    if y.sum() < 2 or (~y).sum() < 2:
        return
    a = np.array([r[1] for r in rows], float)
    b = np.array([r[2] for r in rows], float)
    ra, rc = delong_reference(y, a, b)
    res = M.delong_paired(y, a, b)
    assert res["diff"] == pytest.approx(ra[0] - ra[1], abs=1e-12)
    var = rc[0, 0] + rc[1, 1] - 2 * rc[0, 1]
    assert res["se"] == pytest.approx(math.sqrt(max(var, 0.0)), abs=1e-9)


# ----------------------------------------------------------------------------
# pROC on aSAH


@pytest.fixture(scope="module")
def asah():
    if not ASAH.is_file():
        pytest.skip(f"aSAH data set not found at {ASAH} (shared/external is not provided here)")
    import csv

    with open(ASAH, newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([r["outcome"] == "Poor" for r in rows])
    data = {k: np.array([float(r[k]) for r in rows]) for k in ("wfns", "s100b", "ndka")}
    assert y.size == 113 and y.sum() == 41
    return y, data


# pROC test suite: test-auc.R / test-ci.auc.R / test-var.R
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946}
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
PROC_COV = {("wfns", "ndka"): -0.000532967856762438, ("ndka", "s100b"): -0.000756164938056579,
            ("s100b", "wfns"): 0.00119615567376754}
PROC_CI_NDKA = (0.501244999271703, 0.611957994579946, 0.722670989888189)
# pROC test-roc.test.R: roc.test(r1, r2) with the default DeLong paired test
PROC_TEST = {
    ("wfns", "s100b"): (2.20898359144091, 0.0271757822291882, (0.0104061769564846, 0.174214419249478)),
    ("wfns", "ndka"): (2.79777591868904, 0.00514557970691098, (0.0634011709339876, 0.3600405634833566)),
    ("ndka", "s100b"): (-1.39077002573558, 0.164295175223054, (-0.2876917446341914, 0.0488706064228094)),
}


def test_proc_auc_and_delong_ci(asah):
    y, d = asah
    for k, v in PROC_AUC.items():
        assert M.roc_auc(y, d[k]) == pytest.approx(v, abs=1e-12)
    auc, lo, hi = M.delong_ci(y, d["ndka"])
    assert (lo, auc, hi) == pytest.approx(PROC_CI_NDKA, abs=1e-12)
    # the documented print-out for s100b (4 decimals as pROC prints them)
    auc, lo, hi = M.delong_ci(y, d["s100b"])
    assert (round(auc, 4), round(lo, 4), round(hi, 4)) == (0.7314, 0.6301, 0.8326)


def test_proc_wfns_ci_from_its_variance(asah):
    # pROC's ci.auc for wfns is auc ± 1.96·sqrt(var) with its pinned var: 0.7485–0.8988
    y, d = asah
    auc, lo, hi = M.delong_ci(y, d["wfns"])
    z = 1.959963984540054
    sd = math.sqrt(PROC_VAR["wfns"])
    assert (lo, hi) == pytest.approx((PROC_AUC["wfns"] - z * sd, PROC_AUC["wfns"] + z * sd), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.7485, 0.8988)


def test_proc_variances_and_covariances(asah):
    y, d = asah
    names = ["wfns", "ndka", "s100b"]
    _, cov = M.delong_cov(y, *(d[k] for k in names))
    for i, k in enumerate(names):
        assert cov[i, i] == pytest.approx(PROC_VAR[k], rel=1e-10)
    for (a, b), v in PROC_COV.items():
        assert cov[names.index(a), names.index(b)] == pytest.approx(v, rel=1e-10)


@pytest.mark.parametrize("pair", list(PROC_TEST))
def test_proc_paired_roc_test(asah, pair):
    y, d = asah
    z_ref, p_ref, ci_ref = PROC_TEST[pair]
    z, p = M.delong_test(y, d[pair[0]], d[pair[1]])
    assert z == pytest.approx(z_ref, rel=1e-10)
    assert p == pytest.approx(p_ref, rel=1e-10)
    res = M.delong_paired(y, d[pair[0]], d[pair[1]])
    assert res["ci"] == pytest.approx(ci_ref, rel=1e-10)
    # reversing the curves flips z and keeps p (pROC's test too)
    z2, p2 = M.delong_test(y, d[pair[1]], d[pair[0]])
    assert z2 == pytest.approx(-z, rel=1e-12) and p2 == pytest.approx(p, rel=1e-12)


def test_proc_identical_curves(asah):
    y, d = asah
    assert M.delong_test(y, d["wfns"], d["wfns"]) == (0.0, 1.0)


# ----------------------------------------------------------------------------
# Wilson, McNemar, kappa vs statsmodels / scikit-learn


@pytest.mark.parametrize("n", [1, 2, 4, 10, 34, 200])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_equals_statsmodels(n, level):
    for k in range(n + 1):
        ref = sm_proportion.proportion_confint(k, n, alpha=1 - level, method="wilson")
        assert M.wilson_ci(k, n, level) == pytest.approx(ref, abs=1e-12)
    ks = np.arange(n + 1)
    lo, hi = M.wilson_ci(ks, np.full(ks.shape, n), level)
    rlo, rhi = sm_proportion.proportion_confint(ks, n, alpha=1 - level, method="wilson")
    np.testing.assert_allclose(lo, rlo, atol=1e-12)
    np.testing.assert_allclose(hi, rhi, atol=1e-12)


def _paired_correct(seed, n, p_a, p_b):
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


@pytest.mark.parametrize("seed,n", [(0, 12), (1, 34), (2, 60), (3, 300), (4, 5)])
@pytest.mark.parametrize("exact,correction", [(True, True), (False, True), (False, False)])
def test_mcnemar_equals_statsmodels(seed, n, exact, correction):
    a, b = _paired_correct(seed, n, 0.85, 0.7)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    ref = sm_contingency.mcnemar(table, exact=exact, correction=correction)
    ours = M.mcnemar(a, b, exact=exact, correction=correction)
    if table[0][1] + table[1][0] == 0 and not exact:
        assert math.isnan(ours.pvalue)
        return
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert ours.pvalue == pytest.approx(ref.pvalue, abs=1e-12)
    assert (ours.b, ours.c) == (table[0][1], table[1][0])


def test_mcnemar_auto_choice():
    a, b = _paired_correct(7, 34, 0.9, 0.7)
    assert M.mcnemar(a, b).method == "exact"  # few discordant pairs
    a, b = _paired_correct(8, 600, 0.9, 0.6)
    r = M.mcnemar(a, b)
    assert r.method == "chi2-corrected" and r.b + r.c >= 25


@pytest.mark.parametrize("seed", range(4))
def test_kappa_equals_sklearn_and_statsmodels(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 80)
    pred = np.where(rng.random(80) < 0.7, y, rng.integers(0, 3, 80))
    assert M.cohen_kappa(y, pred) == pytest.approx(sklearn_metrics.cohen_kappa_score(y, pred), abs=1e-12)
    ref = sm_inter_rater.cohens_kappa(M.confusion_matrix(y, pred))
    ours = M.cohen_kappa_ci(y, pred)
    assert ours["value"] == pytest.approx(ref.kappa, abs=1e-12)
    assert ours["se"] == pytest.approx(ref.std_kappa, abs=1e-12)
    assert ours["ci"] == pytest.approx((ref.kappa_low, ref.kappa_upp), abs=1e-12)


def test_confusion_matrix_equals_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    np.testing.assert_array_equal(M.confusion_matrix(y, p), sklearn_metrics.confusion_matrix(y, p, labels=[0, 1, 2]))
