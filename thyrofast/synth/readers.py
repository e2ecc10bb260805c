"""Simulated radiologists: ACR TI-RADS readers who see the latent features through noise.

A reader perceives every nodule finding correctly with probability ``1 - eps``
(otherwise an adjacent category), mis-sizes lesions, misses some lymph nodes and
misjudges capsule contact and lymph-node findings with probability ``eps``.  Being
an expert who knows how often each finding occurs per class, the reader scores the
classes by the posterior of the findings *as perceived*, blurred by decision noise;
the call is the top score.  The perceived TI-RADS points of the index nodule are
reported too.  They are noisy-Bayes raters on latent findings: they see no pixels.
Each reader has one noise level ``eps`` (decision noise ``DECISION_NOISE_PER_EPS *
eps``), **fitted** (:func:`thyrofast.synth.reader_fit.fit_reader`, provenance in ``READER_FIT``) so that their
mean 3-class accuracy over reader draws on a large paper-preset cohort is the
paper's 73 % (junior) and 84 % (senior); :func:`verify` checks it on a fresh
cohort.  ``reader_rng(..., draw=d)`` gives further draws of the same reader (a
multi-reader view); draw 0 is what ``readers.csv`` holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .features import (
    CLASSES,
    COMPOSITIONS,
    FOCI,
    MARGINS,
    NODE_SHORT_AXIS_RANGE_MM,
    SHAPES,
    SIZE_RANGE_MM,
    LymphNode,
    Nodule,
    Patient,
    posterior,
)

_ECHO_ORDER = ("hyperechoic", "isoechoic", "hypoechoic", "very_hypoechoic")
_FOCI_ORDER = FOCI  # none, comet tail, macro, rim, punctate: adjacent = easily confused


@dataclass(frozen=True)
class ReaderModel:
    name: str
    eps: float  # perception error rate for each finding
    decision_noise: float  # SD of Gaussian noise on the reader's log class scores


#: Decision noise (SD on the log class scores) per unit of perception error rate: one noise level per reader
#: (``eps``), the decision noise following it (a modelling choice: the hand-set readers before the fit had
#: ratios 3.6 (junior) and 5.6 (senior)).
DECISION_NOISE_PER_EPS = 4.0

#: Fitted, not hand-set (``reader_fit.fit_reader``; ``python -m thyrofast.synth.reader_fit --fit`` redoes it): ``eps`` is the
#: perception error rate whose mean 3-class accuracy over ``draws`` reader draws on a ``patients``-patient
#: paper-preset cohort (``plan_cohort("paper", seed, patients)``, the cohort's own prior) is the paper's
#: clinical reader accuracy; decision noise = DECISION_NOISE_PER_EPS * eps.  Verified on another
#: 10,000-patient cohort over 20 draws (tests/synth/test_synth_readers.py; docs/synth.md has the numbers).
READER_FIT = {"method": "bisection on eps (14 steps), common random numbers per patient and draw",
              "targets": {"junior": 0.73, "senior": 0.84}, "cohort": {"preset": "paper", "seed": 7001,
                                                                      "patients": 20000},
              "draws": 4, "decision_noise_per_eps": DECISION_NOISE_PER_EPS,
              "source": "Zhao et al. 2025: junior 73 %, senior 84 % accuracy (clinical)"}

_FITTED_EPS = {"junior": 0.25256, "senior": 0.02558}  # reader_fit.fit_reader, READER_FIT (2026-12-04)


def model_for(name: str, eps: float) -> "ReaderModel":
    return ReaderModel(name, eps=float(eps), decision_noise=float(DECISION_NOISE_PER_EPS * eps))


READERS = {name: model_for(name, eps) for name, eps in _FITTED_EPS.items()}

#: What the readers are, in one line (reports use it).
READER_DESCRIPTION = "noisy-Bayes raters on latent findings; they see no pixels"


def _adjacent(rng: np.random.Generator, order: tuple, value: str) -> str:
    i = order.index(value)
    j = i + (1 if rng.random() < 0.5 else -1)
    if j < 0 or j >= len(order):
        j = i - (j - i)
    return order[j]


def _perceive_nodule(n: Nodule, rng: np.random.Generator, eps: float) -> Nodule:
    def maybe(order, v):
        return _adjacent(rng, order, v) if rng.random() < eps else v

    comp = maybe(COMPOSITIONS, n.composition)
    echo = n.echogenicity
    if comp == "cystic":
        echo = "anechoic"
    elif echo == "anechoic":
        echo = "isoechoic"
    else:
        echo = maybe(_ECHO_ORDER, echo)
    margin = maybe(MARGINS, n.margin)
    capsule = (not n.capsule_contact) if rng.random() < eps else n.capsule_contact
    return replace(n, composition=comp, echogenicity=echo, shape=maybe(SHAPES, n.shape), margin=margin,
                   foci=maybe(_FOCI_ORDER, n.foci), capsule_contact=capsule or margin == MARGINS[3],
                   size_mm=float(np.clip(n.size_mm * math.exp(rng.normal(0.0, 0.35 * eps)), *SIZE_RANGE_MM)))


def _perceive_node(node: LymphNode, rng: np.random.Generator, eps: float) -> LymphNode:
    def flip(v):
        return (not v) if rng.random() < eps else v

    short = node.short_axis_mm * math.exp(rng.normal(0.0, 0.35 * eps))
    return replace(node, short_axis_mm=float(np.clip(short, *NODE_SHORT_AXIS_RANGE_MM)), round=flip(node.round),
                   hilum_absent=flip(node.hilum_absent), microcalc=flip(node.microcalc), cystic=flip(node.cystic),
                   hyperechoic=flip(node.hyperechoic))


def perceive(patient: Patient, reader: ReaderModel, rng: np.random.Generator) -> Patient:
    """What a reader sees: every finding through the reader's perception noise; some nodes missed."""
    eps = reader.eps
    nodules = [_perceive_nodule(n, rng, eps) for n in patient.nodules]
    nodes = [_perceive_node(x, rng, eps) for x in patient.nodes if rng.random() >= 0.5 * eps]
    return Patient(patient.label, nodules, nodes)


def read_patient(patient: Patient, reader: ReaderModel | str, rng: np.random.Generator,
                 prior: dict | None = None) -> tuple[str, dict, int]:
    """One reader's call, per-class scores (in [0, 1], summing to 1) and perceived TI-RADS points.

    The reader is an expert who knows how often each finding occurs per class: their
    scores are the posterior given the findings *as they perceived them*, blurred by
    decision noise (Gaussian on the log scores).
    """
    if isinstance(reader, str):
        reader = READERS[reader]
    seen = perceive(patient, reader, rng)
    post = posterior(seen, prior)
    logs = np.log(np.maximum([post[c] for c in CLASSES], 1e-12)) + rng.normal(0.0, reader.decision_noise, 3)
    w = np.exp(logs - logs.max())
    w /= w.sum()
    scores = {c: float(v) for c, v in zip(CLASSES, w)}
    call = max(CLASSES, key=lambda c: scores[c])
    return call, scores, seen.index_nodule.tirads_points


def reader_rng(seed: int, patient_index: int, reader: str, draw: int = 0) -> np.random.Generator:
    """The random stream of one reader's read of one patient; ``draw`` > 0: another draw of the same reader."""
    key = [seed, 3, patient_index, list(READERS).index(reader)] + ([int(draw)] if draw else [])
    return np.random.default_rng(np.random.SeedSequence(key))


def reader_accuracies(patients, model: ReaderModel, prior: dict, *, seed: int, draws: int,
                      reader_index: int = 0) -> np.ndarray:
    """3-class accuracy of ``model`` in each of ``draws`` draws (per patient and draw its own random stream,
    the same for every ``model``: common random numbers, so accuracy moves smoothly with the noise)."""
    out = np.empty(draws)
    for d in range(draws):
        hits = 0
        for i, p in enumerate(patients):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 3, i, reader_index, 1000 + d]))
            hits += read_patient(p, model, rng, prior)[0] == p.label
        out[d] = hits / len(patients)
    return out
