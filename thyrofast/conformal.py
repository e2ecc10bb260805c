"""Conformal prediction sets with a refer option (split-conformal, class-conditional / Mondrian).

A calibrated probability still answers with one class for every case.  A
*prediction set* answers with the classes that cannot be ruled out at a chosen
error rate ``alpha``: for a new case from the population the calibration cases
came from, the set holds the true class with probability at least ``1 - alpha``
*for each true class separately* (class-conditional, "Mondrian" conformal
prediction; Vovk et al. 2005, ch. 4.5; Angelopoulos & Bates 2021, sec. 4.5).
A set that is not exactly one class is a **refer**: the model cannot commit at
that error rate (two or more classes remain, or none does), so a person decides.

Procedure (split conformal, fitted once at train time on the *validation
patients*, which the network never trained on):

* nonconformity score of class ``k`` for a case: ``s_k = 1 - p_k`` (the
  ``hinge`` score of crepes / the LAC score of MAPIE);
* for each class ``k``, the calibration cases whose true class is ``k`` give
  ``n_k`` scores; the p-value of a new score ``s`` is
  ``(#{calibration scores of class k >= s} + 1) / (n_k + 1)`` and ``k`` is in
  the set when that p-value is ``>= alpha`` (crepes' non-smoothed p-values, so
  the sets equal crepes' ``predict_set(..., smoothing=False)`` exactly; tested);
* stored as one threshold per class, ``q_k``: ``k`` is in the set iff
  ``1 - p_k <= q_k``.  ``q_k`` is null when ``n_k`` is too small for ``alpha``
  (``1 / (n_k + 1) >= alpha``): that class can never be ruled out.

Two calibrations are stored in the card's ``conformal`` entry, each stating its
level: ``patient`` (the patient probabilities of the bundle's aggregation rule,
calibrated on the validation patients: one case per patient, exchangeable, so
the guarantee is exact) and ``image`` (single images of the validation
patients; images of one patient are not independent, so the image-level
guarantee holds for a random image of a random new patient only approximately).

NumPy only (predict and evaluate use it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["fit_mondrian", "prediction_sets", "refer_flags", "set_coverage", "check_conformal", "DEFAULT_ALPHA",
           "LEVELS", "calibrate"]

DEFAULT_ALPHA = 0.1
SCORE = "1-p"
METHOD = "split-conformal, class-conditional (Mondrian)"
LEVELS = ("patient", "image")


def _min_count(n: int, alpha: float) -> int:
    """The fewest calibration scores ``>= s`` that keep a class in the set: the smallest ``c`` with
    ``(c + 1) / (n + 1) >= alpha``, evaluated exactly as crepes evaluates its p-values."""
    for c in range(n + 1):
        if (c + 1) / (n + 1) >= alpha:
            return c
    return n  # unreachable: (n + 1) / (n + 1) == 1 >= alpha


def fit_mondrian(probs, labels, classes: Sequence[str], alpha: float = DEFAULT_ALPHA) -> dict:
    """Class-conditional thresholds from calibration probabilities ``probs`` (N, K) and true class
    indices ``labels`` (N,).  Returns ``{"alpha", "thresholds": {class: q or None}, "n": {class: n_k}}``."""
    P = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    y = np.asarray(labels).astype(int).ravel()
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if P.shape != (len(y), len(classes)) or (len(y) and not np.all(np.isfinite(P))):
        raise ValueError(f"probs must be finite with shape ({len(y)}, {len(classes)}), got {P.shape}")
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError("labels must be class indices")
    thresholds: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for k, c in enumerate(classes):
        s = np.sort(1.0 - P[y == k, k])
        n = int(s.size)
        r = _min_count(n, alpha)
        # k stays in the set iff #{s_i >= s} >= r  <=>  s <= the (n - r + 1)-th smallest score
        thresholds[c] = None if r == 0 else float(s[n - r])
        counts[c] = n
    return {"alpha": alpha, "thresholds": thresholds, "n": counts}


def prediction_sets(probs, level: Mapping[str, Any], classes: Sequence[str]) -> list[list[str]]:
    """The prediction set (class names, in the classes' order) of each row of ``probs`` (N, K)."""
    P = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    q = np.array([math.inf if level["thresholds"].get(c) is None else float(level["thresholds"][c])
                  for c in classes])
    inside = (1.0 - P) <= q[None, :]
    return [[c for c, keep in zip(classes, row) if keep] for row in inside]


def refer_flags(sets: Sequence[Sequence[str]]) -> list[bool]:
    """Refer (flag for human review) when a set is not exactly one class."""
    return [len(s) != 1 for s in sets]


def set_coverage(sets: Sequence[Sequence[str]], true: Sequence[str], classes: Sequence[str]) -> dict:
    """Coverage (share of sets holding the true class), per true class, mean set size and refer rate."""
    hit = np.array([t in s for s, t in zip(sets, true)], dtype=bool)
    size = np.array([len(s) for s in sets], dtype=float)
    per = {}
    for c in classes:
        m = np.array([t == c for t in true], dtype=bool)
        per[c] = {"coverage": float(hit[m].mean()) if m.any() else None, "n": int(m.sum())}
    return {"coverage": float(hit.mean()) if hit.size else None, "per_class": per,
            "mean_set_size": float(size.mean()) if size.size else None,
            "refer_rate": float(np.mean(size != 1)) if size.size else None, "n": int(hit.size)}


def calibrate(image_probs, image_labels, patient_probs, patient_labels, classes: Sequence[str],
              alpha: float = DEFAULT_ALPHA) -> dict:
    """The card's ``conformal`` entry: patient- and image-level calibrations on held-out cases."""
    return {"method": METHOD, "score": SCORE, "alpha": float(alpha),
            "calibration": "validation patients (held out from training)",
            "patient": fit_mondrian(patient_probs, patient_labels, classes, alpha),
            "image": fit_mondrian(image_probs, image_labels, classes, alpha)}


def check_conformal(entry: Any, classes: Sequence[str]) -> None:
    """ValueError unless ``entry`` is a valid ``conformal`` card entry for ``classes``."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"must be an object, got {type(entry).__name__}")
    if entry.get("score") != SCORE:
        raise ValueError(f"score must be {SCORE!r}, got {entry.get('score')!r}")
    for name in LEVELS:
        level = entry.get(name)
        if not isinstance(level, Mapping):
            raise ValueError(f"{name} must be an object with alpha, thresholds and n")
        a = level.get("alpha")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a < 1.0:
            raise ValueError(f"{name}.alpha must be a number in (0, 1), got {a!r}")
        th, n = level.get("thresholds"), level.get("n")
        if not isinstance(th, Mapping) or set(th) != set(classes):
            raise ValueError(f"{name}.thresholds must name exactly the classes {list(classes)}")
        for c, q in th.items():
            if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q)):
                raise ValueError(f"{name}.thresholds[{c!r}] must be a finite number or null, got {q!r}")
        if not isinstance(n, Mapping) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in n.values()):
            raise ValueError(f"{name}.n must map classes to non-negative counts")
