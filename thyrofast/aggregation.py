"""Image -> patient aggregation of class probabilities (a bundle's ``aggregation``).

Two rules, both pure NumPy so every consumer (``Classifier``, ``predict``,
``evaluate``, training) applies the bundle's rule identically:

* ``"mean_log_prob"``: softmax of the mean image log-probability (a normalized
  geometric mean).  Needs no fitting; the default for bundles without a
  fitted rule and for prediction files.
* ``{"method": "pooled_logistic", ...}``: a multinomial logistic regression on
  order statistics of the patient's image log-probabilities (mean, max, min,
  top-3 mean per class, and the share of images calling each class), fitted on
  the training patients by :func:`fit_pooled_logistic`.  Why: a patient is
  several structures seen in several images; a single metastatic-looking lymph
  node image should raise MMTN even when a dozen nodule images look alike, which
  a mean cannot express and a max alone over-reacts to.  The weights are stored
  in the bundle as plain numbers.

  Graceful degradation: the rule has only seen patients with as many images as
  the fitting patients had; its order statistics of one image (max = min =
  mean, share one-hot) lie far outside that, and a rule fitted on ~18 images
  per patient turned one-image patients called MMTN at image level into BTN.
  A fitted rule therefore states its range in the bundle,
  ``"fallback": {"rule": "mean_log_prob", "below_images": m}`` with ``m`` the
  10th percentile (lower) of the fitting patients' image counts: a patient
  with fewer than ``m`` images gets the mean log-probability instead.  Rules
  fitted before this field existed have none and are applied as they were.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .io.schema import DEFAULT_CLASSES

__all__ = ["MEAN_LOG_PROB", "POOLED_LOGISTIC", "aggregate", "pooled_features", "fit_pooled_logistic",
           "check_spec", "describe"]

MEAN_LOG_PROB = "mean_log_prob"
POOLED_LOGISTIC = "pooled_logistic"
_EPS = 1e-12
_TOP = 3
_STATS = ("mean", "max", "min", f"top{_TOP}", "share")


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def feature_names(classes: Sequence[str]) -> list[str]:
    return [f"{s}_{c}" for s in _STATS for c in classes]


def pooled_features(log_probs: np.ndarray) -> np.ndarray:
    """(n_images, K) log-probabilities of one patient -> (5 K,) features."""
    lp = np.asarray(log_probs, dtype=np.float64)
    k = lp.shape[1]
    top = np.sort(lp, axis=0)[-_TOP:].mean(axis=0)
    share = np.bincount(lp.argmax(axis=1), minlength=k) / len(lp)
    return np.concatenate([lp.mean(axis=0), lp.max(axis=0), lp.min(axis=0), top, share])


def _groups(patient_ids: Sequence[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, pid in enumerate(patient_ids):
        groups.setdefault(pid, []).append(i)
    return groups


def check_spec(spec: Any, n_classes: int = 3) -> str | dict:
    """Validate a bundle's ``aggregation`` (a rule name or a fitted rule); returns it."""
    if spec is None or spec == MEAN_LOG_PROB:
        return MEAN_LOG_PROB
    if isinstance(spec, Mapping) and spec.get("method") == POOLED_LOGISTIC:
        nf = 5 * n_classes
        try:
            coef = np.asarray(spec["coef"], dtype=np.float64)
            ok = (coef.shape == (n_classes, nf)
                  and np.asarray(spec["intercept"], dtype=np.float64).shape == (n_classes,)
                  and np.asarray(spec["mean"], dtype=np.float64).shape == (nf,)
                  and np.asarray(spec["scale"], dtype=np.float64).shape == (nf,))
        except (KeyError, TypeError, ValueError):
            ok = False
        fb = spec.get("fallback")
        if fb is not None:
            m = fb.get("below_images") if isinstance(fb, Mapping) else None
            if not (isinstance(fb, Mapping) and fb.get("rule") == MEAN_LOG_PROB and isinstance(m, int)
                    and not isinstance(m, bool) and m >= 1):
                raise ValueError(f"aggregation fallback must be {{'rule': {MEAN_LOG_PROB!r}, 'below_images': "
                                 f"an integer >= 1}}, got {fb!r}")
        if ok and all(np.isfinite(np.asarray(spec[k], dtype=np.float64)).all()
                      for k in ("coef", "intercept", "mean", "scale")) \
                and (np.asarray(spec["scale"], dtype=np.float64) > 0).all():
            return dict(spec)
        raise ValueError(f"aggregation {POOLED_LOGISTIC!r} needs finite coef ({n_classes}, {nf}), "
                         f"intercept ({n_classes},), mean and scale ({nf},) with scale > 0")
    raise ValueError(f"unknown aggregation {spec!r}: expected {MEAN_LOG_PROB!r} or a "
                     f"{{'method': {POOLED_LOGISTIC!r}, ...}} mapping")


def describe(spec: Any) -> str:
    spec = check_spec(spec) if not isinstance(spec, Mapping) else spec
    return spec if isinstance(spec, str) else str(spec.get("method"))


def aggregate(probs: np.ndarray, patient_ids: Sequence[Any], spec: Any = MEAN_LOG_PROB
              ) -> dict[Any, tuple[np.ndarray, int]]:
    """Per-patient probabilities: ``{patient_id: (probs (K,), n_images)}`` in first-seen order."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(patient_ids) != len(probs):
        raise ValueError(f"need (N, K) probabilities and N patient ids, got {probs.shape} and {len(patient_ids)}")
    spec = check_spec(spec, probs.shape[1])
    logp = np.log(np.clip(probs, _EPS, 1.0))
    out = {}
    groups = _groups(patient_ids)
    if spec == MEAN_LOG_PROB:
        for pid, idx in groups.items():
            out[pid] = (_softmax_rows(logp[idx].mean(axis=0)), len(idx))
        return out
    coef = np.asarray(spec["coef"], dtype=np.float64)
    b = np.asarray(spec["intercept"], dtype=np.float64)
    mu = np.asarray(spec["mean"], dtype=np.float64)
    sd = np.asarray(spec["scale"], dtype=np.float64)
    below = int((spec.get("fallback") or {}).get("below_images", 0))
    for pid, idx in groups.items():
        if len(idx) < below:  # fewer images than the rule was fitted on: the mean log-probability
            out[pid] = (_softmax_rows(logp[idx].mean(axis=0)), len(idx))
            continue
        f = (pooled_features(logp[idx]) - mu) / sd
        out[pid] = (_softmax_rows(coef @ f + b), len(idx))
    return out


def _fit(Z: np.ndarray, y: np.ndarray, k: int, l2: float, w: np.ndarray):
    from scipy.optimize import minimize

    Y = np.eye(k)[y]
    nf = Z.shape[1]
    n = len(y)

    def loss(theta):
        W = theta[:k * nf].reshape(k, nf)
        b = theta[k * nf:]
        s = Z @ W.T + b
        s = s - s.max(axis=1, keepdims=True)
        lse = np.log(np.exp(s).sum(axis=1))
        ll = (w * ((Y * s).sum(axis=1) - lse)).sum() / w.sum()
        P = np.exp(s - lse[:, None])
        G = (w[:, None] * (P - Y)) / w.sum()
        gW = G.T @ Z + l2 * W / n
        return -ll + 0.5 * l2 * (W ** 2).sum() / n, np.concatenate([gW.ravel(), G.sum(axis=0)])

    res = minimize(loss, np.zeros(k * nf + k), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return res.x[:k * nf].reshape(k, nf), res.x[k * nf:], bool(res.success)


L2_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def fit_pooled_logistic(log_probs: np.ndarray, patient_ids: Sequence[Any], labels: Sequence[int], *,
                        l2: float | None = None, folds: int = 5, seed: int = 0,
                        classes: Sequence[str] = DEFAULT_CLASSES) -> dict:
    """Fit the pooled-logistic rule on patients' image log-probabilities and labels.

    ``labels``: one class index per image (constant within a patient).  L2
    penalty ``l2`` on the standardized coefficients (not the intercepts); by
    default it is chosen from ``L2_GRID`` by ``folds``-fold cross-validated
    log-loss over the patients (stratified, seeded), then refitted on all.
    Unweighted maximum likelihood, so probabilities reflect the class
    frequencies of the fitting patients.  The rule's ``fallback`` (module doc):
    patients with fewer images than the 10th percentile of the fitting
    patients' counts get the mean log-probability.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels)
    k = lp.shape[1]
    groups = _groups(patient_ids)
    X = np.array([pooled_features(lp[idx]) for idx in groups.values()])
    y = np.array([int(labels[idx[0]]) for idx in groups.values()])
    counts = np.bincount(y, minlength=k)
    if (counts == 0).any():
        raise ValueError("every class needs at least one patient to fit the aggregation")
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    Z = (X - mu) / sd
    w = np.ones(len(y))
    cv = None
    if l2 is None:
        rng = np.random.default_rng(seed)
        fold = np.empty(len(y), np.int64)
        for c in range(k):  # stratified: each class dealt round-robin over the folds
            idx = rng.permutation(np.flatnonzero(y == c))
            fold[idx] = np.arange(len(idx)) % folds
        cv = {}
        for lam in L2_GRID:
            nll, n_scored = 0.0, 0
            for f in range(folds):
                tr, te = fold != f, fold == f
                if not te.any() or len(np.unique(y[tr])) < k:
                    continue  # a fold whose training part lacks a class cannot be scored
                W, b, _ = _fit(Z[tr], y[tr], k, lam, w[tr])
                s = Z[te] @ W.T + b
                s = s - s.max(axis=1, keepdims=True)
                nll -= (s[np.arange(te.sum()), y[te]] - np.log(np.exp(s).sum(axis=1))).sum()
                n_scored += int(te.sum())
            if n_scored:
                cv[lam] = nll / n_scored
        # too few patients to cross-validate: the strongest penalty of the grid
        l2 = min(cv, key=cv.get) if cv else max(L2_GRID)
    W, b, ok = _fit(Z, y, k, float(l2), w)
    n_img = np.array([len(idx) for idx in groups.values()])
    below = max(1, int(np.percentile(n_img, 10, method="lower")))
    return {"method": POOLED_LOGISTIC, "features": feature_names(classes),
            "fallback": {"rule": MEAN_LOG_PROB, "below_images": below},
            "coef": W.tolist(), "intercept": b.tolist(), "mean": mu.tolist(), "scale": sd.tolist(),
            "l2": float(l2), "cv_log_loss": ({str(k_): round(v, 5) for k_, v in cv.items()} if cv else None),
            "n_patients": int(len(y)), "converged": ok}
