"""Statistics of the study report that the evaluator does not already compute.

Calibration slope and intercept of a binary endpoint (logistic recalibration,
Cox 1958), decision-curve net benefit (Vickers & Elkin 2006), the pooled
non-inferiority bound over replicates the protocol fixes, Holm's adjustment.
"""
from __future__ import annotations

import math

import numpy as np


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _newton_logistic(X: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic regression ``y ~ X b + offset`` (Newton-Raphson)."""
    b = np.zeros(X.shape[1])
    for _ in range(iters):
        eta = X @ b + offset
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1 - mu)
        H = X.T @ (X * w[:, None]) + 1e-12 * np.eye(X.shape[1])
        step = np.linalg.solve(H, X.T @ (y - mu))
        b = b + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return b


def calibration_slope_intercept(y, p) -> dict:
    """Calibration of predicted probabilities ``p`` of a binary outcome ``y``.

    ``slope``: b in logit P(y) = a + b logit(p) (1 = ideal; < 1: predictions too
    extreme).  ``intercept``: calibration-in-the-large, a in logit P(y) = a +
    logit(p) (slope fixed at 1; 0 = ideal; > 0: risks underestimated).
    nan when ``y`` holds one class only.
    """
    y = np.asarray(y, dtype=np.float64)
    lp = _logit(p)
    if y.min() == y.max():
        return {"slope": math.nan, "intercept": math.nan, "n": int(y.size)}
    X = np.column_stack([np.ones_like(lp), lp])
    slope = float(_newton_logistic(X, y, np.zeros_like(lp))[1])
    intercept = float(_newton_logistic(np.ones((lp.size, 1)), y, lp)[0])
    return {"slope": slope, "intercept": intercept, "n": int(y.size)}


def reliability_table(y, p, n_bins: int = 10) -> list[dict]:
    """Equal-width bins of ``p``: count, mean predicted, observed rate (binary endpoint)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    b = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    out = []
    for k in range(n_bins):
        m = b == k
        if m.any():
            out.append({"bin": [k / n_bins, (k + 1) / n_bins], "n": int(m.sum()),
                        "predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return out


def net_benefit(y, p, thresholds) -> list[float]:
    """Net benefit of treating when ``p >= t``: TP/n - FP/n * t / (1 - t), per threshold."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    n = y.size
    out = []
    for t in thresholds:
        treat = p >= t
        out.append(float((treat & y).sum() / n - (treat & ~y).sum() / n * t / (1 - t)))
    return out


def treat_all_net_benefit(y, thresholds) -> list[float]:
    prev = float(np.mean(np.asarray(y, dtype=bool)))
    return [prev - (1 - prev) * t / (1 - t) for t in thresholds]


def pooled_difference(values, ses, level: float = 0.95) -> dict:
    """Replicates' differences on one shared cohort: mean, and the protocol's standard error
    se^2 = (mean se_r)^2 + SD_r^2 / R (patient sampling taken as fully correlated, plus the
    replicates' spread), with the two-sided interval of ``level``."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(ses, dtype=np.float64)
    R = v.size
    if R == 0:
        return {"mean": math.nan, "se": math.nan, "ci": [math.nan, math.nan], "n_replicates": 0}
    sd = float(v.std(ddof=1)) if R > 1 else 0.0
    se = math.sqrt(float(np.nanmean(s)) ** 2 + sd * sd / R)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    m = float(v.mean())
    return {"mean": m, "sd": sd, "se": se, "ci": [m - z * se, m + z * se], "n_replicates": int(R)}


def holm(pvalues: dict) -> dict:
    """Holm-adjusted p-values (same keys)."""
    items = sorted(((p, k) for k, p in pvalues.items() if p is not None and not math.isnan(p)))
    m = len(items)
    out, running = {}, 0.0
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    for k in pvalues:
        out.setdefault(k, math.nan)
    return out


def mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))],
                   dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else math.nan,
            "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan, "n": int(v.size),
            "values": [float(x) for x in values]}
