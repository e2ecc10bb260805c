"""Classification statistics as plain functions on arrays.

Everything the evaluator reports is computed here, so each number can be
checked on its own against a peer (scikit-learn, statsmodels, pROC).

Conventions
-----------
* Binary functions take ``y_true`` (0/1 or bool, 1 = positive) and ``scores``
  where a *higher* score means "more likely positive" (no automatic
  direction flip, unlike pROC's ``direction="auto"``).
* Multi-class functions take integer labels indexing ``thyrofast.CLASSES``
  (or any class list) and an ``(N, K)`` probability/score matrix.
* Undefined quantities (an AUC without positives, a proportion of 0/0) are
  returned as ``nan``, never raised; the report attaches a note saying why.
* Intervals are two-sided at ``level`` (default 0.95).

References: DeLong, DeLong & Clarke-Pearson 1988 (Biometrics 44:837); Sun &
Xu 2014 (IEEE Signal Process. Lett. 21:1389, the O(N log N) midrank
algorithm); Wilson 1927; McNemar 1947; Fleiss, Cohen & Everitt 1969 (kappa
variance); Guo et al. 2017 (top-label ECE).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats

from .io.schema import DEFAULT_CLASSES

__all__ = [
    "roc_curve",
    "roc_auc",
    "weighted_roc_auc",
    "delong_cov",
    "delong_ci",
    "auc_score_ci",
    "delong_paired",
    "delong_test",
    "wilson_ci",
    "McNemarResult",
    "mcnemar",
    "mcnemar_counts",
    "cohen_kappa",
    "cohen_kappa_ci",
    "confusion_matrix",
    "row_normalize",
    "reliability_bins",
    "ece",
    "cluster_bootstrap",
    "bootstrap_weights",
    "per_class_metrics",
    "accuracy_ci",
    "macro_auc",
    "micro_auc",
    "one_hot",
]


# ----------------------------------------------------------------------------
# input checking


def _binary(y_true, name: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y
    if not np.issubdtype(y.dtype, np.number):
        raise TypeError(f"{name} must be numeric or bool, got dtype {y.dtype}")
    u = np.unique(y)
    if not np.all(np.isin(u, (0, 1))):
        raise ValueError(f"{name} must hold only 0/1 (or bool), got values {u[:5]}")
    return y.astype(bool)


def _scores(scores, n: int, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(f"{name} must be 1-D of length {n}, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(stats.norm.ppf(0.5 + level / 2.0))


# ----------------------------------------------------------------------------
# ROC


def roc_curve(y_true, scores, drop_intermediate: bool = True):
    """ROC points ``(fpr, tpr, thresholds)``, identical to scikit-learn's.

    Thresholds decrease; the first is ``inf`` so the curve starts at (0, 0).
    ``fpr``/``tpr`` are all-nan when there are no negatives/positives.
    """
    y = _binary(y_true)
    s = _scores(scores, y.shape[0])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of equal scores: ties move together
    idx = np.r_[np.flatnonzero(np.diff(s)), y.size - 1] if y.size else np.zeros(0, int)
    tps = np.cumsum(y)[idx].astype(np.float64)
    fps = 1.0 + idx - tps
    thr = s[idx]
    if drop_intermediate and fps.size > 2:
        # keep corners only (collinear points change neither the plot nor the AUC)
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thr = np.r_[np.inf, thr]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (ties count 1/2); nan if a class is absent."""
    y = _binary(y_true)
    s = _scores(scores, y.shape[0])
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return math.nan
    ranks = stats.rankdata(s)  # midranks handle ties exactly (Mann-Whitney U)
    return float((ranks[y].sum() - m * (m + 1) / 2.0) / (m * n))


def weighted_roc_auc(y_true, scores, weights) -> np.ndarray | float:
    """AUC with case weights; ``weights`` may be ``(N,)`` or ``(B, N)``.

    With integer weights this is the AUC of the data set in which case i
    appears ``weights[i]`` times, so a ``(B, N)`` matrix of bootstrap
    multiplicities gives all B replicate AUCs in one pass (the scores are
    sorted once).  Equals scikit-learn's ``roc_auc_score(sample_weight=w)``.
    nan where a replicate has no positive or no negative weight.
    """
    y = _binary(y_true)
    s = _scores(scores, y.shape[0])
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[-1] != y.shape[0] or w.ndim not in (1, 2):
        raise ValueError(f"weights must be (N,) or (B, N) with N = {y.shape[0]}, got {w.shape}")
    if np.any(w < 0):
        raise ValueError("weights must be non-negative")
    if y.size == 0:
        return np.full(w.shape[:-1], np.nan) if w.ndim == 2 else math.nan
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], w[..., order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # one group per distinct score
    gn = np.add.reduceat(w * ~y, starts, axis=-1)
    gp = np.add.reduceat(w * y, starts, axis=-1)
    below = np.cumsum(gn, axis=-1) - gn  # negative weight strictly below each group
    num = (gp * (below + 0.5 * gn)).sum(axis=-1)
    den = gp.sum(axis=-1) * gn.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------
# DeLong


def _placements(y: np.ndarray, s: np.ndarray):
    """Sun & Xu (2014): AUCs and DeLong placement values from midranks.

    ``s`` is ``(k, N)``.  Returns ``aucs (k,)``, ``v10 (k, m)`` (one per
    positive: fraction of negatives it beats) and ``v01 (k, n)`` (one per
    negative: fraction of positives that beat it).
    """
    x, yneg = s[:, y], s[:, ~y]
    m, n = x.shape[1], yneg.shape[1]
    tx = stats.rankdata(x, axis=1)
    ty = stats.rankdata(yneg, axis=1)
    tz = stats.rankdata(np.concatenate([x, yneg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_cov(y_true, *scores):
    """AUCs and their DeLong covariance matrix for scores on the same cases.

    Returns ``(aucs (k,), cov (k, k))``; the covariance is nan when there are
    fewer than two positives or two negatives (as in pROC), and everything is
    nan when a class is absent.
    """
    if not scores:
        raise TypeError("delong_cov needs at least one score vector")
    y = _binary(y_true)
    s = np.stack([_scores(x, y.shape[0], f"scores[{i}]") for i, x in enumerate(scores)])
    k = s.shape[0]
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    aucs, v10, v01 = _placements(y, s)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan)
    d10 = v10 - v10.mean(axis=1, keepdims=True)
    d01 = v01 - v01.mean(axis=1, keepdims=True)
    s10 = d10 @ d10.T / (m - 1)
    s01 = d01 @ d01.T / (n - 1)
    return aucs, s10 / m + s01 / n


def delong_ci(y_true, scores, level: float = 0.95):
    """AUC with its DeLong confidence interval: ``(auc, lo, hi)``.

    Normal interval ``auc ± z·sqrt(var)`` clipped to [0, 1], exactly as pROC's
    ``ci.auc(method="delong")``.  ``lo``/``hi`` are nan with fewer than two
    cases in either class; all three are nan when a class is absent.  With
    perfect separation the interval is degenerate (``auc == lo == hi``):
    report a bootstrap interval beside it.
    """
    z = _z(level)
    aucs, cov = delong_cov(y_true, scores)
    auc, var = float(aucs[0]), float(cov[0, 0])
    if not math.isfinite(var):
        return auc, math.nan, math.nan
    sd = math.sqrt(max(var, 0.0))
    return auc, min(max(auc - z * sd, 0.0), 1.0), min(max(auc + z * sd, 0.0), 1.0)


def _hanley_mcneil_var(theta: np.ndarray, m: int, n: int) -> np.ndarray:
    # Hanley & McNeil 1982 (Radiology 143:29): variance of the AUC as a function of theta
    q1 = theta / (2.0 - theta)
    q2 = 2.0 * theta * theta / (1.0 + theta)
    return (theta * (1.0 - theta) + (m - 1) * (q1 - theta * theta) + (n - 1) * (q2 - theta * theta)) / (m * n)


def auc_score_ci(auc: float, n_pos: int, n_neg: int, level: float = 0.95):
    """Score-type (Wilson-like) interval for an AUC: ``(lo, hi)``.

    Inverts ``(auc - θ)^2 = z^2 · V_HM(θ)`` with the Hanley & McNeil (1982)
    variance evaluated at the candidate θ, as Wilson's interval does for a
    proportion (cf. Newcombe 2006, Stat Med 25:559).  Unlike DeLong's it
    stays informative at AUC = 1 (perfect separation) or with a single case
    in a class, so the evaluator uses it there.  nan without both classes.
    """
    z = _z(level)
    a = float(auc)
    if not math.isfinite(a) or n_pos < 1 or n_neg < 1:
        return math.nan, math.nan
    if not 0.0 <= a <= 1.0:
        raise ValueError("auc must be in [0, 1]")

    def f(t):
        return (a - t) ** 2 - z * z * _hanley_mcneil_var(np.asarray(t, dtype=np.float64), n_pos, n_neg)

    grid = np.linspace(0.0, 1.0, 4001)
    inside = f(grid) <= 0.0  # θ values compatible with the observed AUC
    if not inside.any():
        return a, a
    lo_g, hi_g = grid[inside][0], grid[inside][-1]
    lo = lo_g if lo_g <= 0.0 else _bisect(f, lo_g - grid[1], lo_g)
    hi = hi_g if hi_g >= 1.0 else _bisect(f, hi_g + grid[1], hi_g)
    return float(min(lo, a)), float(max(hi, a))


def _bisect(f, outside: float, inside: float, iters: int = 60) -> float:
    for _ in range(iters):
        mid = 0.5 * (outside + inside)
        if f(mid) <= 0.0:
            inside = mid
        else:
            outside = mid
    return inside


def delong_paired(y_true, scores_a, scores_b, level: float = 0.95) -> dict:
    """Paired DeLong comparison of two AUCs on the same cases.

    Returns a dict with ``auc_a``, ``auc_b``, ``diff`` (a − b), ``se``,
    ``ci`` (normal interval of the difference), ``z`` and two-sided ``p``.
    Identical curves give ``z = 0, p = 1`` (pROC's convention).
    """
    zc = _z(level)
    aucs, cov = delong_cov(y_true, scores_a, scores_b)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not (math.isfinite(diff) and math.isfinite(var)):
        z = p = se = lo = hi = math.nan
    else:
        se = math.sqrt(max(var, 0.0))
        # rounding can leave a tiny non-zero var/diff for identical inputs
        if se <= 1e-15 * max(1.0, abs(diff)):
            se = 0.0
        if se == 0.0:
            z = 0.0 if abs(diff) <= 1e-15 else math.copysign(math.inf, diff)
        else:
            z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
        lo, hi = diff - zc * se, diff + zc * se
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "ci": (lo, hi),
        "z": z,
        "p": p,
        "level": level,
    }


def delong_test(y_true, scores_a, scores_b):
    """Paired two-sided DeLong test of AUC(a) = AUC(b): ``(z, p)``."""
    r = delong_paired(y_true, scores_a, scores_b)
    return r["z"], r["p"]


# ----------------------------------------------------------------------------
# proportions


def wilson_ci(k, n, level: float = 0.95):
    """Wilson score interval for ``k`` successes in ``n`` trials: ``(lo, hi)``.

    Equals statsmodels' ``proportion_confint(k, n, method="wilson")``; works on
    scalars or arrays; nan where ``n == 0``.
    """
    z = _z(level)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("wilson_ci needs 0 <= k <= n")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        z2 = z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
        lo, hi = center - half, center + half
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def _proportion(k: int, n: int, level: float) -> dict:
    lo, hi = wilson_ci(k, n, level)
    return {
        "value": (k / n) if n else math.nan,
        "k": int(k),
        "n": int(n),
        "ci": (lo, hi),
        "ci_method": "wilson",
    }


def accuracy_ci(y_true, y_pred, level: float = 0.95) -> dict:
    """Accuracy with a Wilson interval (independent cases, e.g. patients)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D of the same length")
    return _proportion(int((t == p).sum()), int(t.size), level)


# ----------------------------------------------------------------------------
# McNemar


class McNemarResult(NamedTuple):
    statistic: float
    pvalue: float
    b: int  # a correct, b wrong
    c: int  # a wrong, b correct
    method: str  # "exact" or "chi2" / "chi2-corrected"


def mcnemar_counts(b: int, c: int, exact: bool = True, correction: bool = True) -> McNemarResult:
    """McNemar's test from the two discordant counts, as statsmodels computes it.

    ``exact``: two-sided binomial test, statistic = min(b, c).  Otherwise the
    chi-square statistic ``(|b - c| - corr)^2 / (b + c)`` with 1 df
    (``corr = 1`` with the continuity correction).
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    if exact:
        stat = float(min(b, c))
        p = min(1.0, float(2.0 * stats.binom.cdf(stat, b + c, 0.5)))
        return McNemarResult(stat, p, b, c, "exact")
    name = "chi2-corrected" if correction else "chi2"
    if b + c == 0:
        return McNemarResult(math.nan, math.nan, b, c, name)
    stat = (abs(b - c) - int(correction)) ** 2 / float(b + c)
    return McNemarResult(float(stat), float(stats.chi2.sf(stat, 1)), b, c, name)


def mcnemar(correct_a, correct_b, exact: bool | None = None, correction: bool = True) -> McNemarResult:
    """McNemar's test on paired correctness of two raters on the same cases.

    ``exact=None`` (default) uses the exact binomial test when there are
    fewer than 25 discordant pairs, else chi-square with continuity
    correction.
    """
    a = _binary(correct_a, "correct_a")
    bb = _binary(correct_b, "correct_b")
    if a.shape != bb.shape:
        raise ValueError("correct_a and correct_b must have the same length")
    b = int((a & ~bb).sum())
    c = int((~a & bb).sum())
    if exact is None:
        exact = (b + c) < 25
    return mcnemar_counts(b, c, exact=exact, correction=correction)


# ----------------------------------------------------------------------------
# agreement, confusion


def confusion_matrix(y_true, y_pred, n_classes: int = 3) -> np.ndarray:
    """``(K, K)`` counts; rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D of the same length")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalize(cm) -> np.ndarray:
    """Each row divided by its sum (recall per true class); empty rows are nan."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / rows, np.nan)


def _kappa_from_cm(cm: np.ndarray) -> float:
    n = cm.sum()
    if n == 0:
        return math.nan
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    if pe >= 1.0:
        return math.nan
    return float((po - pe) / (1.0 - pe))


def cohen_kappa(y_a, y_b, n_classes: int = 3) -> float:
    """Cohen's kappa between two label vectors (= scikit-learn's)."""
    return _kappa_from_cm(confusion_matrix(y_a, y_b, n_classes))


def cohen_kappa_ci(y_a, y_b, n_classes: int = 3, level: float = 0.95) -> dict:
    """Kappa with its asymptotic interval (Fleiss, Cohen & Everitt 1969).

    The variance is the large-sample one statsmodels' ``cohens_kappa`` uses.
    """
    z = _z(level)
    cm = confusion_matrix(y_a, y_b, n_classes).astype(np.float64)
    n = cm.sum()
    kappa = _kappa_from_cm(cm)
    out = {"value": kappa, "n": int(n), "ci": (math.nan, math.nan), "se": math.nan,
           "ci_method": "asymptotic (Fleiss, Cohen & Everitt 1969)"}
    if not math.isfinite(kappa):
        return out
    p = cm / n
    row, col = p.sum(1), p.sum(0)
    pe = float((row * col).sum())
    term_a = (np.diag(p) * (1.0 - (row + col) * (1.0 - kappa)) ** 2).sum()
    off = p * (col[:, None] + row[None, :]) ** 2
    np.fill_diagonal(off, 0.0)
    term_b = (1.0 - kappa) ** 2 * off.sum()
    term_c = (kappa - pe * (1.0 - kappa)) ** 2
    var = (term_a + term_b - term_c) / ((1.0 - pe) ** 2 * n)
    se = math.sqrt(max(var, 0.0))
    out.update(se=se, ci=(kappa - z * se, kappa + z * se))
    return out


# ----------------------------------------------------------------------------
# calibration


def reliability_bins(y_true, probs, n_bins: int = 10) -> dict:
    """Top-label reliability table with equal-width confidence bins.

    Returns ``edges (n_bins+1,)``, per bin ``count``, ``confidence`` (mean
    top probability) and ``accuracy`` (fraction whose top class is right);
    empty bins hold nan.
    """
    t = np.asarray(y_true, dtype=np.int64)
    P = np.asarray(probs, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != t.shape[0]:
        raise ValueError("probs must be (N, K) with N = len(y_true)")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins (a, b]; confidence 0 falls in the first bin
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mconf = np.bincount(b, weights=conf, minlength=n_bins) / count
        macc = np.bincount(b, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mconf, "accuracy": macc}


def ece(y_true, probs, n_bins: int = 10) -> float:
    """Expected calibration error of the top label (Guo et al. 2017)."""
    r = reliability_bins(y_true, probs, n_bins)
    n = r["count"].sum()
    if n == 0:
        return math.nan
    ok = r["count"] > 0
    gap = np.abs(r["accuracy"][ok] - r["confidence"][ok])
    return float((r["count"][ok] * gap).sum() / n)


# ----------------------------------------------------------------------------
# bootstrap


def bootstrap_weights(clusters, n_boot: int = 2000, seed: int = 0, strata=None):
    """Resampling multiplicities per cluster: ``(codes, W)``.

    ``codes[i]`` is the cluster index of row i; ``W[b, j]`` how often cluster j
    is drawn in replicate b (clusters drawn with replacement, within each
    stratum when ``strata`` — one value per row, constant within a cluster —
    is given).  Seeded; the same inputs give the same weights.
    """
    c = np.asarray(clusters)
    uniq, codes = np.unique(c, return_inverse=True)
    k = uniq.size
    rng = np.random.default_rng(seed)
    W = np.zeros((n_boot, k), dtype=np.int64)
    if strata is None:
        groups = [np.arange(k)]
    else:
        s = np.asarray(strata)
        if s.shape != c.shape:
            raise ValueError("strata must have one value per row")
        s_of_cluster = np.empty(k, dtype=s.dtype)
        s_of_cluster[codes] = s
        if np.any(s_of_cluster[codes] != s):
            raise ValueError("strata must be constant within each cluster")
        groups = [np.flatnonzero(s_of_cluster == v) for v in np.unique(s_of_cluster)]
    rep = np.arange(n_boot)[:, None] * k
    for g in groups:
        draws = g[rng.integers(0, g.size, size=(n_boot, g.size))]
        W += np.bincount((rep + draws).ravel(), minlength=n_boot * k).reshape(n_boot, k)
    return codes, W


def cluster_bootstrap(
    metric: Callable[..., float],
    *arrays,
    clusters=None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    strata=None,
) -> dict:
    """Percentile interval of ``metric(*arrays)`` by resampling whole clusters.

    ``clusters`` (one id per row, e.g. patient ids; default: every row its
    own cluster) are drawn with replacement and all their rows kept, so
    images of one patient never count as independent.  Replicates where the
    metric is undefined (nan) are dropped and counted in ``n_invalid``.
    Returns ``{"value", "ci", "se", "n_boot", "n_invalid", "seed",
    "ci_method"}``.
    """
    _z(level)
    if not arrays:
        raise TypeError("cluster_bootstrap needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError("all arrays must have the same first dimension")
    if clusters is None:
        clusters = np.arange(n)
    codes, W = bootstrap_weights(clusters, n_boot, seed, strata)
    rows_of = [np.flatnonzero(codes == j) for j in range(W.shape[1])]
    value = float(metric(*arrs))
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([np.repeat(rows_of[j], W[b, j]) for j in np.flatnonzero(W[b])])
        reps[b] = metric(*(a[idx] for a in arrs))
    return _percentile_summary(value, reps, level, seed)


def _percentile_summary(value: float, reps: np.ndarray, level: float, seed: int) -> dict:
    ok = np.isfinite(reps)
    good = reps[ok]
    alpha = (1.0 - level) / 2.0
    if good.size >= 2:
        lo, hi = np.quantile(good, [alpha, 1.0 - alpha])
        se = float(good.std(ddof=1))
    else:
        lo = hi = se = math.nan
    return {
        "value": value,
        "ci": (float(lo), float(hi)),
        "se": se,
        "n_boot": int(reps.size),
        "n_invalid": int((~ok).sum()),
        "seed": int(seed),
        "ci_method": "cluster bootstrap (percentile)",
    }


# ----------------------------------------------------------------------------
# multi-class summaries


def one_hot(y, n_classes: int = 3) -> np.ndarray:
    y = np.asarray(y, dtype=np.int64)
    out = np.zeros((y.size, n_classes), dtype=bool)
    out[np.arange(y.size), y] = True
    return out


def macro_auc(y_true, probs) -> float:
    """Mean one-vs-rest AUC over classes present in ``y_true`` (nan if < 2)."""
    P = np.asarray(probs, dtype=np.float64)
    Y = one_hot(y_true, P.shape[1])
    aucs = [roc_auc(Y[:, k], P[:, k]) for k in range(P.shape[1])]
    aucs = [a for a in aucs if math.isfinite(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def micro_auc(y_true, probs) -> float:
    """AUC of all (case, class) pairs pooled (scikit-learn's ``average="micro"``)."""
    P = np.asarray(probs, dtype=np.float64)
    Y = one_hot(y_true, P.shape[1])
    return roc_auc(Y.ravel(), P.ravel())


def _ovr_counts(cm: np.ndarray, k: int):
    tp = cm[..., k, k]
    fn = cm[..., k, :].sum(-1) - tp
    fp = cm[..., :, k].sum(-1) - tp
    tn = cm.sum((-1, -2)) - tp - fn - fp
    return tp, fp, fn, tn


def per_class_metrics(
    y_true,
    y_pred,
    classes: Sequence[str] = DEFAULT_CLASSES,
    level: float = 0.95,
    clusters=None,
    n_boot: int = 2000,
    seed: int = 0,
    strata=None,
) -> dict:
    """One-vs-rest sensitivity, specificity, PPV, NPV (Wilson CIs) and F1 per class.

    F1 is not a proportion, so its interval is a (cluster) bootstrap
    percentile interval, resampling ``clusters`` (default: rows).  Wilson
    intervals assume independent rows: pass patient-level labels, or read
    the bootstrap intervals (``*_bootstrap``) at image level.
    """
    K = len(classes)
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = confusion_matrix(t, p, K)
    if clusters is None:
        clusters = np.arange(t.size)
    codes, W = bootstrap_weights(clusters, n_boot, seed, strata)
    # per-cluster confusion matrices: bootstrap matrices are weighted sums
    cm_c = np.zeros((W.shape[1], K, K), dtype=np.int64)
    np.add.at(cm_c, (codes, t, p), 1)
    cm_b = np.tensordot(W, cm_c, axes=(1, 0))  # (B, K, K)
    alpha = (1.0 - level) / 2.0
    out = {}
    for k, name in enumerate(classes):
        tp, fp, fn, tn = (int(v) for v in _ovr_counts(cm, k))
        row = {
            "sensitivity": _proportion(tp, tp + fn, level),
            "specificity": _proportion(tn, tn + fp, level),
            "ppv": _proportion(tp, tp + fp, level),
            "npv": _proportion(tn, tn + fn, level),
            "support": tp + fn,
        }
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
        btp, bfp, bfn, _ = _ovr_counts(cm_b, k)
        den = 2 * btp + bfp + bfn
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = np.where(den > 0, 2 * btp / den, np.nan)
        summ = _percentile_summary(f1, reps, level, seed)
        row["f1"] = {"value": f1, "ci": summ["ci"], "ci_method": summ["ci_method"],
                     "n_boot": n_boot, "seed": seed}
        # cluster-bootstrap intervals of the proportions too (valid at image level)
        for key, (num, dens) in {
            "sensitivity": (btp, btp + bfn),
            "specificity": (cm_b.sum((1, 2)) - btp - bfn - bfp, cm_b.sum((1, 2)) - btp - bfn),
            "ppv": (btp, btp + bfp),
            "npv": (cm_b.sum((1, 2)) - btp - bfn - bfp, cm_b.sum((1, 2)) - btp - bfp),
        }.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(dens > 0, num / dens, np.nan)
            ok = r[np.isfinite(r)]
            row[key]["ci_bootstrap"] = (
                tuple(float(x) for x in np.quantile(ok, [alpha, 1 - alpha])) if ok.size >= 2
                else (math.nan, math.nan)
            )
        out[name] = row
    return out
