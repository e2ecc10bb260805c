"""The one interface every inference backend implements.

An :class:`Engine` is loaded for one precision on one device, owns its
preallocated input buffers (so preprocessing can write straight into them) and
returns logits as a host ``float32`` array of shape ``(N, n_classes)``.

Artifact choice per (backend, precision) lives here so that every backend and
the selector agree on which bundle file a precision means.
"""
from __future__ import annotations

import abc
import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import sha256_file

__all__ = [
    "Engine",
    "BACKENDS",
    "PRECISIONS",
    "ARTIFACT_FOR",
    "artifact_name",
    "sha256_file",
    "bundle_input_shape",
]

BACKENDS = ("tensorrt", "torch", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")

# (backend, precision) -> bundle artifact name (docs/contracts.md).
# TensorRT 11 takes precision from the graph, so each precision is its own graph;
# CPU runtimes get the U8S8 Q/DQ graph (S8S8 was slower than FP32 in ORT).
ARTIFACT_FOR: dict[tuple[str, str], str] = {
    ("onnxruntime", "fp32"): "onnx_fp32",
    ("onnxruntime", "fp16"): "onnx_fp16",
    ("onnxruntime", "int8"): "onnx_int8_cpu",
    ("openvino", "fp32"): "onnx_fp32",
    ("openvino", "int8"): "onnx_int8_cpu",
    ("tensorrt", "fp32"): "onnx_fp32",
    ("tensorrt", "fp16"): "onnx_fp16",
    ("tensorrt", "int8"): "onnx_int8_trt",
    ("torch", "fp32"): "weights",
    ("torch", "fp16"): "weights",
}


def artifact_name(backend: str, precision: str) -> str:
    """Bundle artifact a backend loads for a precision (ValueError if unsupported)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    try:
        return ARTIFACT_FOR[(backend, precision)]
    except KeyError:
        raise ValueError(f"backend {backend!r} does not support precision {precision!r}") from None


def bundle_input_shape(bundle: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` from a bundle's model card."""
    shape = bundle.manifest.get("input_shape")
    if not shape or len(shape) != 3:
        raise ValueError(f"bundle model card has no valid input_shape: {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


class Engine(abc.ABC):
    """A loaded network for one (backend, precision, device).

    Subclasses set ``backend``, ``precision``, ``device``, ``input_shape``
    (C, H, W), ``input_dtype`` (numpy dtype name) and ``max_batch``.

    Threads: an engine with ``concurrent = True`` may be driven from several
    threads at once; each thread gets its *own* input buffers (and output
    buffers, bindings, infer requests) from :meth:`input_buffer`, so one
    thread's preprocessing never lands in another thread's run.  Other engines
    (one CUDA stream, one execution context) must be serialized by the caller;
    :class:`thyrofast.Classifier` does that with a lock.
    """

    #: run() may be called from several threads at once (per-thread buffers).
    concurrent: bool = False

    backend: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    input_shape: tuple[int, int, int] = (1, 224, 224)
    input_dtype: str = "float32"
    max_batch: int = 64

    @classmethod
    @abc.abstractmethod
    def from_bundle(cls, bundle: Any, precision: str = "fp32", device: str = "cpu", **options) -> "Engine":
        """Load the bundle's artifact for ``precision`` (hash-verified by the bundle)."""

    @abc.abstractmethod
    def input_buffer(self, batch: int):
        """The engine-owned, preallocated input for ``batch`` frames, shape ``(batch, C, H, W)``.

        A host ``numpy`` array for CPU engines, a device array (torch tensor or
        CuPy array) for CUDA engines.  Writing into it and calling
        :meth:`run` with it involves no copy.
        """

    @abc.abstractmethod
    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        """Logits ``(N, n_classes)`` float32 on the host.

        ``x`` is either this engine's own :meth:`input_buffer` (zero copy) or any
        array of shape ``(N, C, H, W)`` (copied into the buffer).  ``x=None`` with
        ``batch=N`` runs on the buffer for ``N`` as it is.
        """

    @property
    def stream(self):
        """CUDA stream the engine runs on (``None`` on the CPU)."""
        return None

    def close(self) -> None:  # noqa: B027  (a no-op by default, not abstract)
        """Release sessions and buffers (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, x) -> np.ndarray:
        return self.run(x)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend!r}, precision={self.precision!r}, "
            f"device={self.device!r}, input_shape={self.input_shape}, max_batch={self.max_batch})"
        )

    @classmethod
    def _from_onnx_artifact(cls, bundle: Any, precision: str, device: str, **options) -> "Engine":
        """``from_bundle`` of the engines built from an ONNX graph: the precision's
        graph as hash-checked bytes, the bundle's input shape unless given."""
        _, data = read_artifact(bundle, artifact_name(cls.backend, precision))
        options.setdefault("input_shape", bundle_input_shape(bundle))
        return cls(data, precision=precision, device=device, **options)

    # -- helpers shared by the host-memory engines --------------------------------

    def _thread_slots(self) -> dict:
        """This thread's own ``{batch: slot}`` dict (buffers, bindings, requests).

        Threads never share a slot, so concurrent callers cannot overwrite each
        other's inputs or outputs; a thread's slots go away with the thread
        (``threading.local``) or with :meth:`_drop_thread_slots`.
        """
        local = self.__dict__.get("_tls")
        if local is None:
            with _TLS_LOCK:
                local = self.__dict__.setdefault("_tls", threading.local())
        try:
            return local.slots
        except AttributeError:
            local.slots = {}
            return local.slots

    def _drop_thread_slots(self) -> None:
        """Forget every thread's slots (``close``)."""
        self.__dict__.pop("_tls", None)

    def _stage_host_input(self, x, batch: int | None, slot) -> tuple:
        """``run``'s input handling: ``slot(n)`` gives the preallocated ``(buffer, ...)``
        for batch ``n``; ``x`` (unless it is that buffer) is copied in.  Returns the slot."""
        if x is None:
            if batch is None:
                raise TypeError("run() needs an input array or batch=")
            return slot(batch)
        x = self._check_host_input(x)
        staged = slot(x.shape[0])
        if x is not staged[0]:
            np.copyto(staged[0], x, casting="same_kind")
        return staged

    def _check_batch(self, n: int) -> int:
        n = int(n)
        if n < 1:
            raise ValueError(f"batch must be >= 1, got {n}")
        if n > self.max_batch:
            raise ValueError(f"batch {n} exceeds this engine's max_batch={self.max_batch}")
        return n

    def _check_host_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"expected input of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        return x


_TLS_LOCK = threading.Lock()


def default_threads() -> int:
    """CPU threads this process may use (respects affinity / container limits)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def read_artifact(bundle: Any, name: str) -> tuple[Path, bytes]:
    """Path and bytes of a bundle artifact, hash-checked on the bytes actually used.

    ``bundle.artifact_path`` verifies the file; hashing the bytes we then hand
    to the runtime again closes the window in which the file could be swapped
    between the check and the load.
    """
    if hasattr(bundle, "read_artifact"):  # thyrofast.bundle.Bundle: hashes the bytes it returns
        data = bundle.read_artifact(name)
        return Path(bundle.path) / bundle.manifest["artifacts"][name]["path"], data
    path = Path(bundle.artifact_path(name))
    data = path.read_bytes()
    expected = bundle.manifest["artifacts"][name]["sha256"]
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"artifact {name!r} changed on disk after it was verified: {path}")
    if name.startswith("onnx"):
        # a runtime given bytes resolves external data against the cwd: unhashed bytes
        from ..bundle import refuse_external_data

        refuse_external_data(data, f"artifact {name!r}", str(path))
    return path, data
