"""Reading what the evaluator compares: labels, predictions, readers.

Formats are those of docs/contracts.md: the cohort manifest (CSV), the
prediction records of ``thyrofast predict`` (JSONL or CSV) and readers.csv.
Every problem with a file is an :class:`~thyrofast.errors.InputError`.
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io.frame import hash_patient_id
from ..io.manifest import read_manifest
from ..io.schema import DEFAULT_CLASSES, label_index

#: The preset class order (docs/contracts.md); an evaluation uses the bundle's / predictions' classes
#: (:func:`using_classes`, read back with :func:`classes`).
CLASSES: tuple[str, ...] = DEFAULT_CLASSES
_ACTIVE: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("thyrofast_eval_classes",
                                                                          default=DEFAULT_CLASSES)


def classes() -> tuple[str, ...]:
    """The class order of the evaluation in progress (the preset unless :func:`using_classes` set one)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using_classes(names: Sequence[str] | None):
    """Evaluate with the class list ``names`` (a bundle's, or the prediction records') inside the block."""
    token = _ACTIVE.set(tuple(names) if names else DEFAULT_CLASSES)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def with_result_classes(fn):
    """Decorator: run ``fn(result, ...)`` with the evaluation's class list (``result["classes"]``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(result, *args, **kwargs):
        with using_classes(result.get("classes") if hasattr(result, "get") else None):
            return fn(result, *args, **kwargs)
    return wrapper


def record_classes(records: Sequence[Mapping]) -> tuple[str, ...] | None:
    """The class names of prediction records (the ``probs`` keys of the first record that has them)."""
    for r in records:
        probs = r.get("probs")
        if isinstance(probs, Mapping) and len(probs) >= 2:
            names = tuple(str(k) for k in probs)
            return DEFAULT_CLASSES if set(names) == set(DEFAULT_CLASSES) else names
    return None


@dataclass
class Labels:
    """The labelled images of a manifest (one split, if asked)."""

    path: list[str]  # absolute, normalized
    rel: list[str]  # as written in the manifest (posix separators)
    patient: list[str]
    label: np.ndarray  # int, index into CLASSES
    frame_index: list[int | None]
    patient_label: dict[str, int]
    bayes: dict[str, np.ndarray] | None  # patient -> (K,) posterior
    source: str
    split: str | None


@dataclass
class Table:
    """Per-case probabilities with labels (images or patients)."""

    ids: list[str]  # patient id per row
    y: np.ndarray  # (N,) int labels
    probs: np.ndarray  # (N, K)
    keys: list[str] = field(default_factory=list)  # image key per row (image level)


def _read_csv(path: str | os.PathLike, what: str) -> tuple[list[str], list[dict]]:
    p = Path(path)
    if not p.is_file():
        raise InputError("unreadable", f"{what} not found", source=str(p))
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("unreadable", f"cannot read {what}: {exc}", source=str(p)) from None
    return fields, rows


def _label_index(value: str, where: str, source: str) -> int:
    try:
        return label_index(value, classes())
    except ValueError as exc:
        raise InputError("bad_manifest", f"{where}: {exc}", source=source) from None


def load_labels(manifest: str | os.PathLike, split: str | None = None) -> Labels:
    """Read a cohort manifest (:func:`thyrofast.io.read_manifest`); keep the rows of ``split`` when given.

    A row without ``frame_index`` stands for every frame of its file (``frame_index`` None).
    """
    source = str(manifest)
    if not Path(manifest).is_file():
        raise InputError("unreadable", "labels manifest not found", source=source)
    records = read_manifest(manifest, classes=classes())
    if split is not None:
        if all(r.split is None for r in records):
            raise InputError("bad_split", f"split {split!r} asked but the manifest has no split column "
                             "(or it is empty)", source=source)
        records = [r for r in records if r.split == split]
        if not records:
            raise InputError("bad_split", f"no rows with split == {split!r}", source=source)
    bayes_cols = [f"bayes_{c}" for c in classes()]
    has_bayes = all(c in records[0].extra for c in bayes_cols)
    patient_label: dict[str, int] = {}
    bayes: dict[str, np.ndarray] = {}
    for r in records:
        pid, lab = r.patient_id, r.label
        if patient_label.setdefault(pid, lab) != lab:
            raise InputError("bad_manifest", f"patient {hash_patient_id(pid)} has two labels", source=source)
        if has_bayes and pid not in bayes:
            try:
                bayes[pid] = np.array([float(r.extra[c]) for c in bayes_cols])
            except (TypeError, ValueError):
                raise InputError("bad_manifest", f"{os.path.basename(r.path)}: bayes_* must be numbers",
                                 source=source) from None
    return Labels([r.path for r in records], [r.rel if r.rel is not None else r.path for r in records],
                  [r.patient_id for r in records], np.asarray([r.label for r in records], dtype=np.int64),
                  [r.frame_index for r in records], patient_label, bayes if has_bayes else None, source, split)


# ----------------------------------------------------------------------------
# prediction records


def _records_from_csv(path: Path) -> list[dict]:
    fields, rows = _read_csv(path, "predictions")
    cols = [k for k in fields if k and k.startswith("prob_")]  # the bundle's classes, in its order
    out = []
    for r in rows:
        rec = {k: v for k, v in r.items() if not (k or "").startswith("prob_")}
        if cols and all((r.get(k) or "") != "" for k in cols):
            rec["probs"] = {k[5:]: r[k] for k in cols}
        fi = (r.get("frame_index") or "").strip()
        rec["frame_index"] = int(fi) if fi.lstrip("-").isdigit() else 0
        pane = (r.get("pane") or "").strip()  # predict's pane column (crop="panes"); empty otherwise
        rec["pane"] = int(pane) if pane.isdigit() else None
        rec.setdefault("kind", "image")
        rec.setdefault("status", "ok" if "probs" in rec else "error")
        out.append(rec)
    return out


def load_records(predictions) -> list[dict]:
    """Prediction records from a JSONL/CSV file, or an iterable of dicts."""
    if isinstance(predictions, (str, os.PathLike)):
        p = Path(predictions)
        if not p.is_file():
            raise InputError("unreadable", "predictions file not found", source=str(p))
        if p.suffix.lower() == ".csv":
            return _records_from_csv(p)
        out = []
        try:
            with open(p, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("unreadable", f"cannot read predictions: {exc}", source=str(p)) from None
        last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == last:  # a torn last line from an interrupted run: ignore it
                    break
                raise InputError("unreadable", f"line {n + 1} is not JSON", source=str(p)) from None
            if not isinstance(rec, dict):
                raise InputError("unreadable", f"line {n + 1} is not a JSON object", source=str(p))
            out.append(rec)
        return out
    if isinstance(predictions, Mapping):
        raise TypeError("predictions must be a path or an iterable of record dicts, not one dict")
    recs = list(predictions)
    if not all(isinstance(r, Mapping) for r in recs):
        raise TypeError("prediction records must be dicts")
    return [dict(r) for r in recs]


def _probs_of(rec: Mapping, source: str) -> np.ndarray:
    probs = rec.get("probs")
    if not isinstance(probs, Mapping) or not all(c in probs for c in classes()):
        raise InputError("unreadable", f"record for {rec.get('input')!r} lacks probs for {classes()}",
                         source=source)
    try:
        v = np.array([float(probs[c]) for c in classes()])
    except (TypeError, ValueError):
        raise InputError("unreadable", f"non-numeric probs in record for {rec.get('input')!r}",
                         source=source) from None
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise InputError("unreadable", f"invalid probs {v.tolist()} for {rec.get('input')!r}", source=source)
    s = v.sum()
    return v / s if s > 0 else np.full(len(classes()), 1.0 / len(classes()))


class _PathMatcher:
    """Finds the manifest row of a prediction's ``input`` path.

    Exact match on the absolute path first; otherwise the manifest path
    (as written, relative) must be a trailing part of the input path, so
    predictions run from another working directory still match.
    """

    def __init__(self, labels: Labels):
        self.by_abs: dict[str, int] = {}
        self.by_name: dict[str, list[int]] = {}
        for i, (a, r) in enumerate(zip(labels.path, labels.rel)):
            self.by_abs.setdefault(a, i)
            self.by_name.setdefault(Path(r).name, []).append(i)
        self.rel_parts = [tuple(p for p in r.split("/") if p not in ("", ".")) for r in labels.rel]

    def __call__(self, inp: str) -> int | None:
        if not inp:
            return None
        i = self.by_abs.get(os.path.normpath(os.path.abspath(inp)))
        if i is not None:
            return i
        parts = tuple(p for p in inp.replace("\\", "/").split("/") if p not in ("", "."))
        best = [j for j in self.by_name.get(parts[-1] if parts else "", [])
                if parts[-len(self.rel_parts[j]):] == self.rel_parts[j]]
        # several rows may share a file (one per frame): all have one patient
        return best[0] if best else None


def image_table(records: Sequence[Mapping], labels: Labels, source: str = "predictions") -> tuple[Table, dict]:
    """Image-level table: one row per ok image record matched to the manifest."""
    match = _PathMatcher(labels)
    ids, ys, probs, keys = [], [], [], []
    stats = {"records": len(records), "errors": 0, "unmatched": 0, "duplicates": 0, "patient_records": 0}
    unmatched_examples: list[str] = []
    seen: set[str] = set()
    for rec in records:
        kind = rec.get("kind", "image")
        if kind == "patient":
            stats["patient_records"] += 1
            continue
        if rec.get("status", "ok") != "ok":
            stats["errors"] += 1
            continue
        inp = str(rec.get("input") or "")
        i = match(inp)
        if i is None:
            stats["unmatched"] += 1
            if len(unmatched_examples) < 3:
                unmatched_examples.append(inp)
            continue
        key = f"{labels.path[i]}#{int(rec.get('frame_index') or 0)}"
        if rec.get("pane") is not None:  # one B-mode pane of a split screen (crop="panes"): its own image
            key += f"/{int(rec['pane'])}"
        if key in seen:  # e.g. a resumed run that wrote a record twice
            stats["duplicates"] += 1
            continue
        seen.add(key)
        ids.append(labels.patient[i])
        ys.append(labels.label[i])
        probs.append(_probs_of(rec, source))
        keys.append(key)
    stats["unmatched_examples"] = unmatched_examples
    if not ids:
        raise InputError("empty", "no prediction record matches an image of the labels manifest "
                         f"({stats['unmatched']} unmatched, {stats['errors']} errors; "
                         f"e.g. {unmatched_examples[:1]})", source=source)
    return Table(ids, np.asarray(ys, dtype=np.int64), np.vstack(probs), keys), stats


def patient_records_table(records: Sequence[Mapping], labels: Labels, source: str = "predictions") -> Table:
    """Patient-level table from ``kind == "patient"`` records (raw patient ids)."""
    ids, ys, probs = [], [], []
    for rec in records:
        if rec.get("kind") != "patient" or rec.get("status", "ok") != "ok":
            continue
        pid = str(rec.get("patient_id"))
        if pid in labels.patient_label and pid not in ids:
            ids.append(pid)
            ys.append(labels.patient_label[pid])
            probs.append(_probs_of(rec, source))
    if not ids:
        raise InputError("empty", "no patient record matches a patient of the labels manifest "
                         "(patient ids in predictions may be hashed: keep the image records)", source=source)
    return Table(ids, np.asarray(ys, dtype=np.int64), np.vstack(probs))


def aggregate_patients(table: Table, aggregation: Any = "mean_log_prob") -> Table:
    """Per-patient probabilities by an aggregation rule (:mod:`thyrofast.aggregation`).

    Default: ``p_patient ∝ exp(mean_i log p_i)`` (a normalized geometric mean),
    so one confident image does not outvote many, and a patient with one image
    keeps its probabilities.  Patients come out sorted by id.
    """
    from ..aggregation import aggregate

    ids = [str(p) for p in table.ids]
    agg = aggregate(table.probs, ids, aggregation)
    label = dict(zip(ids, table.y))
    order = sorted(agg)
    P = np.vstack([agg[p][0] for p in order]) if order else np.zeros((0, table.probs.shape[1]))
    y = np.array([label[p] for p in order], dtype=np.int64)
    return Table(order, y, P)


# ----------------------------------------------------------------------------
# readers


@dataclass
class Reader:
    name: str
    calls: dict[str, int]  # patient -> class index
    scores: dict[str, np.ndarray]  # patient -> (K,)


def load_readers(path: str | os.PathLike) -> dict[str, Reader]:
    """readers.csv -> {reader name: Reader} (one row per reader and patient)."""
    source = str(path)
    fields, rows = _read_csv(path, "readers CSV")
    need = ["reader", "patient_id", "call"] + [f"score_{c}" for c in classes()]
    missing = [c for c in need if c not in fields]
    if missing:
        raise InputError("bad_manifest", f"readers CSV lacks column(s) {missing}", source=source)
    out: dict[str, Reader] = {}
    for i, r in enumerate(rows, start=2):
        name = (r["reader"] or "").strip()
        pid = (r["patient_id"] or "").strip()
        if not name or not pid:
            raise InputError("bad_manifest", f"line {i}: empty reader or patient_id", source=source)
        call = _label_index(r["call"], f"line {i}", source)
        try:
            sc = np.array([float(r[f"score_{c}"]) for c in classes()])
        except (TypeError, ValueError):
            raise InputError("bad_manifest", f"line {i}: scores must be numbers", source=source) from None
        if not np.all(np.isfinite(sc)):
            raise InputError("bad_manifest", f"line {i}: scores must be finite", source=source)
        rd = out.setdefault(name, Reader(name, {}, {}))
        if pid in rd.calls:
            raise InputError("bad_manifest", f"line {i}: reader {name!r} rates patient {pid!r} twice",
                             source=source)
        rd.calls[pid] = call
        rd.scores[pid] = sc
    if not out:
        raise InputError("empty", "readers CSV has no rows", source=source)
    return out


def reader_order(names: Iterable[str]) -> list[str]:
    """junior, senior first (the paper's order), then the others alphabetically."""
    names = list(names)
    first = [n for n in ("junior", "senior") if n in names]
    return first + sorted(n for n in names if n not in first)

