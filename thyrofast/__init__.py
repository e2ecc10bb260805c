"""thyrofast: fast thyroid ultrasound classification into BTN / NMTN / MMTN.

Heavy submodules (torch, onnxruntime, pydicom) are imported lazily, on first
use of the name that needs them.
"""
from __future__ import annotations

import importlib

from ._version import __version__
from .errors import InputError
from .io.schema import DEFAULT_CLASSES as CLASSES  # class order everywhere: outputs, manifests, reports

# public name -> module that defines it (imported on first access)
_LAZY = {
    "build_info": "thyrofast.preprocessing",
    "preprocess": "thyrofast.preprocessing",  # the function: thyrofast.preprocess(frames, ...)
    "Preprocessor": "thyrofast.preprocessing",
    "PreprocessParams": "thyrofast.preprocessing",
    "read": "thyrofast.io",
    "Frame": "thyrofast.io",
    "FrameDataset": "thyrofast.io",
    "read_manifest": "thyrofast.io",
    "write_manifest": "thyrofast.io",
    "scan_folder": "thyrofast.io",
    "split_patients": "thyrofast.io",
    "kfold_patients": "thyrofast.io",
    "hash_patient_id": "thyrofast.io",
    "Classifier": "thyrofast.classifier",
    "Prediction": "thyrofast.classifier",
    "PatientPrediction": "thyrofast.classifier",
    "predict_files": "thyrofast.predict",
    "engines": None,
    "train": None,
    "Bundle": "thyrofast.bundle",
    "export_bundle": "thyrofast.export",
    "metrics": None,
    "evaluate": None,
    "evaluate_predictions": "thyrofast.evaluate",
    "evaluate_bundle": "thyrofast.evaluate",
    "write_report": "thyrofast.evaluate",
    "synth": None,
    "io": None,
}

__all__ = ["__version__", "CLASSES", "InputError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'thyrofast' has no attribute {name!r}")
    target = _LAZY[name]
    if target is None:
        value = importlib.import_module(f"thyrofast.{name}")  # the module itself
    else:
        value = getattr(importlib.import_module(target), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
