"""Synthetic cohorts: presets, the patient/image plan, and atomic, resumable generation.

The *plan* (classes, splits, latent features, image list, Bayes posteriors,
reader calls) is cheap and computed without rendering; ``generate_cohort``
renders the images in worker processes.  Every random draw comes from a
``SeedSequence`` keyed by (seed, purpose, patient, image), so the output is
byte-identical for any number of workers and a resumed run equals a fresh one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._fs import atomic_write_bytes  # fsync=False: a half-made cohort is regenerated
from . import features as F
from . import readers as R

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Preset:
    name: str
    counts: dict  # patients per class
    test: dict  # test patients per class
    images: int  # total images


PRESETS = {
    # Zhao et al. 2025: 195 patients, 3,537 images; train 50/11/100, test 10/4/20
    "paper": Preset("paper", dict(F.PAPER_COUNTS), {"BTN": 10, "NMTN": 4, "MMTN": 20}, 3537),
}


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    raw = weights / weights.sum() * total
    out = np.floor(raw).astype(int)
    rest = total - out.sum()
    order = np.argsort(-(raw - out), kind="stable")
    out[order[:rest]] += 1
    return out


#: Upper bound on --patients: about 1.8 million images (some 260 GB of PNGs), far past any study.
MAX_PATIENTS = 100_000


def scaled_counts(preset: Preset, patients: int | None) -> tuple[dict, dict, int]:
    """Class counts, test counts and total images for ``patients`` (default: the preset's)."""
    if patients is None:
        return dict(preset.counts), dict(preset.test), preset.images
    if not isinstance(patients, (int, np.integer)) or isinstance(patients, bool) or patients < 3:
        raise ValueError(f"patients must be an integer >= 3 (one per class), got {patients!r}")
    if patients > MAX_PATIENTS:
        per = preset.images / sum(preset.counts.values())
        raise ValueError(f"patients must be <= {MAX_PATIENTS:,} (that is about {MAX_PATIENTS * per:,.0f} images); "
                         f"got {patients:,}")
    base = np.array([preset.counts[c] for c in F.CLASSES], float)
    counts = _largest_remainder(base, int(patients))
    counts = np.maximum(counts, 1)
    while counts.sum() > patients:  # the max(.,1) may have overshot: trim the largest class
        counts[np.argmax(counts)] -= 1
    test = {}
    for c, n in zip(F.CLASSES, counts):
        frac = preset.test[c] / preset.counts[c]
        test[c] = int(min(max(round(n * frac), 1 if n >= 2 else 0), n - 1 if n >= 2 else 0))
    images = int(round(preset.images * patients / sum(preset.counts.values())))
    return {c: int(n) for c, n in zip(F.CLASSES, counts)}, test, images


def seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The random stream of one part of cohort ``seed`` (``key``: what it draws, and for whom)."""
    return np.random.SeedSequence([int(seed), *key])


@dataclass
class ImageSpec:
    index: int
    view: str
    target: int  # nodule index (thyroid views) or node index (lymph_node)


@dataclass
class PatientPlan:
    index: int
    patient_id: str
    label: str
    split: str
    patient: F.Patient
    images: list[ImageSpec]
    bayes: dict = field(default_factory=dict)


def patient_id_for(seed: int, index: int) -> str:
    return "syn" + hashlib.sha256(f"thyrofast-synth:{seed}:{index}".encode()).hexdigest()[:10]


def _image_list(rng: np.random.Generator, p: F.Patient, n_images: int) -> list[ImageSpec]:
    specs: list[tuple[str, int]] = []
    for k in range(len(p.nodules)):
        specs += [("transverse", k), ("longitudinal", k)]
    specs += [("lymph_node", k) for k in range(len(p.nodes))]
    specs = specs[:n_images]
    ln_share = rng.uniform(0.2, 0.35) if p.nodes else 0.0
    weights = np.array([2.0] + [1.0] * (len(p.nodules) - 1))
    order = sorted(range(len(p.nodules)), key=lambda i: -p.nodules[i].tirads_points)  # index nodule first
    while len(specs) < n_images:
        if p.nodes and rng.random() < ln_share:
            specs.append(("lymph_node", int(rng.integers(0, len(p.nodes)))))
        else:
            k = order[int(rng.choice(len(order), p=weights / weights.sum()))]
            specs.append(("transverse" if rng.random() < 0.55 else "longitudinal", k))
    perm = rng.permutation(len(specs))  # acquisition order is not tidy in real exams
    return [ImageSpec(i, specs[j][0], specs[j][1]) for i, j in enumerate(perm)]


def plan_cohort(preset: str | Preset = "paper", seed: int = 0, patients: int | None = None) -> list[PatientPlan]:
    """Everything about a cohort except the pixels (fast: no rendering)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    counts, test, total_images = scaled_counts(preset, patients)
    n = sum(counts.values())
    rng = np.random.default_rng(seed_sequence(seed, 0))
    labels = np.array(sum(([c] * counts[c] for c in F.CLASSES), []))
    labels = labels[rng.permutation(n)]
    split = np.array(["train"] * n, dtype=object)
    for c in F.CLASSES:
        idx = np.flatnonzero(labels == c)
        split[rng.choice(idx, size=test[c], replace=False)] = "test"
    prior = {c: counts[c] / n for c in F.CLASSES}
    pats = [F.sample_patient(np.random.default_rng(seed_sequence(seed, 1, i)), str(labels[i])) for i in range(n)]
    # images per patient: a minimum (each nodule in two planes, each node once) plus a
    # class-independent share of the rest
    minimum = np.array([2 * len(p.nodules) + len(p.nodes) for p in pats])
    w = rng.gamma(4.0, 1.0, size=n)
    extra = _largest_remainder(w, max(total_images - int(minimum.sum()), 0))
    plans = []
    for i, p in enumerate(pats):
        img_rng = np.random.default_rng(seed_sequence(seed, 4, i))
        plans.append(PatientPlan(i, patient_id_for(seed, i), p.label, str(split[i]), p,
                                 _image_list(img_rng, p, int(minimum[i] + extra[i])), F.posterior(p, prior)))
    return plans


# ------------------------------------------------------------------ tables


def csv_value(v):
    """A manifest/readers CSV cell: booleans as 0/1, floats to 6 significant digits."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def patient_row(pl: PatientPlan) -> dict:
    p = pl.patient
    nd = p.index_nodule
    row = {
        "composition": nd.composition, "echogenicity": nd.echogenicity, "shape": nd.shape,
        "margin": nd.margin, "foci": nd.foci, "size_mm": round(nd.size_mm, 2),
        "capsule_contact": nd.capsule_contact, "tirads_points": nd.tirads_points, "tirads_level": nd.tirads_level,
        "n_nodules": len(p.nodules), "multifocal": p.multifocal, "n_lymph_nodes": len(p.nodes),
        "n_metastatic_nodes": sum(x.metastatic for x in p.nodes),
    }
    row.update({f"bayes_{c}": round(pl.bayes[c], 6) for c in F.CLASSES})
    return row


def node_findings(x: F.LymphNode) -> dict:
    """A lymph node's manifest columns (raw values)."""
    return {"ln_short_axis_mm": x.short_axis_mm, "ln_round": x.round, "ln_hilum_absent": x.hilum_absent,
            "ln_microcalc": x.microcalc, "ln_cystic": x.cystic, "ln_hyperechoic": x.hyperechoic,
            "ln_metastatic": x.metastatic}


def image_row(pl: PatientPlan, spec: ImageSpec) -> dict:
    p = pl.patient
    row = {"view": spec.view, "shown": ("node" if spec.view == "lymph_node" else "nodule") + f":{spec.target}"}
    if spec.view == "lymph_node":
        x = p.nodes[spec.target]
        row.update({"shown_tirads_points": "", **node_findings(x),
                    "ln_short_axis_mm": round(x.short_axis_mm, 2)})
    else:
        x = p.nodules[spec.target]
        row.update({"shown_tirads_points": x.tirads_points, "ln_short_axis_mm": "", "ln_round": "",
                    "ln_hilum_absent": "", "ln_microcalc": "", "ln_cystic": "", "ln_hyperechoic": "",
                    "ln_metastatic": ""})
    return row


def readers_rows(plans: list[PatientPlan], seed: int, prior: dict | None = None) -> list[dict]:
    rows = []
    for reader in R.READERS:
        for pl in plans:
            call, scores, pts = R.read_patient(pl.patient, reader, R.reader_rng(seed, pl.index, reader), prior)
            rows.append({"reader": reader, "patient_id": pl.patient_id, "call": call,
                         **{f"score_{c}": round(scores[c], 6) for c in F.CLASSES}, "split": pl.split,
                         "tirads_points": pts})
    return rows


def cohort_prior(plans: list[PatientPlan]) -> dict:
    n = len(plans)
    return {c: sum(pl.label == c for pl in plans) / n for c in F.CLASSES}


# ------------------------------------------------------------------ rendering workers


def _image_name(pl: PatientPlan, spec: ImageSpec, ext: str) -> str:
    return f"{pl.patient_id}/{spec.index:03d}.{ext}"


def _render_patient(args) -> tuple[int, list[dict]]:
    """Render and write all images of one patient; returns per-image metadata."""
    (root, seed, pl, dicom) = args
    from .imaging import Device, render
    from .pngio import encode_png_gray8

    root = Path(root)
    device = Device.sample(np.random.default_rng(seed_sequence(seed, 5, pl.index)))
    meta = []
    for spec in pl.images:
        r = render(pl.patient, seed_sequence(seed, 2, pl.index, spec.index), view=spec.view, target=spec.target,
                   device=device)
        rel = "images/" + _image_name(pl, spec, "png")
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, encode_png_gray8(r.image), fsync=False)
        reg = r.region
        m = {"path": rel, "image_index": spec.index, **r.params,
             "region_x0": reg.x0, "region_y0": reg.y0, "region_x1": reg.x1, "region_y1": reg.y1,
             "spacing_x_cm": round(r.spacing_mm / 10.0, 7), "spacing_y_cm": round(r.spacing_mm / 10.0, 7)}
        if dicom:
            from .dicom import write_us_dicom

            drel = "dicom/" + _image_name(pl, spec, "dcm")
            write_us_dicom(root / drel, r.image, patient_id=pl.patient_id, hash_patient_id=False,
                           region=(reg.x0, reg.y0, reg.x1, reg.y1), spacing_cm=r.spacing_mm / 10.0,
                           instance_number=spec.index + 1, series_key=f"{seed}")
            m["dicom_path"] = drel
        meta.append(m)
    blob = json.dumps(meta, sort_keys=True)
    atomic_write_bytes(root / "meta" / f"{pl.patient_id}.json", blob.encode(), fsync=False)
    return pl.index, json.loads(blob)  # same form as a resumed run reads back


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_value(r.get(k, "")) for k in cols})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"), fsync=False)


@dataclass
class Cohort:
    """A generated cohort on disk."""

    root: Path
    manifest: Path
    readers: Path
    n_patients: int
    n_images: int


def generate_cohort(out: str | os.PathLike, preset: str = "paper", seed: int = 0, patients: int | None = None,
                    workers: int = 1, dicom: bool = False, progress: bool = True) -> Cohort:
    """Render a cohort into folder ``out`` (PNG frames, manifest.csv, readers.csv, cohort.json).

    Work happens in ``out + '.partial'``, renamed to ``out`` at the end; rerunning an
    interrupted call resumes it (finished patients are kept).  An existing complete
    cohort with the same settings is returned as is.
    """
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out)
    config = {"format_version": FORMAT_VERSION, "preset": preset, "seed": int(seed),
              "patients": None if patients is None else int(patients), "dicom": bool(dicom)}
    if out.exists():
        try:
            existing = json.loads((out / "cohort.json").read_text())
        except (OSError, ValueError):
            existing = None
        if existing and existing.get("config") == config:
            return Cohort(out, out / "manifest.csv", out / "readers.csv", existing["n_patients"],
                          existing["n_images"])
        raise FileExistsError(f"{out} exists and is not a cohort made with these settings; choose another folder")
    plans = plan_cohort(preset, seed, patients)
    partial = out.with_name(out.name + ".partial")
    cfg_path = partial / "config.json"
    if partial.exists():
        try:
            same = json.loads(cfg_path.read_text()) == config
        except (OSError, ValueError):
            same = False
        if not same:  # a stale temp folder from other settings: start over
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "meta").mkdir(exist_ok=True)
    atomic_write_bytes(cfg_path, json.dumps(config, sort_keys=True).encode(), fsync=False)

    metas: dict[int, list[dict]] = {}
    todo = []
    for pl in plans:
        mp = partial / "meta" / f"{pl.patient_id}.json"
        if mp.exists():
            metas[pl.index] = json.loads(mp.read_text())
        else:
            todo.append(pl)
    total = sum(len(pl.images) for pl in plans)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=sum(len(m) for m in metas.values()), unit="img", desc="synth",
                   file=sys.stderr)
    jobs = [(str(partial), int(seed), pl, bool(dicom)) for pl in todo]
    try:
        if workers == 1 or len(jobs) <= 1:
            for j in jobs:
                i, m = _render_patient(j)
                metas[i] = m
                if bar:
                    bar.update(len(m))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn")) as ex:
                for i, m in ex.map(_render_patient, jobs, chunksize=1):
                    metas[i] = m
                    if bar:
                        bar.update(len(m))
    finally:
        if bar:
            bar.close()

    prior = cohort_prior(plans)
    rows = []
    for pl in plans:
        prow = patient_row(pl)
        by_index = {m["image_index"]: m for m in metas[pl.index]}
        for spec in pl.images:
            m = dict(by_index[spec.index])
            m.pop("image_index")
            rows.append({"path": m.pop("path"), "patient_id": pl.patient_id, "label": pl.label, "split": pl.split,
                         "view": spec.view, "frame_index": 0, "image_index": spec.index,
                         "patient_index": pl.index, **image_row(pl, spec), **prow, **m})
    _write_csv(partial / "manifest.csv", rows)
    _write_csv(partial / "readers.csv", readers_rows(plans, seed, prior))
    summary = {"config": config, "n_patients": len(plans), "n_images": len(rows), "classes": list(F.CLASSES),
               "prior": prior, "generator": "thyrofast.synth"}
    atomic_write_bytes(partial / "cohort.json", json.dumps(summary, indent=2, sort_keys=True).encode(),
                       fsync=False)
    shutil.rmtree(partial / "meta")
    cfg_path.unlink()
    os.replace(partial, out)
    return Cohort(out, out / "manifest.csv", out / "readers.csv", len(plans), len(rows))
