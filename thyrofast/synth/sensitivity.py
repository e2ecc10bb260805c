"""Sensitivity of the Bayes reference to the generator's unsourced knobs (no pixels, no training).

The appearance mixing weights (``SUSPICIOUS_APPEARANCE``), the number of imaged
lymph nodes (``NODE_COUNT``) and the metastatic share of an MMTN patient's nodes
(``METASTATIC_SHARE``) are modelling choices (docs/synth.md).  ``bayes_under``
redraws patients from a generator with other values and scores them with that
generator's own Bayes posterior, so it shows how far the task's ceiling (and the
share of it carried by the node view) rests on each choice.
``python -m thyrofast.synth.sensitivity`` prints the table docs/synth.md holds.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import numpy as np

from . import features as F

KNOBS = ("SUSPICIOUS_APPEARANCE", "NODE_COUNT", "METASTATIC_SHARE")


@contextlib.contextmanager
def generator_with(**changes) -> Iterator[None]:
    """The generator (sampling and posterior alike) with some knobs changed, restored on exit.

    ``changes``: ``SUSPICIOUS_APPEARANCE={...}``, ``NODE_COUNT={...}``, ``METASTATIC_SHARE={...}``
    (per class; a class left out keeps its value).  Edits the dicts in place: not thread-safe.
    """
    unknown = set(changes) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown knobs {sorted(unknown)}; choose from {KNOBS}")
    saved = {k: copy.deepcopy(getattr(F, k)) for k in changes}
    try:
        for k, v in changes.items():
            getattr(F, k).update(v)
            if k == "NODE_COUNT":
                for c, dist in v.items():  # a replaced distribution, not merged counts
                    getattr(F, k)[c] = dict(dist)
        yield
    finally:
        for k, v in saved.items():
            d = getattr(F, k)
            d.clear()
            d.update(v)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from ..metrics import roc_auc

    return float(roc_auc(y.astype(int), s)) if 0 < y.sum() < y.size else float("nan")


def bayes_under(n: int = 20000, seed: int = 4242, **changes) -> dict:
    """Population Bayes metrics of ``n`` paper-prior patients drawn from the changed generator.

    Returns macro-AUC, per-class AUC, accuracy and balanced accuracy overall and for patients with
    and without an imaged lymph node, plus the MMTN-vs-rest AUC of the imaged-node count alone.
    """
    prior = F.PAPER_PRIOR
    with generator_with(**changes):
        rng = np.random.default_rng(seed)
        labels = rng.choice(3, size=n, p=[prior[c] for c in F.CLASSES])
        pats = [F.sample_patient(rng, F.CLASSES[k]) for k in labels]
        P = np.array([[F.posterior(p, prior)[c] for c in F.CLASSES] for p in pats])
    y = labels
    nodes = np.array([len(p.nodes) for p in pats])

    def block(m: np.ndarray) -> dict:
        yy, PP = y[m], P[m]
        aucs = {c: _auc(yy == k, PP[:, k]) for k, c in enumerate(F.CLASSES)}
        pred = PP.argmax(1)
        rec = [float(np.mean(pred[yy == k] == k)) for k in range(3) if (yy == k).any()]
        return {"n": int(m.sum()), "macro_auc": float(np.nanmean(list(aucs.values()))), "auc": aucs,
                "accuracy": float(np.mean(pred == yy)), "balanced_accuracy": float(np.mean(rec))}

    return {"changes": changes, "all": block(np.ones(n, bool)), "node_view": block(nodes > 0),
            "no_node_view": block(nodes == 0),
            "node_count_only_mmtn_auc": _auc(y == 2, nodes.astype(float)),
            "share_with_node_view": {c: float(np.mean(nodes[y == k] > 0)) for k, c in enumerate(F.CLASSES)}}


def scenarios() -> list[tuple[str, dict]]:
    """The grid docs/synth.md reports: each knob moved alone around the preset."""
    base_mmtn_nodes = dict(F.NODE_COUNT["MMTN"])
    return [
        ("preset (0.24 / 0.68; nodes as in the table; metastatic share 0.9)", {}),
        ("P(suspicious) BTN 0.14", {"SUSPICIOUS_APPEARANCE": {"BTN": 0.14}}),
        ("P(suspicious) BTN 0.34", {"SUSPICIOUS_APPEARANCE": {"BTN": 0.34}}),
        ("P(suspicious) NMTN/MMTN 0.58", {"SUSPICIOUS_APPEARANCE": {"NMTN": 0.58, "MMTN": 0.58}}),
        ("P(suspicious) NMTN/MMTN 0.78", {"SUSPICIOUS_APPEARANCE": {"NMTN": 0.78, "MMTN": 0.78}}),
        ("node count class-independent (all classes as BTN)",
         {"NODE_COUNT": {"MMTN": dict(F.NODE_COUNT["BTN"])}}),
        ("MMTN node count halfway to BTN's",
         {"NODE_COUNT": {"MMTN": {k: 0.5 * base_mmtn_nodes.get(k, 0) + 0.5 * F.NODE_COUNT["BTN"].get(k, 0)
                                  for k in (0, 1, 2, 3)}}}),
        ("metastatic share 0.7", {"METASTATIC_SHARE": {"MMTN": 0.7}}),
        ("metastatic share 0.5", {"METASTATIC_SHARE": {"MMTN": 0.5}}),
    ]


def table(n: int = 20000, seed: int = 4242) -> str:
    rows = ["| scenario | macro-AUC | AUC BTN / NMTN / MMTN | accuracy | balanced acc. | with node view: "
            "macro-AUC / acc. (patients) | without: macro-AUC / acc. (patients) | node count alone, MMTN AUC |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, ch in scenarios():
        r = bayes_under(n, seed, **ch)
        a, nv, nn = r["all"], r["node_view"], r["no_node_view"]
        rows.append(f"| {name} | {a['macro_auc']:.3f} | " + " / ".join(f"{a['auc'][c]:.3f}" for c in F.CLASSES)
                    + f" | {a['accuracy']:.3f} | {a['balanced_accuracy']:.3f} | {nv['macro_auc']:.3f} / "
                    f"{nv['accuracy']:.3f} ({nv['n']}) | {nn['macro_auc']:.3f} / {nn['accuracy']:.3f} ({nn['n']}) | "
                    f"{r['node_count_only_mmtn_auc']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(table())
