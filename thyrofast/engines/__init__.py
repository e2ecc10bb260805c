"""Inference engines: one interface (:class:`Engine`), four backends.

Backends import their runtime (onnxruntime, openvino, torch, tensorrt) only
when they are loaded.
"""
from __future__ import annotations

import importlib

from .base import ARTIFACT_FOR, BACKENDS, PRECISIONS, Engine, artifact_name
from .select import Choice, available_backends, cuda_available, resolve

__all__ = [
    "Engine",
    "BACKENDS",
    "PRECISIONS",
    "ARTIFACT_FOR",
    "artifact_name",
    "Choice",
    "resolve",
    "available_backends",
    "cuda_available",
    "engine_class",
    "load_engine",
]

_CLASSES = {
    "onnxruntime": ("thyrofast.engines.onnxruntime_engine", "OnnxRuntimeEngine"),
    "openvino": ("thyrofast.engines.openvino_engine", "OpenVinoEngine"),
    "torch": ("thyrofast.engines.torch_engine", "TorchEngine"),
    "tensorrt": ("thyrofast.engines.tensorrt_engine", "TensorRTEngine"),
}


def engine_class(backend: str) -> type[Engine]:
    if backend not in _CLASSES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    module, name = _CLASSES[backend]
    return getattr(importlib.import_module(module), name)


def load_engine(bundle, backend: str = "auto", device: str = "auto", precision: str = "auto", **options) -> Engine:
    """Resolve ``auto`` choices for ``bundle`` and load that engine."""
    choice = resolve(bundle.manifest.get("artifacts", {}), backend, device, precision)
    return engine_class(choice.backend).from_bundle(bundle, precision=choice.precision, device=choice.device, **options)
