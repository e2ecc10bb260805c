"""The C++ runtime (``thyrofast._runtime``, issue 26) behind Python's ``openvino`` backend.

``thyrofast::runtime`` is the whole classifier in C++ (bundle checks, preprocessing,
OpenVINO inference, calibration, decision, patient rule; ``csrc/include/thyrofast/runtime.hpp``).
When the package was built with it (OpenVINO found at build time), ``Classifier.load(...,
backend="openvino")`` runs frames through it -- one implementation for C++ device software
and Python -- and otherwise through the Python engine (:mod:`thyrofast.engines.openvino_engine`).

``_runtime`` is a module of its own so that ``thyrofast._core`` imports without OpenVINO's
libraries; it links ``libthyrofast_runtime.so`` -> ``libopenvino.so.<version>`` of the
``openvino`` wheel it was built against, found through ``import openvino`` (which loads it)
and the RUNPATH ``$ORIGIN/../openvino/libs``.  A different ``openvino`` release (another
soname) makes it unavailable, with the reason in :func:`status`, not an import error.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .engines.base import Engine, artifact_name, bundle_input_shape

__all__ = ["available", "status", "load_module", "RuntimeEngine", "Stream"]

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


def load_module():
    """``thyrofast._runtime``, or None when this build has none or it cannot load (see :func:`status`)."""
    with _LOCK:
        if "module" not in _STATE:
            import importlib.util

            if importlib.util.find_spec(f"{__package__}._runtime") is None:
                _STATE.update(module=None, reason="not built (OpenVINO was not found when thyrofast was built)")
                return None
            try:
                import openvino  # noqa: F401  (loads libopenvino for the runtime library)

                from . import _runtime
            except ImportError as exc:
                _STATE.update(module=None, reason=f"{type(exc).__name__}: {exc}")
            else:
                _STATE.update(module=_runtime, reason="")
        return _STATE["module"]


def available() -> bool:
    """Whether the C++ runtime is built into this install and loads."""
    return load_module() is not None


def status() -> dict:
    """``{"runtime": bool, "runtime_version": str | None, "runtime_reason": str}`` for build_info()."""
    mod = load_module()
    return {"runtime": mod is not None, "runtime_version": mod.version() if mod is not None else None,
            "runtime_reason": _STATE.get("reason", "")}


def _input_error(exc: Exception):
    """A runtime error -> InputError("unreadable") for bundle refusals, else unchanged."""
    from .errors import InputError

    if getattr(exc, "code", None) == "unreadable":
        msg = str(exc)
        if msg.startswith("[unreadable] "):
            msg = msg[len("[unreadable] "):]
        return InputError("unreadable", msg)
    return exc


class RuntimeEngine(Engine):
    """The ``openvino`` backend through the C++ runtime: it takes *frames* (``run_frames``), not
    preprocessed tensors.  ``input_buffer``/``run`` (tensor in, logits out: benchmarks, engine
    tests) are served by a Python :class:`OpenVinoEngine` made on first use."""

    backend = "openvino"
    concurrent = True
    runs_frames = True
    device = "cpu"
    input_dtype = "float32"

    def __init__(self, bundle, *, precision: str = "fp32", threads: int | None = None, max_batch: int = 32):
        mod = load_module()
        if mod is None:
            raise RuntimeError(f"the C++ runtime is not available ({_STATE.get('reason')})")
        artifact_name("openvino", precision)  # ValueError for a precision OpenVINO has no graph for
        self.precision = precision
        self.max_batch = int(max_batch)
        self.input_shape = bundle_input_shape(bundle)
        self._bundle = bundle
        self._threads = threads
        try:
            self.impl = mod.Classifier(str(bundle.path), precision=precision, threads=int(threads or 0),
                                       max_batch=self.max_batch)
        except mod.RuntimeError as exc:
            raise _input_error(exc) from None
        self.threads = self.impl.threads
        self._tensor_engine = None

    @classmethod
    def from_bundle(cls, bundle, precision: str = "fp32", device: str = "cpu", **options) -> "RuntimeEngine":
        if device != "cpu":
            raise ValueError("the openvino backend runs on device='cpu' only")
        return cls(bundle, precision=precision, threads=options.get("threads"), max_batch=options.get("max_batch", 32))

    def run_frames(self, frames: np.ndarray) -> np.ndarray:
        """(N, K) float32 logits of raw frames (any layout ``thyrofast.preprocess`` takes)."""
        try:
            return self.impl.logits(frames)
        except Exception as exc:  # noqa: BLE001 - re-raised as the Python path's types
            raise _input_error(exc) from None

    # -- the tensor interface, for callers that preprocess themselves
    def _tensors(self):
        if self._tensor_engine is None:
            from .engines.openvino_engine import OpenVinoEngine

            self._tensor_engine = OpenVinoEngine.from_bundle(self._bundle, precision=self.precision, device="cpu",
                                                             threads=self._threads, max_batch=self.max_batch)
        return self._tensor_engine

    def input_buffer(self, batch: int):
        return self._tensors().input_buffer(batch)

    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        return self._tensors().run(x, batch=batch)

    def close(self) -> None:
        if self._tensor_engine is not None:
            self._tensor_engine.close()
            self._tensor_engine = None


class Stream:
    """Live cine through the C++ runtime's ``thyrofast::Stream``: a bounded queue (``capacity``
    frames; when full the oldest queued frame is dropped and counted), ``workers`` threads,
    optional exponential smoothing of logits across frames, per-frame latency statistics.

    >>> s = Stream(clf, height=480, width=640, capacity=4, workers=2)
    >>> for f in cine: s.push(f)
    >>> s.flush(); s.stats()["p99_ms"], s.stats()["dropped"]
    """

    def __init__(self, classifier, *, height: int, width: int, channels: int = 1, dtype: str = "uint8",
                 capacity: int = 8, workers: int = 1, smoothing: float = 0.0, keep_results: bool = True):
        engine = getattr(classifier, "engine", classifier)
        impl = getattr(engine, "impl", None)
        if impl is None:
            raise ValueError("Stream needs a Classifier on the C++ runtime (backend='openvino', runtime built)")
        self.classes = tuple(impl.classes)
        self._s = load_module().Stream(impl, int(height), int(width), int(channels), str(dtype), int(capacity),
                                       int(workers), float(smoothing), bool(keep_results))

    def push(self, frame: np.ndarray) -> int:
        """Queue one frame (copied); returns its sequence number.  Never waits for inference."""
        return self._s.push(frame)

    def flush(self) -> None:
        self._s.flush()

    def close(self) -> None:
        self._s.close()

    @property
    def capacity(self) -> int:
        return self._s.capacity

    def stats(self) -> dict:
        return self._s.stats()

    def results(self):
        """``(sequence, decision, probs, latency_ms)`` arrays of the frames delivered since the last call."""
        return self._s.results()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
