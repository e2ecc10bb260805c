"""Reading real ultrasound: image files, DICOM (regions, cine), manifests, patient-level splits.

>>> frames = thyrofast.read("exam.dcm")           # list of Frame, cropped to the tissue region
>>> records = read_manifest("cohort/manifest.csv")
>>> train, val, test = split_patients(records, seed=0)
>>> ds = FrameDataset(train, params)               # preprocessed (C, H, W) float32, label, patient id

Layers (each imports only those above it): :mod:`.schema` (class-name preset,
split names, crop modes) -> :mod:`.frame` -> :mod:`.splits` -> :mod:`.manifest`
(the one :class:`Record` and manifest reader) -> :mod:`.reader` -> :mod:`.dataset`.
Names are imported on first use, so ``thyrofast.io.schema`` costs nothing.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    "read": "reader", "DEFAULT_MAX_BYTES": "reader", "count_frames": "reader",
    "Frame": "frame", "hash_patient_id": "frame",
    "detect_field": "regions", "detect_panes": "regions", "split_at_seams": "regions",
    "Record": "manifest", "read_manifest": "manifest", "read_dataset": "manifest", "scan_folder": "manifest",
    "write_manifest": "manifest", "expand_frames": "manifest", "count_panes": "manifest",
    "manifest_csv": "manifest",
    "split_patients": "splits", "assign_splits": "splits", "kfold_patients": "splits", "check_split": "splits",
    "DEFAULT_CLASSES": "schema", "SPLITS": "schema", "CROP_MODES": "schema", "label_index": "schema",
    "FrameDataset": "dataset",  # needs the compiled preprocessing core
}

__all__ = [
    "read", "Frame", "DEFAULT_MAX_BYTES", "detect_field", "detect_panes", "split_at_seams", "hash_patient_id",
    "count_frames", "Record", "read_manifest", "read_dataset", "scan_folder", "write_manifest", "expand_frames",
    "count_panes", "manifest_csv",
    "split_patients", "assign_splits", "kfold_patients", "check_split",
    "DEFAULT_CLASSES", "SPLITS", "CROP_MODES", "label_index",
    "FrameDataset",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'thyrofast.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
