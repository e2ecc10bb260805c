"""A phantom image set for pretraining: many distinct lesions, each with its findings and diagnosis.

A study cohort shows each of its few hundred nodules in many near-duplicate
frames, which is too few distinct lesions for a CNN to learn the sonographic
findings from.  Public thyroid datasets annotated with the ACR TI-RADS lexicon
play that role for clinical models; this is the phantom's equivalent.  Every
image shows one nodule (transverse or longitudinal) or one cervical lymph node
of a *fresh* phantom patient, preprocessed in memory (no files), with the
findings of exactly that lesion as annotations -- the same columns a cohort
manifest carries (:data:`ANNOTATION_COLUMNS`) -- and, separately, the
patient's class (drawn from the ``paper`` preset's mix), which a pretraining run
may use or ignore.  Each image comes from another patient, so the set is also a
large external cohort with one image per patient.

Random draws come from ``SeedSequence`` keys disjoint from the cohort's
(:mod:`thyrofast.synth.cohort` uses purposes 0-5), so a lexicon set never
repeats a cohort patient, and image ``i`` is the same for any worker count.
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ..io.schema import RENDER_CROPS, crop_mode
from . import features as F
from .cohort import csv_value, node_findings, seed_sequence

__all__ = ["lexicon_images", "lexicon_item", "lesion_posterior", "ANNOTATION_COLUMNS", "NODE_VIEW_SHARE"]

#: Columns of each annotation row (as in a cohort manifest; values are strings, "" = not applicable).
ANNOTATION_COLUMNS = ("view", "shown_tirads_points", "composition", "echogenicity", "shape", "margin", "foci",
                      "size_mm", "capsule_contact", "ln_short_axis_mm", "ln_round", "ln_hilum_absent",
                      "ln_microcalc", "ln_cystic", "ln_hyperechoic", "ln_metastatic")
#: Share of images showing a lymph node (drawn among patients that have imaged nodes).
NODE_VIEW_SHARE = 0.3
#: Class prior of the lexicon's patients: the paper's cohort (features.PAPER_PRIOR), in CLASSES order.
_CLASS_PRIOR = np.array([F.PAPER_PRIOR[c] for c in F.CLASSES])
_PURPOSE = 90  # SeedSequence purpose keys 90..93 (the cohort uses 0..5)


def _ss(seed: int, purpose: int, i: int) -> np.random.SeedSequence:
    return seed_sequence(seed, _PURPOSE + purpose, i)


def _s(v: Any) -> str:
    return str(csv_value(v))  # as the cohort writes its manifest


def lexicon_item(seed: int, i: int) -> tuple[F.Patient, str, int]:
    """Patient, view and target (nodule or node index) of image ``i``."""
    rng = np.random.default_rng(_ss(seed, 0, i))
    label = F.CLASSES[int(rng.choice(len(F.CLASSES), p=_CLASS_PRIOR))]
    p = F.sample_patient(np.random.default_rng(_ss(seed, 1, i)), label)
    if p.nodes and rng.random() < NODE_VIEW_SHARE:
        return p, "lymph_node", int(rng.integers(len(p.nodes)))
    return p, ("transverse" if rng.random() < 0.55 else "longitudinal"), int(rng.integers(len(p.nodules)))


def annotation_row(p: F.Patient, view: str, target: int) -> dict[str, str]:
    """The findings of the lesion shown (strings, as a manifest holds them)."""
    row = dict.fromkeys(ANNOTATION_COLUMNS, "")
    row["view"] = view
    if view == "lymph_node":
        row.update({k: _s(v) for k, v in node_findings(p.nodes[target]).items()})
    else:
        x = p.nodules[target]
        row.update({"shown_tirads_points": _s(x.tirads_points), "composition": x.composition,
                    "echogenicity": x.echogenicity, "shape": x.shape, "margin": x.margin, "foci": x.foci,
                    "size_mm": _s(x.size_mm), "capsule_contact": _s(x.capsule_contact)})
    return row


def lesion_posterior(rows) -> np.ndarray:
    """P(class | the shown lesion's findings and its view) for annotation rows of a lexicon set, ``(n, 3)``.

    The generator's exact posterior for one image: the class prior of
    :func:`lexicon_item`, the chance that it shows a lymph node (a patient with
    imaged nodes, then :data:`NODE_VIEW_SHARE`) or a nodule, and the likelihood
    of the shown lesion's findings (appearance types summed out; nodules and
    nodes are i.i.d. given the class, so the shown one is a single draw).  It is
    the expectation of the patient's one-hot class given what the image shows,
    so a class loss against it has the expectation of the loss against the
    patient's class with less noise (what ``pretrain(diagnosis_target="lesion")``
    trains on).  Computed from the rows' strings, so a cached set needs nothing else.
    """
    log_prior = np.log(_CLASS_PRIOR)
    p_nodes = np.array([1.0 - F.NODE_COUNT[c].get(0, 0.0) for c in F.CLASSES])
    log_view = {"node": np.log(p_nodes * NODE_VIEW_SHARE), "nodule": np.log1p(-p_nodes * NODE_VIEW_SHARE)}
    out = np.empty((len(rows), len(F.CLASSES)))
    for i, row in enumerate(rows):
        try:
            if row["view"] == "lymph_node":
                x = F.LymphNode(float(row["ln_short_axis_mm"]), metastatic=False,
                                **{k: row[f"ln_{k}"] == "1" for k in F.NODE_BINARY})
                ll = log_view["node"] + [F.node_log_likelihood(x, c) for c in F.CLASSES]
            else:
                x = F.Nodule(row["composition"], row["echogenicity"], row["shape"], row["margin"], row["foci"],
                             float(row["size_mm"]), row["capsule_contact"] == "1")
                ll = log_view["nodule"] + [F.nodule_log_likelihood(x, c) for c in F.CLASSES]
        except (KeyError, ValueError) as e:
            raise ValueError(f"row {i} is not a lexicon annotation row: {e}") from None
        z = log_prior + ll
        w = np.exp(z - z.max())
        out[i] = w / w.sum()
    return out


def _render_chunk(args) -> list[tuple[np.ndarray, dict[str, str], int]]:
    seed, indices, params_dict, crop = args
    from .. import Preprocessor, PreprocessParams
    from ..io.regions import detect_field
    from .imaging import Device, render

    pre = Preprocessor(PreprocessParams.from_dict(params_dict), threads=1)
    out = []
    for i in indices:
        p, view, target = lexicon_item(seed, i)
        device = Device.sample(np.random.default_rng(_ss(seed, 2, i)))
        r = render(p, _ss(seed, 3, i), view=view, target=target, device=device)
        if crop == "detect":  # as thyrofast.read(crop="detect") finds it in a PNG
            x0, y0, x1, y1 = detect_field(r.image)
        elif crop == "regions":  # as a DICOM file's ultrasound regions give it
            x0, y0, x1, y1 = r.region.x0, r.region.y0, r.region.x1, r.region.y1
        else:
            y0, x0, (y1, x1) = 0, 0, r.image.shape
        frame = pre(np.ascontiguousarray(r.image[y0:y1, x0:x1]))[0].astype(np.float16)
        out.append((frame, annotation_row(p, view, target), F.CLASSES.index(p.label)))
    return out


def lexicon_images(n: int, params, *, seed: int = 0, crop: str = "detect", workers: int = 1,
                   progress: bool = True, chunk: int = 64, position: int | None = None,
                   desc: str | None = None
                   ) -> tuple[np.ndarray, list[dict[str, str]], np.ndarray]:
    """``n`` preprocessed images of distinct phantom lesions, their annotation rows and
    their patients' classes.

    ``params``: the :class:`thyrofast.PreprocessParams` of the model to pretrain.
    ``crop``: "detect" (the field found as in a PNG, like ``thyrofast.read(crop="detect")``),
    "regions" (the true ultrasound region, as a DICOM file's regions give it, like
    ``thyrofast.read(crop="regions")``; the older spelling "region" is accepted) or "none".
    Returns float16 ``(n, C, H, W)`` frames, ``n`` rows of :data:`ANNOTATION_COLUMNS` and
    ``(n,)`` int class indices into ``CLASSES``.  ``position``, ``desc``: the line
    and the label (default "lexicon images") of the progress bar (several renderings side by side).
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    crop = crop_mode(crop, RENDER_CROPS)
    params = params.replace(dtype="float32")
    c, (h, w) = params.channels, params.size
    frames = np.empty((int(n), c, h, w), np.float16)
    rows: list[dict[str, str]] = [{} for _ in range(int(n))]
    labels = np.empty(int(n), np.int64)
    jobs = [(int(seed), list(range(s, min(s + chunk, n))), params.to_dict(), crop) for s in range(0, n, chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n), unit="img", file=sys.stderr, leave=False, position=position,
                   desc=desc or "lexicon images")

    def take(job, res):
        for i, (f, row, label) in zip(job[1], res):
            frames[i], rows[i], labels[i] = f, row, label
        if bar:
            bar.update(len(res))

    try:
        if workers == 1 or len(jobs) == 1:
            for j in jobs:
                take(j, _render_chunk(j))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn")) as ex:
                for j, res in zip(jobs, ex.map(_render_chunk, jobs)):
                    take(j, res)
    finally:
        if bar:
            bar.close()
    return frames, rows, labels
