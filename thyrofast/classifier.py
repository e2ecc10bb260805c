"""End-to-end classifier: raw frames -> BTN / NMTN / MMTN probabilities.

Pipeline: the bundle's own preprocessing (``thyrofast.preprocess``, written
straight into the engine's preallocated input buffer) -> engine logits ->
temperature scaling -> softmax.  Every result carries its provenance (package
version, bundle SHA-256, backend, precision, device) so a stored prediction
can always be traced to the exact model and runtime that made it.

>>> clf = Classifier.load("bundle/")            # backend/device/precision "auto"
>>> p = clf.predict(frames)                     # (N, 3) probabilities
>>> p.provenance["backend"], p.pred
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Classifier", "Prediction", "PatientPrediction", "aggregate_patients", "softmax", "frame_layout",
           "split_frames", "FRAME_LAYOUTS"]

MAX_BATCH = 4096


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Prediction(np.ndarray):
    """``(N, n_classes)`` probabilities (a NumPy array) with ``classes``, ``provenance`` and ``pred``."""

    classes: tuple[str, ...]
    provenance: dict

    def __new__(cls, probs: np.ndarray, classes: Sequence[str], provenance: dict):
        obj = np.asarray(probs, dtype=np.float64).view(cls)
        obj.classes = tuple(classes)
        obj.provenance = dict(provenance)
        return obj

    def __array_finalize__(self, obj):
        self.classes = getattr(obj, "classes", ())
        self.provenance = getattr(obj, "provenance", {})

    @property
    def pred(self) -> list[str]:
        """Predicted class name per image."""
        return [self.classes[i] for i in np.asarray(self).argmax(axis=-1).ravel()]

    def as_dicts(self) -> list[dict[str, float]]:
        return [{c: float(p) for c, p in zip(self.classes, row)} for row in np.asarray(self)]


@dataclasses.dataclass(frozen=True)
class PatientPrediction:
    patient_id: Any
    probs: dict
    pred: str
    n_images: int
    provenance: dict
    #: the class called at the bundle's operating point (the argmax, ``pred``, without one)
    decision: str | None = None


def aggregate_patients(probs: np.ndarray, patient_ids: Sequence[Any], aggregation: Any = "mean_log_prob"
                       ) -> dict[Any, tuple[np.ndarray, int]]:
    """Per-patient probabilities by the bundle's ``aggregation`` rule (:mod:`thyrofast.aggregation`).

    The default, "mean_log_prob", is the mean of log p over a patient's images,
    renormalized (a geometric mean of the image posteriors); bundles trained by
    thyrofast carry a fitted "pooled_logistic" rule.  Returns
    ``{patient_id: (probs, n_images)}`` in first-seen order.
    """
    from .aggregation import aggregate

    return aggregate(probs, patient_ids, aggregation)


def bundle_read_options(classifier) -> dict:
    """The ``thyrofast.read`` options of the classifier's bundle, ``{"crop", "mask_annotations"}``
    (:func:`thyrofast.io.schema.file_read_options`; the defaults for stand-ins without a bundle):
    how every step that reads files for the model (predict, evaluate, export's calibration,
    ``preprocess --bundle``) reads them, as training did."""
    from .io.schema import file_read_options

    return file_read_options(getattr(getattr(classifier, "bundle", None), "read_options", None) or {})


def bundle_aggregation(classifier) -> Any:
    """The image -> patient rule of the classifier's bundle ("mean_log_prob" for stand-ins without one)."""
    return getattr(getattr(classifier, "bundle", None), "aggregation", "mean_log_prob")


def bundle_operating_point(classifier) -> dict | None:
    """The decision threshold of the classifier's bundle (``operating_point`` of its card), or None."""
    manifest = getattr(getattr(classifier, "bundle", None), "manifest", None)
    op = manifest.get("operating_point") if isinstance(manifest, dict) else None
    return dict(op) if isinstance(op, dict) else None


def _as_bundle(bundle) -> Any:
    if isinstance(bundle, (str, Path)):
        from .bundle import Bundle

        return Bundle.load(bundle, verify=True)
    return bundle


class Classifier:
    """A bundle + an engine + the bundle's preprocessing.  Create with :meth:`load`.

    Thread-safe: one Classifier may be shared by any number of threads and
    gives each call the result a serial call would give, bit for bit.  CPU
    engines (ONNX Runtime, OpenVINO, torch on the CPU) keep per-thread input
    buffers, bindings and infer requests, so threads run in parallel; engines
    that cannot (one CUDA stream / graph / execution context) are driven under a
    lock, one batch at a time.  Saliency always takes the lock.
    """

    def __init__(self, bundle, engine, preprocessor, *, batch_size: int | None = None):
        from . import __version__

        self.bundle = bundle
        self.engine = engine
        self.preprocessor = preprocessor
        self.classes = tuple(bundle.classes)
        self.temperature = float(bundle.temperature)
        self.batch_size = int(batch_size or engine.max_batch)
        self._roi = bundle.manifest.get("preprocess", {}).get("roi")
        self._saliency_model = None
        # Serializes preprocessing + run for engines without per-thread buffers,
        # and saliency (hooks on one torch model) for all.
        self._lock = threading.RLock()
        self._run_lock = contextlib.nullcontext() if getattr(engine, "concurrent", False) else self._lock
        self.provenance = {
            "thyrofast": __version__,
            "bundle_sha256": _bundle_sha256(bundle),
            "backend": engine.backend,
            "precision": engine.precision,
            "device": engine.device,
        }

    @classmethod
    def load(
        cls,
        bundle,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        *,
        threads: int | None = None,
        max_batch: int = 32,
        runtime: bool | None = None,
        **engine_options,
    ) -> "Classifier":
        """Open ``bundle`` (a folder or a :class:`thyrofast.bundle.Bundle`) and load an engine.

        ``backend``: ``auto``, ``tensorrt``, ``torch``, ``openvino``, ``onnxruntime``;
        ``device``: ``auto``, ``cpu``, ``cuda``; ``precision``: ``auto``,
        ``fp32``, ``fp16``, ``int8`` (see :mod:`thyrofast.engines.select`).
        ``threads``: CPU threads for preprocessing and CPU engines (default: all
        this process may use).
        ``runtime``: the ``openvino`` backend runs on the C++ runtime
        (:mod:`thyrofast.runtime`) when this build has it (None: if built; True:
        required; False: the Python engine).
        """
        from .engines import engine_class, resolve
        from .preprocessing import Preprocessor, PreprocessParams, check_threads

        # C ints in every runtime: checked here, with the parameter's name, not deep inside one
        threads = check_threads(threads)
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) \
                or not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be an integer in [1, {MAX_BATCH}], got {max_batch!r}")
        bundle = _as_bundle(bundle)
        choice = resolve(bundle.manifest.get("artifacts", {}), backend, device, precision)
        options = dict(engine_options, max_batch=max_batch)
        if choice.device == "cpu" and threads is not None:
            options["threads"] = threads
        engine = None
        if choice.backend == "openvino" and runtime is not False and not engine_options:
            from . import runtime as _rt

            if _rt.available():
                engine = _rt.RuntimeEngine.from_bundle(bundle, precision=choice.precision, device=choice.device,
                                                       **options)
            elif runtime:
                raise RuntimeError(f"runtime=True but the C++ runtime is not available: {_rt.status()['runtime_reason']}")
        elif runtime:
            raise ValueError(f"runtime=True needs backend 'openvino' on the CPU, got {choice.backend!r}")
        if engine is None:
            engine = engine_class(choice.backend).from_bundle(
                bundle, precision=choice.precision, device=choice.device, **options
            )
        params = PreprocessParams.from_dict(bundle.manifest["preprocess"])
        # Preprocess straight into the engine's input dtype (fp16 engines get fp16).
        try:
            params = params.replace(dtype=engine.input_dtype)
        except ValueError as exc:  # e.g. a mean/std whose outputs overflow float16
            from .errors import InputError

            engine.close()
            raise InputError("unreadable", f"the bundle's preprocessing cannot feed this {engine.input_dtype} "
                             f"engine ({engine.backend} {engine.precision}): {exc}",
                             source=str(getattr(bundle, "path", ""))) from None
        expected = tuple(bundle.manifest["input_shape"])
        if (params.channels, *params.size) != expected:
            raise ValueError(f"bundle preprocessing gives {(params.channels, *params.size)}, model expects {expected}")
        pre = Preprocessor(params, threads=threads, device=choice.device)
        return cls(bundle, engine, pre)

    # -- properties -------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def precision(self) -> str:
        return self.engine.precision

    def __repr__(self) -> str:
        p = self.provenance
        return (f"Classifier(backend={p['backend']!r}, precision={p['precision']!r}, device={p['device']!r}, "
                f"bundle_sha256={p['bundle_sha256'][:12]}...)")

    def close(self) -> None:
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- inference --------------------------------------------------------------------

    def logits(self, frames) -> np.ndarray:
        """Raw engine logits ``(N, n_classes)`` for ``frames`` (before temperature)."""
        chunks = [self._run_chunk(chunk) for chunk in self._chunks(frames)]
        if not chunks:
            return np.zeros((0, len(self.classes)), np.float32)
        if chunks[0].shape[-1] != len(self.classes):
            from .errors import InputError

            raise InputError("unreadable", f"the model gives {chunks[0].shape[-1]} logits per frame but its card names "
                             f"{len(self.classes)} classes {self.classes}: the bundle is inconsistent",
                             source=str(getattr(self.bundle, "path", "")))
        return np.concatenate(chunks, axis=0)

    def predict(self, frames) -> Prediction:
        """Calibrated probabilities ``(N, 3)`` for BTN/NMTN/MMTN.

        ``frames``: one frame ``(H, W)`` / ``(H, W, 3)`` / ``(H, W, 4)`` (RGBA: alpha
        dropped, as :func:`thyrofast.read` does), a batch ``(N, H, W)`` /
        ``(N, H, W, 1|3|4)`` (uint8 or uint16), or a list of frames of any sizes.
        A 3-D array with a last axis of 1 or 2 is refused as ambiguous (see
        :func:`frame_layout`).
        Arrays are used as given: crop them to the ultrasound field (and mask
        burned-in annotations) the way ``self.bundle.read_options`` says the model
        was trained (files read by ``thyrofast predict`` / ``evaluate`` are read
        that way for you).
        """
        probs = softmax(self.logits(frames), self.temperature)
        return Prediction(probs, self.classes, self.provenance)

    def predict_patient(self, frames, patient_ids: Sequence[Any] | None = None):
        """Per-patient probabilities (the bundle's aggregation rule over each patient's images).

        Without ``patient_ids`` all frames belong to one patient and one
        :class:`PatientPrediction` is returned; with them, a dict keyed by id.
        Each carries ``pred`` (the argmax) and ``decision`` (the class called at
        the bundle's operating point; the argmax without one).
        """
        probs = self.predict(frames)
        if len(probs) == 0:
            raise ValueError("predict_patient needs at least one frame")
        single = patient_ids is None
        ids = [None] * len(probs) if single else list(patient_ids)
        if len(ids) != len(probs):
            raise ValueError(f"{len(ids)} patient ids for {len(probs)} frames")
        from .operating_point import decide

        out = {}
        op = bundle_operating_point(self)
        for pid, (p, n) in aggregate_patients(np.asarray(probs), ids, self.bundle.aggregation).items():
            out[pid] = PatientPrediction(
                patient_id=pid,
                probs={c: float(v) for c, v in zip(self.classes, p)},
                pred=self.classes[int(np.argmax(p))],
                n_images=n,
                provenance=dict(self.provenance),
                decision=decide(p, self.classes, op)[0],
            )
        return out[None] if single else out

    def _chunks(self, frames) -> Iterable[list[np.ndarray] | np.ndarray]:
        if isinstance(frames, (list, tuple)):
            for i in range(0, len(frames), self.batch_size):
                yield [as_frame(f) for f in frames[i:i + self.batch_size]]
            return
        if isinstance(frames, (str, os.PathLike)):
            raise TypeError(f"frames must be arrays, not a path ({frames!r}); read files with thyrofast.read")
        a = frames if hasattr(frames, "__cuda_array_interface__") else np.asarray(frames)
        a, single = frame_layout(a)
        if single:
            yield a
            return
        for i in range(0, a.shape[0], self.batch_size):
            yield a[i:i + self.batch_size]

    def _n_frames(self, chunk) -> int:
        if isinstance(chunk, list):
            return len(chunk)
        return 1 if chunk.ndim == 2 or (chunk.ndim == 3 and chunk.shape[-1] == 3) else chunk.shape[0]

    def _run_chunk(self, chunk) -> np.ndarray:
        with self._run_lock:
            return self._run_chunk_unlocked(chunk)

    def _run_chunk_unlocked(self, chunk) -> np.ndarray:
        # The buffer is this thread's own (concurrent engines) or held under
        # the lock from here to run(): no other call can write it in between.
        if getattr(self.engine, "runs_frames", False):
            # the C++ runtime: frames in, logits out (its own preprocessing, buffers and requests)
            if isinstance(chunk, list):
                return np.concatenate([self._runtime_frames(f) for f in chunk], axis=0)
            return self._runtime_frames(chunk)
        n = self._n_frames(chunk)
        buf = self.engine.input_buffer(n)
        stream = self.engine.stream
        if isinstance(chunk, list):
            # Frames of different sizes: one core call each, each into its row.
            for i, f in enumerate(chunk):
                self._preprocess_into(f, buf[i:i + 1], stream)
        else:
            self._preprocess_into(chunk, buf, stream)
        return self.engine.run(buf)

    def _runtime_frames(self, frames) -> np.ndarray:
        from .preprocessing.layout import host_frames

        if hasattr(frames, "__cuda_array_interface__") or not isinstance(frames, np.ndarray):
            frames = np.asarray(frames)
        # byte order / dtype as the core reads them (big-endian uint16 converted, others refused)
        return self.engine.run_frames(host_frames(frames))

    def _preprocess_into(self, frames, out, stream) -> None:
        if self.engine.device == "cuda":
            # The CUDA kernel writes the engine's input buffer on the engine's
            # stream: uint8 frames go up, nothing comes back before inference.
            frames = _to_device(frames, stream)
            self.preprocessor(frames, out=out, stream=stream)
        else:
            self.preprocessor(np.ascontiguousarray(frames) if not frames.flags.c_contiguous else frames, out=out)

    # -- saliency -------------------------------------------------------------------------

    def saliency(self, frames, *, target=None, layer=None) -> list[np.ndarray]:
        """Grad-CAM maps at each frame's own size (list of ``(H, W)`` float32 in [0, 1]).

        Uses the bundle's torch model (FP32, on this classifier's device) whatever
        the inference backend, so every backend can explain its predictions.
        """
        with self._lock:
            return self._saliency_unlocked(frames, target=target, layer=layer)

    def _saliency_unlocked(self, frames, *, target=None, layer=None) -> list[np.ndarray]:
        from .saliency import grad_cam, to_frame

        frame_list = ([as_frame(f) for f in frames] if isinstance(frames, (list, tuple))
                      else split_frames(np.asarray(frames)))
        model = self._torch_model()
        maps = []
        for f in frame_list:
            f = np.ascontiguousarray(f)
            params = self.preprocessor.params.replace(dtype="float32")
            from .preprocessing import Preprocessor

            x = Preprocessor(params, threads=self.preprocessor.threads)(f)
            cam = grad_cam(model, x, target=target, layer=layer)[0]
            m = to_frame(cam, f.shape[:2], self._roi)
            peak = float(m.max())
            maps.append(m / peak if peak > 0 else m)  # resampling moves the peak a little
        return maps

    def save_saliency(self, frames, directory: str | Path, names: Sequence[str], **kwargs) -> list[Path]:
        """Write one overlay PNG per frame into ``directory`` (``<name>.png``)."""
        from .saliency import save_overlay

        frame_list = ([as_frame(f) for f in frames] if isinstance(frames, (list, tuple))
                      else split_frames(np.asarray(frames)))
        if len(names) != len(frame_list):
            raise ValueError(f"need one name per frame: {len(names)} names for {len(frame_list)} frames")
        maps = self.saliency(frame_list, **kwargs)
        return [save_overlay(Path(directory) / f"{n}.png", f, m) for f, m, n in zip(frame_list, maps, names)]

    def _torch_model(self):
        if self._saliency_model is None:
            if self.engine.backend == "torch" and self.engine.precision == "fp32":
                # Grad-CAM puts hooks on the model: a concurrent engine's module
                # is in use by other threads' predict() meanwhile, so use a copy.
                import copy

                module = self.engine.module
                self._saliency_model = copy.deepcopy(module) if self._run_lock is not self._lock else module
            else:
                model = self.bundle.build_model()
                if self.engine.device == "cuda":
                    model = model.to("cuda")
                self._saliency_model = model
        return self._saliency_model


#: What Classifier.predict / logits / saliency take (docs/contracts.md, "Frames given to a Classifier").
FRAME_LAYOUTS = ("(H, W) gray frame, (H, W, 3) RGB frame, (H, W, 4) RGBA frame (alpha dropped), "
                 "(N, H, W) gray batch, (N, H, W, 1) gray batch, (N, H, W, 3) RGB batch, "
                 "(N, H, W, 4) RGBA batch (alpha dropped), or a list of single frames")


def frame_layout(a) -> tuple[Any, bool]:
    """``(frames, single)``: the array as preprocessing reads it, and whether it is one frame.

    The rules are the ones of :func:`thyrofast.read` for files: a last axis of
    3 is RGB, of 4 is RGBA (its alpha is dropped, as the image reader drops it),
    so a 3-D array with last axis 3 or 4 is *one* colour frame.  A 3-D array
    whose last axis is 1 or 2 is refused: it could be one frame with a channel
    axis or a batch of frames one or two pixels wide, and guessing would give a
    wrong answer without an error.  Any other shape is a ValueError naming the
    accepted layouts.  (Frames wider than 4 pixels in a 3-D array are a batch.)
    """
    shape = tuple(a.shape)
    if len(shape) == 2:
        return a, True
    if len(shape) == 3:
        if shape[0] == 0:
            return a, False  # no frames (an RGBA frame without rows is no frame either)
        if shape[-1] == 3:
            return a, True
        if shape[-1] == 4:
            return a[..., :3], True
        if shape[-1] in (1, 2):
            raise ValueError(
                f"frames of shape {shape} are ambiguous (one frame with {shape[-1]} channel(s), or a batch of "
                f"{shape[0]} frames {shape[-1]} pixel(s) wide?): pass one gray frame as (H, W), a batch as "
                f"(N, H, W, 1); accepted: {FRAME_LAYOUTS}")
        return a, False
    if len(shape) == 4 and shape[-1] in (1, 3, 4):
        return (a[..., :3] if shape[-1] == 4 else a), False
    raise ValueError(f"frames must be one of: {FRAME_LAYOUTS}; got shape {shape}")


def as_frame(f) -> Any:
    """One element of a list of frames: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped)."""
    a = f if hasattr(f, "__cuda_array_interface__") else np.asarray(f)
    shape = tuple(a.shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] == 3):
        return a
    if len(shape) == 3 and shape[-1] == 1:
        return a[..., 0]
    if len(shape) == 3 and shape[-1] == 4:
        return a[..., :3]
    raise ValueError(f"each frame in a list must be one frame, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
                     f"(RGBA, alpha dropped); got shape {shape}")


def split_frames(a) -> list:
    """The single frames of an array in any accepted layout (see :func:`frame_layout`)."""
    a, single = frame_layout(a)
    if single:
        return [a]
    return [f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f for f in a]



def _bundle_sha256(bundle) -> str:
    sha = getattr(bundle, "sha256", None)
    if isinstance(sha, str):
        return sha
    from ._fs import sha256_file

    return sha256_file(Path(bundle.path) / "thyrofast.json")


def _to_device(frames, stream):
    """Host frames -> a CUDA array (torch if available, else CuPy) on ``stream``."""
    if hasattr(frames, "__cuda_array_interface__"):
        return frames
    frames = np.ascontiguousarray(frames)
    try:
        import torch

        if isinstance(stream, torch.cuda.Stream):
            with torch.cuda.stream(stream):
                return torch.from_numpy(frames).to("cuda", non_blocking=True)
    except ImportError:
        pass
    import cupy

    with stream if stream is not None else cupy.cuda.Stream.null:
        return cupy.asarray(frames)
