"""Patient-level, class-stratified, seeded splits and k-fold (no patient in two sets).

A patient's stratum is their most severe label (BTN < NMTN < MMTN), so a
patient with a benign and a malignant nodule is balanced as malignant.
Results depend only on the set of (patient, label, given split) triples and the
seed, not on record order.

This is the one split assignment of the package: :func:`split_patients` and
``thyrofast train`` (manifest splits kept, validation carved from training
patients) both go through :func:`assign_splits`.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .frame import hash_patient_id
from .schema import SPLITS

if TYPE_CHECKING:  # records are duck-typed here (patient_id, label, split, replace): no import cycle
    from .manifest import Record

__all__ = ["split_patients", "assign_splits", "kfold_patients", "check_split", "patient_labels"]


def patient_labels(records: Iterable[Record]) -> dict[str, int]:
    """patient id -> stratum (the patient's highest label index)."""
    out: dict[str, int] = {}
    for r in records:
        out[r.patient_id] = max(out.get(r.patient_id, -1), r.label)
    return out


def check_split(records: Iterable[Record], *, source: str | None = None) -> None:
    """``InputError('bad_split')`` when a patient appears in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.split is not None:
            seen[r.patient_id].add(r.split)
    leaks = {p: s for p, s in seen.items() if len(s) > 1}
    if leaks:
        p, s = next(iter(sorted(leaks.items())))
        raise InputError("bad_split", f"{len(leaks)} patient(s) are in more than one split, e.g. "
                         f"{hash_patient_id(p)} in {sorted(s)}; splits must be by patient", source=source)


def _fractions(fractions) -> dict[str, float]:
    if isinstance(fractions, Mapping):
        fr = {str(k): float(v) for k, v in fractions.items()}
        bad = set(fr) - set(SPLITS)
        if bad:
            raise ValueError(f"split names must be among {SPLITS}, got {sorted(bad)}")
    else:
        vals = [float(v) for v in fractions]
        names = {2: ("train", "test"), 3: SPLITS}.get(len(vals))
        if names is None:
            raise ValueError("fractions must be (train, test), (train, val, test) or a dict")
        fr = dict(zip(names, vals))
    if any(not np.isfinite(v) or v < 0 for v in fr.values()) or sum(fr.values()) <= 0:
        raise ValueError(f"fractions must be non-negative and not all zero, got {fr}")
    total = sum(fr.values())
    return {k: v / total for k, v in fr.items()}


def _allocate(n: int, fr: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n * fractions."""
    raw = {k: n * v for k, v in fr.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(fr).index(k)))[:rest]:
        counts[k] += 1
    return counts


def _strata(records: Sequence[Record], stratify: bool) -> dict[int, list[str]]:
    labels = patient_labels(records)
    strata: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(labels):  # sorted: independent of record order
        strata[labels[pid] if stratify else 0].append(pid)
    return dict(sorted(strata.items()))


def assign_splits(records: Iterable[Record], fractions=(0.7, 0.15, 0.15), *, seed: int = 0,
                  stratify: bool = True, keep: bool = False, val_fraction: float | None = None) -> list[Record]:
    """Records with ``split`` set, every patient in exactly one split.

    ``fractions``: ``(train, val, test)``, ``(train, test)`` or a dict; the
    patients are dealt by them, per stratum (seeded).
    ``keep``: patients whose records already name a split keep it (a patient
    in two splits is ``InputError('bad_split')``); only the others are dealt.
    ``val_fraction``: when, after that, no patient is in ``val``, this share
    of the training patients of each stratum (at least one, and at least one
    left, when a stratum has two or more) becomes validation; seeded by
    ``seed``.  ``thyrofast train`` uses ``keep=True, val_fraction=...`` on
    records whose missing split means training.
    """
    records = list(records)
    if not records:
        raise InputError("empty", "no records to split")
    fr = _fractions(fractions)
    where: dict[str, str] = {}
    if keep:
        check_split(records)
        where = {r.patient_id: r.split for r in records if r.split is not None}
    todo = [r for r in records if r.patient_id not in where]
    if todo:
        rng = np.random.default_rng(seed)
        for _, pids in _strata(todo, stratify).items():
            order = [pids[i] for i in rng.permutation(len(pids))]
            start = 0
            for name, c in _allocate(len(order), fr).items():
                for pid in order[start:start + c]:
                    where[pid] = name
                start += c
        empty = [k for k, v in fr.items() if v > 0 and k not in set(where.values())]
        if empty:
            raise InputError("bad_split", f"{len(where)} patient(s) are too few for a non-empty {empty[0]} split")
    if val_fraction is not None and "val" not in where.values():
        _carve_val(where, patient_labels(records), val_fraction, seed, stratify)
    return [r if r.split == where[r.patient_id] else r.replace(split=where[r.patient_id]) for r in records]


def _carve_val(where: dict[str, str], labels: Mapping[str, int], val_fraction: float, seed: int,
               stratify: bool) -> None:
    """Move a seeded ``val_fraction`` of each stratum's training patients to ``val`` (in place)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    strata: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(where):  # sorted: independent of record order
        if where[pid] == "train":
            strata[labels[pid] if stratify else 0].append(pid)
    for _, pats in sorted(strata.items()):
        n_val = int(round(len(pats) * val_fraction))
        n_val = min(max(n_val, 1), len(pats) - 1) if len(pats) >= 2 else 0  # keep >= 1 on each side
        for p in rng.permutation(pats)[:n_val]:
            where[str(p)] = "val"


def split_patients(records: Iterable[Record], fractions=(0.7, 0.15, 0.15), *, seed: int = 0,
                   stratify: bool = True) -> tuple[list[Record], ...]:
    """Split by patient, stratified by class; returns one record list per split, in order.

    ``fractions``: ``(train, val, test)``, ``(train, test)`` or a dict.
    """
    fr = _fractions(fractions)
    assigned = assign_splits(records, fr, seed=seed, stratify=stratify)
    return tuple([r for r in assigned if r.split == name] for name in fr)


def kfold_patients(records: Iterable[Record], k: int = 5, *, seed: int = 0,
                   stratify: bool = True) -> list[tuple[list[Record], list[Record]]]:
    """k folds by patient (class-stratified): ``[(train, val), ...]``, every patient in one val fold."""
    records = list(records)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    n_pat = len(patient_labels(records))
    if n_pat < k:
        raise InputError("bad_split", f"{n_pat} patient(s) cannot make {k} folds")
    rng = np.random.default_rng(seed)
    fold: dict[str, int] = {}
    nxt = 0  # continue dealing across classes so fold sizes stay within one patient
    for _, pids in _strata(records, stratify).items():
        for i in rng.permutation(len(pids)):
            fold[pids[i]] = nxt % k
            nxt += 1
    out = []
    for f in range(k):
        train = [r.replace(split="train") for r in records if fold[r.patient_id] != f]
        val = [r.replace(split="val") for r in records if fold[r.patient_id] == f]
        out.append((train, val))
    return out
