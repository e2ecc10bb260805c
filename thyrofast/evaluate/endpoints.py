"""Named binary endpoints over a model's classes: ``malignant = NMTN + MMTN``.

A multi-class model often answers a binary clinical question: is it malignant?
An endpoint names that question: a set of *member* classes whose
probabilities add up to the endpoint's probability (the classes are mutually
exclusive, so the sum is the probability of the union).  ``evaluate`` reports
per endpoint the AUC of that probability (DeLong CI) and the sensitivity /
specificity (Wilson CIs) of the calls: a case counts as called positive when
its call (the class at the bundle's operating point, else the argmax) is a
member.

NumPy only; the spelling is ``NAME=CLASS+CLASS`` (class names as the model's,
case-insensitive).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import metrics as M

__all__ = ["parse_endpoint", "parse_endpoints", "endpoint_metrics"]


def parse_endpoint(text: str, classes: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """``"malignant=NMTN+MMTN"`` -> ``("malignant", ("NMTN", "MMTN"))`` in the model's spelling and order;
    ValueError naming the problem (unknown class, empty, every class)."""
    name, sep, rhs = str(text).partition("=")
    name = name.strip()
    if not sep or not name or not rhs.strip():
        raise ValueError(f"endpoint {text!r}: write NAME=CLASS+CLASS, e.g. malignant=NMTN+MMTN")
    folded = {c.casefold(): c for c in classes}
    members = []
    for part in rhs.split("+"):
        c = folded.get(part.strip().casefold())
        if c is None:
            raise ValueError(f"endpoint {name!r}: {part.strip()!r} is not one of the classes ({', '.join(classes)})")
        if c not in members:
            members.append(c)
    if len(members) == len(classes):
        raise ValueError(f"endpoint {name!r} holds every class: it has no negative cases")
    return name, tuple(c for c in classes if c in members)


def parse_endpoints(specs: Iterable[str] | Mapping[str, Sequence[str]] | None,
                    classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Endpoints from ``NAME=A+B`` strings or a ``{name: [classes]}`` mapping (checked against ``classes``)."""
    if not specs:
        return {}
    if isinstance(specs, Mapping):
        specs = [f"{k}={'+'.join(v)}" for k, v in specs.items()]
    elif isinstance(specs, str):
        specs = [specs]
    out: dict[str, tuple[str, ...]] = {}
    for s in specs:
        name, members = parse_endpoint(s, classes)
        if name in out:
            raise ValueError(f"endpoint {name!r} is given twice")
        out[name] = members
    return out


def endpoint_metrics(y: np.ndarray, probs: np.ndarray, calls: np.ndarray, classes: Sequence[str],
                     members: Sequence[str], level: float = 0.95) -> dict:
    """One endpoint on ``N`` cases: ``y`` true class indices, ``probs`` (N, K), ``calls`` class indices.

    Returns ``{members, n_pos, n_neg, auc: {value, ci, ci_method}, sensitivity, specificity}``
    (each rate ``{value, ci, k, n}``; nan without cases)."""
    y = np.asarray(y, dtype=np.int64)
    P = np.asarray(probs, dtype=np.float64)
    idx = [list(classes).index(c) for c in members]
    truth = np.isin(y, idx)
    called = np.isin(np.asarray(calls, dtype=np.int64), idx)
    score = P[:, idx].sum(axis=1)
    a, lo, hi = M.delong_ci(truth, score, level)
    out = {"members": list(members), "n_pos": int(truth.sum()), "n_neg": int((~truth).sum()),
           "auc": {"value": a, "ci": (lo, hi), "ci_method": "delong"}}
    for key, mask, want in (("sensitivity", truth, True), ("specificity", ~truth, False)):
        n = int(mask.sum())
        k = int((called[mask] == want).sum())
        if n:
            clo, chi = M.wilson_ci(k, n, level)
            out[key] = {"value": k / n, "ci": (float(clo), float(chi)), "k": k, "n": n}
        else:
            out[key] = {"value": math.nan, "ci": (math.nan, math.nan), "k": 0, "n": 0}
    return out
