"""The operating point: a decision threshold on the probability of one (positive) class.

The argmax of calibrated probabilities follows the class mix the model was
trained on: with 18% benign / 82% malignant patients a model calls almost
nobody benign.  ``thyrofast train`` therefore chooses a threshold on the
positive class's probability on the *validation patients* and stores it in
the bundle card::

    "operating_point": {"positive": "malignant", "threshold": 0.62, "rule": "youden",
                        "val_sensitivity": 0.9, "val_specificity": 0.8, "n_val_patients": 20}

``rule``: ``"youden"`` (maximum of sensitivity + specificity - 1) or
``"sensitivity>=S"`` (the highest threshold whose validation sensitivity is at
least ``S``).  The validation counts are the same for every threshold between
two adjacent validation scores, so the midpoint of the chosen interval is
stored.  A case is called positive when ``P(positive) >= threshold``
(:func:`decide`); otherwise it gets the most probable other class.

This module is NumPy only (no torch): predict and evaluate use it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["choose_threshold", "decide", "check_operating_point", "RULE_YOUDEN", "sensitivity_rule"]

RULE_YOUDEN = "youden"
_SENS_RULE = re.compile(r"^sensitivity>=(0(\.\d+)?|1(\.0+)?)$")


def sensitivity_rule(target: float) -> str:
    """The rule name of a target sensitivity (``"sensitivity>=0.9"``)."""
    return f"sensitivity>={float(target):g}"


def _rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    call = s >= t
    sens = float(call[y].mean()) if y.any() else math.nan
    spec = float((~call[~y]).mean()) if (~y).any() else math.nan
    return sens, spec


def choose_threshold(is_positive, score, *, target_sensitivity: float | None = None) -> dict:
    """The threshold on ``score`` (the positive class's probability) for the cases ``is_positive``.

    ``target_sensitivity`` None: Youden's J; else the highest threshold with
    sensitivity >= the target.  Returns ``{threshold, rule, val_sensitivity,
    val_specificity, n_val_patients}``; ValueError without positive and negative cases.
    """
    y = np.asarray(is_positive, dtype=bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape or not np.all(np.isfinite(s)):
        raise ValueError("is_positive and score must be equal-length, with finite scores")
    if not (y.any() and (~y).any()):
        raise ValueError("an operating point needs positive and negative validation cases")
    if target_sensitivity is not None and not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target_sensitivity!r}")
    u = np.unique(s)  # ascending
    # candidate intervals: a threshold in (u[i-1], u[i]] calls the cases with score >= u[i] positive
    lows = np.concatenate([[0.0 if u[0] > 0 else u[0] - 1e-6], u[:-1]])
    cands = (lows + u) / 2.0  # midpoints; cands[i] calls exactly the scores >= u[i]
    rates = [_rates(y, s, t) for t in cands]
    if target_sensitivity is None:
        j = np.array([se + sp - 1.0 for se, sp in rates])
        best = np.flatnonzero(j >= j.max() - 1e-12)
        i = int(best[len(best) // 2])  # the middle of equally good intervals
        rule = RULE_YOUDEN
    else:
        ok = [k for k, (se, _) in enumerate(rates) if se >= float(target_sensitivity) - 1e-12]
        i = max(ok)  # ok is never empty: the lowest candidate calls every case positive
        rule = sensitivity_rule(target_sensitivity)
    sens, spec = rates[i]
    return {"threshold": float(min(1.0, max(0.0, cands[i]))), "rule": rule, "val_sensitivity": sens,
            "val_specificity": spec, "n_val_patients": int(y.size)}


def decide(probs, classes: Sequence[str], operating_point: Mapping[str, Any] | None) -> list[str]:
    """The class called for each row of ``probs`` (N, K): positive when its probability reaches the
    threshold, else the most probable other class; the argmax without an operating point."""
    P = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if not operating_point:
        return [classes[int(k)] for k in P.argmax(axis=1)]
    k = list(classes).index(operating_point["positive"])
    others = P.copy()
    others[:, k] = -np.inf
    fallback = others.argmax(axis=1)
    return [classes[k] if row[k] >= operating_point["threshold"] else classes[int(f)]
            for row, f in zip(P, fallback)]


def check_operating_point(op: Any, classes: Sequence[str]) -> None:
    """ValueError unless ``op`` is a valid ``operating_point`` card entry for ``classes``."""
    if not isinstance(op, Mapping):
        raise ValueError(f"must be an object, got {type(op).__name__}")
    if op.get("positive") not in list(classes):
        raise ValueError(f"positive must be one of the classes {list(classes)}, got {op.get('positive')!r}")
    t = op.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1], got {t!r}")
    rule = op.get("rule")
    if not (rule == RULE_YOUDEN or (isinstance(rule, str) and _SENS_RULE.match(rule))):
        raise ValueError(f"rule must be 'youden' or 'sensitivity>=S' (S in (0, 1]), got {rule!r}")
    for key in ("val_sensitivity", "val_specificity"):
        v = op.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not (math.isfinite(v) and 0.0 <= v <= 1.0)):
            raise ValueError(f"{key} must be a number in [0, 1] or null, got {v!r}")
