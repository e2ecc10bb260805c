"""Auxiliary per-image targets: the ultrasound findings a manifest may carry.

Patient labels are noisy image labels (a reactive lymph node or a benign-looking
nodule of a cancer patient is still labelled MMTN), so on a few thousand images
a CNN learns the findings that matter slowly from them alone.  When the manifest
also annotates what each image shows -- the view, the ACR TI-RADS lexicon of
the shown nodule, the shown lymph node's features and status, as radiologists
annotate clinical data and as ``thyrofast synth`` writes them -- every finding
becomes an extra head on the shared features during training (multi-task
learning).  The heads are dropped at export: the deployed model is unchanged.

A target applies to a row only when its column is non-empty there; nodule
findings are used only for single-nodule patients (``n_nodules == 1``) unless
the row names the shown nodule's own findings, since the manifest's nodule
columns describe the patient's index nodule.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["AuxTask", "AuxTargets", "read_aux_targets", "aux_targets_from_rows", "aux_targets_from_records",
           "TASKS", "finding_problems"]


@dataclasses.dataclass(frozen=True)
class AuxTask:
    name: str
    column: str
    kind: str                      # "binary", "categorical", "log_regression", "regression"
    values: tuple = ()             # categorical levels
    scope: str = "all"             # "all", "node" (lymph-node views), "nodule" (nodule views)
    scale: float = 1.0             # regression targets are divided by this

    @property
    def width(self) -> int:
        return len(self.values) if self.kind == "categorical" else 1


_NODULE = dict(scope="nodule")
_NODE = dict(scope="node")
TASKS: tuple[AuxTask, ...] = (
    AuxTask("view_node", "view", "binary"),
    AuxTask("tirads_points", "shown_tirads_points", "regression", scale=5.0, **_NODULE),
    AuxTask("composition", "composition", "categorical", ("cystic", "spongiform", "mixed", "solid"), **_NODULE),
    AuxTask("echogenicity", "echogenicity", "categorical",
            ("anechoic", "hyperechoic", "isoechoic", "hypoechoic", "very_hypoechoic"), **_NODULE),
    AuxTask("shape", "shape", "categorical", ("wider_than_tall", "taller_than_wide"), **_NODULE),
    AuxTask("margin", "margin", "categorical",
            ("smooth", "ill_defined", "lobulated_irregular", "extrathyroidal_extension"), **_NODULE),
    AuxTask("foci", "foci", "categorical",
            ("none", "comet_tail", "macrocalcification", "peripheral_rim", "punctate"), **_NODULE),
    AuxTask("size", "size_mm", "log_regression", scale=0.5, **_NODULE),
    AuxTask("capsule_contact", "capsule_contact", "binary", **_NODULE),
    AuxTask("node_metastatic", "ln_metastatic", "binary", **_NODE),
    AuxTask("node_short_axis", "ln_short_axis_mm", "log_regression", scale=0.5, **_NODE),
    AuxTask("node_round", "ln_round", "binary", **_NODE),
    AuxTask("node_hilum_absent", "ln_hilum_absent", "binary", **_NODE),
    AuxTask("node_microcalc", "ln_microcalc", "binary", **_NODE),
    AuxTask("node_cystic", "ln_cystic", "binary", **_NODE),
    AuxTask("node_hyperechoic", "ln_hyperechoic", "binary", **_NODE),
)
_INDEX_NODULE_COLUMNS = {"composition", "echogenicity", "shape", "margin", "foci", "size_mm", "capsule_contact"}


@dataclasses.dataclass
class AuxTargets:
    """Targets (N, T) float32 (categorical: the level index) and a validity mask (N, T)."""

    tasks: tuple[AuxTask, ...]
    values: np.ndarray
    mask: np.ndarray

    @property
    def width(self) -> int:
        return sum(t.width for t in self.tasks)

    def take(self, indices: Sequence[int]) -> "AuxTargets":
        idx = np.asarray(indices, dtype=np.int64)
        return AuxTargets(self.tasks, self.values[idx], self.mask[idx])

    def summary(self) -> dict:
        return {t.name: int(self.mask[:, j].sum()) for j, t in enumerate(self.tasks)}


def _parse(task: AuxTask, raw: str) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if task.column == "view":
        return 1.0 if raw == "lymph_node" else 0.0
    if task.kind == "categorical":
        return float(task.values.index(raw)) if raw in task.values else None
    try:
        v = float(raw)
    except ValueError:
        return None
    if not math.isfinite(v):
        return None
    if task.kind == "binary":
        return 1.0 if v >= 0.5 else 0.0
    if task.kind == "log_regression":
        return math.log(v) / task.scale if v > 0 else None
    return v / task.scale


def _accepted(task: AuxTask) -> str:
    if task.column == "view":
        return "lymph_node, or any other view name"
    if task.kind == "categorical":
        return ", ".join(task.values)
    if task.kind == "binary":
        return "0 / 1"
    return "a number" + (" > 0" if task.kind == "log_regression" else "")


def finding_problems(records: Sequence[Any], max_examples: int = 5) -> list[tuple[str, list[str]]]:
    """Why finding annotations of a data set would not train an auxiliary head: ``[(message, items)]``.

    Values outside a finding's accepted vocabulary (e.g. ``echogenicity = hypoechogenicity``; the
    message names the accepted ones), nodule / lymph-node findings without a ``view`` column (they
    apply per view), and index-nodule findings without ``n_nodules`` (used only for single-nodule
    patients).  Empty cells are "not annotated" and never a problem.
    """
    columns = {k for r in records for k in r.extra}
    if any(getattr(r, "view", None) for r in records):
        columns.add("view")
    tasks = [t for t in TASKS if t.column in columns and t.column != "view"]
    out: list[tuple[str, list[str]]] = []
    for t in tasks:
        bad: dict[str, int] = {}
        for r in records:
            raw = (r.extra.get(t.column) or "").strip()
            if raw and _parse(t, raw) is None:
                bad[raw] = bad.get(raw, 0) + 1
        if bad:
            shown = sorted(bad.items(), key=lambda kv: -kv[1])[:max_examples]
            out.append((f"column {t.column!r}: {sum(bad.values())} value(s) outside the accepted vocabulary "
                        f"({_accepted(t)}) are ignored by training",
                        [f"{v!r} ({n} rows)" for v, n in shown]))
    scoped = sorted(t.column for t in tasks if t.scope != "all")
    if scoped and "view" not in columns:
        out.append(("finding columns apply per view (nodule or lymph node) but the manifest has no 'view' column "
                    "(lymph_node for lymph-node images, e.g. transverse / longitudinal for nodule images): they are "
                    "ignored by training", scoped))
    index = sorted(t.column for t in tasks if t.column in _INDEX_NODULE_COLUMNS)
    if index and "n_nodules" not in columns:
        out.append(("nodule finding columns describe the patient's index nodule and are used only on rows with "
                    "n_nodules == 1, but the manifest has no 'n_nodules' column: they are ignored by training", index))
    return out


def read_aux_targets(manifest: str | os.PathLike, n_rows: int) -> AuxTargets | None:
    """Targets for every manifest row (row order = :func:`thyrofast.io.read_manifest`'s).

    Returns None when the manifest has none of the annotation columns, or not ``n_rows`` rows.
    """
    from ..io.manifest import manifest_csv, read_manifest

    path = manifest_csv(manifest)
    records = read_manifest(path) if path is not None else []
    if len(records) != n_rows:
        return None
    return aux_targets_from_records(records)


def aux_targets_from_records(records: Sequence[Any]) -> AuxTargets | None:
    """Targets for :class:`thyrofast.io.Record` s (their ``extra`` columns and ``view``), one row
    per record, so frames expanded from one manifest row share its annotations.

    The view is known when any record names one (else view-scoped tasks are skipped).
    """
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r.extra if k not in columns)
    has_view = any(r.view for r in records)
    if has_view:
        columns.append("view")
    rows = [{**r.extra, "view": r.view or ""} if has_view else r.extra for r in records]
    return aux_targets_from_rows(rows, columns, nodule_findings="index")


def aux_targets_from_rows(rows: Sequence[Mapping[str, str]], columns: Sequence[str], *,
                          nodule_findings: str = "index") -> AuxTargets | None:
    """Targets from annotation rows (string values, "" = not annotated).

    ``nodule_findings``: "index" when the nodule columns describe the patient's
    index nodule (a cohort manifest: used for single-nodule patients only) or
    "shown" when they describe the nodule in the image (a lexicon set).
    Returns None when no row annotates any task.
    """
    if nodule_findings not in ("index", "shown"):
        raise ValueError(f"nodule_findings must be 'index' or 'shown', got {nodule_findings!r}")
    tasks = tuple(t for t in TASKS if t.column in columns)
    if not tasks:
        return None
    n_rows = len(rows)
    vals = np.zeros((n_rows, len(tasks)), np.float32)
    mask = np.zeros((n_rows, len(tasks)), bool)
    has_view = "view" in columns
    for i, row in enumerate(rows):
        is_node = (row.get("view") or "").strip() == "lymph_node" if has_view else None
        single = nodule_findings == "shown" or (row.get("n_nodules") or "").strip() == "1"
        for j, t in enumerate(tasks):
            if t.scope != "all":
                if is_node is None or is_node != (t.scope == "node"):
                    continue
            if t.scope == "nodule" and t.column in _INDEX_NODULE_COLUMNS and not single:
                continue  # the columns describe the index nodule, maybe not the one shown
            v = _parse(t, row.get(t.column, ""))
            if v is not None:
                vals[i, j], mask[i, j] = v, True
    keep = mask.any(axis=0)
    if not keep.any():
        return None
    return AuxTargets(tuple(t for t, k in zip(tasks, keep) if k), vals[:, keep], mask[:, keep])


def aux_loss(pred, values, mask, tasks: Sequence[AuxTask]):
    """Mean over tasks of each task's mean loss over the rows where it applies."""
    import torch.nn.functional as F

    total = pred.new_zeros(())
    n = 0
    col = 0
    for j, t in enumerate(tasks):
        w = t.width
        m = mask[:, j]
        if bool(m.any()):
            p = pred[m, col:col + w]
            y = values[m, j]
            if t.kind == "categorical":
                loss = F.cross_entropy(p, y.long())
            elif t.kind == "binary":
                loss = F.binary_cross_entropy_with_logits(p[:, 0], y)
            else:
                loss = F.smooth_l1_loss(p[:, 0], y)
            total = total + loss
            n += 1
        col += w
    return total / max(n, 1) if n else total + 0.0 * pred.sum()
