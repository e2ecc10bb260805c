"""Reading real ultrasound: image files, DICOM (regions, cine), manifests, patient-level splits.

>>> frames = thyrofast.read("exam.dcm")           # list of Frame, cropped to the tissue region
>>> records = read_manifest("cohort/manifest.csv")
>>> train, val, test = split_patients(records, seed=0)
>>> ds = FrameDataset(train, params)               # preprocessed (C, H, W) float32, label, patient id
"""
from __future__ import annotations

from .frame import Frame, hash_patient_id
from .manifest import Record, read_manifest, scan_folder, write_manifest
from .reader import DEFAULT_MAX_BYTES, read
from .regions import detect_field, detect_panes
from .splits import assign_splits, check_split, kfold_patients, split_patients

__all__ = [
    "read", "Frame", "DEFAULT_MAX_BYTES", "detect_field", "detect_panes", "hash_patient_id",
    "Record", "read_manifest", "scan_folder", "write_manifest",
    "split_patients", "assign_splits", "kfold_patients", "check_split",
    "FrameDataset",
]


def __getattr__(name: str):
    if name == "FrameDataset":  # needs the compiled preprocessing core; import on use
        from .dataset import FrameDataset

        return FrameDataset
    raise AttributeError(f"module 'thyrofast.io' has no attribute {name!r}")
