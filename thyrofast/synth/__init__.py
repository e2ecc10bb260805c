"""Synthetic thyroid ultrasound cohorts with simulated readers and a Bayes reference.

    from thyrofast import synth
    cohort = synth.generate_cohort("cohort", preset="paper", seed=0, workers=2)
    patient = synth.sample_patient(numpy.random.default_rng(0), "MMTN")
    frame = synth.render(patient, seed=1, view="transverse").image   # (600, 800) uint8
    post = synth.posterior(patient)                                    # Bayes P(class | findings)

Heavy parts (rendering, DICOM) load on first use.
"""
from __future__ import annotations

from .features import CLASSES, LymphNode, Nodule, Patient, posterior, sample_patient

__all__ = ["CLASSES", "Nodule", "LymphNode", "Patient", "sample_patient", "posterior", "render",
           "generate_cohort", "plan_cohort", "PRESETS", "write_us_dicom", "read_patient"]


def __getattr__(name: str):
    if name == "render":
        from .imaging import render

        return render
    if name in ("generate_cohort", "plan_cohort", "PRESETS"):
        from . import cohort

        return getattr(cohort, name)
    if name == "write_us_dicom":
        from .dicom import write_us_dicom

        return write_us_dicom
    if name == "read_patient":
        from .readers import read_patient

        return read_patient
    raise AttributeError(f"module 'thyrofast.synth' has no attribute {name!r}")
