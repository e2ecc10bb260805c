"""The deployable model bundle: a directory with ``thyrofast.json`` + artifacts.

``thyrofast.json`` (the model card) lists every artifact with its SHA-256 and
size.  An artifact's bytes are checked against that hash *before* anything is
deserialized, so a modified or corrupted file is refused instead of loaded.
Weights are safetensors (never pickle, never ``torch.load``).  Every file is
written atomically (temp file in the same folder + fsync + ``os.replace``), so
a crash leaves either the old or the new file, never half of one.

See docs/contracts.md ("Model bundle") for the format.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ._fs import atomic_write, atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from .errors import InputError
from .io.schema import CROP_MODES

__all__ = [
    "Bundle", "BundleIntegrityError", "BUNDLE_FILE", "FORMAT", "FORMAT_VERSION",
    "ARTIFACT_FILES", "sha256_file", "sha256_bytes", "atomic_write", "atomic_write_bytes",
    "atomic_write_json",
]

BUNDLE_FILE = "thyrofast.json"
FORMAT = "thyrofast-bundle"
FORMAT_VERSION = 1
READ_CROPS = CROP_MODES  # thyrofast.read(crop=...) modes a bundle may name

#: artifact name -> file name inside the bundle (docs/contracts.md)
ARTIFACT_FILES: dict[str, str] = {
    "weights": "weights.safetensors",
    "onnx_fp32": "model.onnx",
    "onnx_fp16": "model.fp16.onnx",
    "onnx_int8_trt": "model.int8.qdq-s8s8.onnx",
    "onnx_int8_cpu": "model.int8.qdq-u8s8.onnx",
}


class BundleIntegrityError(InputError):
    """An artifact does not match the SHA-256 recorded in ``thyrofast.json``."""

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__("unreadable", message, source=source)


# --------------------------------------------------------------------- ONNX external data
def refuse_external_data(data: bytes, what: str, source: str) -> None:
    """BundleIntegrityError if the serialized ONNX model ``data`` is not a model or
    takes any tensor (initializer, Constant, sparse, in any subgraph or function)
    from external data."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise BundleIntegrityError(f"{what} is not a valid ONNX model: {exc}", source=source) from None
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            loc = {e.key: e.value for e in tensor.external_data}.get("location", "")
            raise BundleIntegrityError(
                f"{what} takes tensor {tensor.name!r} from external data {loc!r}, which the model card's "
                "SHA-256 does not cover; bundle models must hold all their tensors; refusing to load it",
                source=source)


def _tensors(message):
    """Every TensorProto inside a protobuf message, however deeply nested (a generic
    walk, so no place a tensor can hide -- subgraph, function, sparse value -- is missed)."""
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message
    from onnx import TensorProto

    stack = [message]
    while stack:
        msg = stack.pop()
        if isinstance(msg, TensorProto):
            yield msg
            continue
        for field, value in msg.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                stack.extend([value] if isinstance(value, Message) else value)


# --------------------------------------------------------------------- the bundle
def _thyrofast_version() -> str:
    from ._version import __version__

    return __version__


class Bundle:
    """A model bundle on disk.  Use :meth:`load` to open, :meth:`create` to write."""

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self._manifest = manifest

    # ---- reading
    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """Open the bundle folder ``path``; with ``verify`` check every artifact's hash."""
        path = Path(path)
        card = path / BUNDLE_FILE
        if path.is_file() and path.name == BUNDLE_FILE:
            path, card = path.parent, path
        if not card.is_file():
            raise InputError("unreadable", f"not a thyrofast model bundle: no {BUNDLE_FILE}",
                             source=str(path))
        from .card_schema import parse_card

        try:
            manifest = parse_card(card.read_bytes())
        except ValueError as exc:
            raise InputError("unreadable", f"{BUNDLE_FILE} is not valid JSON: {exc}",
                             source=str(card)) from None
        _validate_manifest(manifest, card)
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    @property
    def manifest(self) -> dict:
        """The parsed ``thyrofast.json`` (a copy: edit through :meth:`update`)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self._manifest["classes"])

    @property
    def operating_point(self) -> dict | None:
        """The decision threshold train chose on the validation patients (:mod:`thyrofast.operating_point`)."""
        op = self._manifest.get("operating_point")
        return dict(op) if op else None

    @property
    def conformal(self) -> dict | None:
        """Prediction-set calibration (:mod:`thyrofast.conformal`); None for bundles without one."""
        c = self._manifest.get("conformal")
        return json.loads(json.dumps(c)) if c else None

    @property
    def ood(self) -> dict | None:
        """The out-of-distribution gate (:mod:`thyrofast.ood`); None for bundles without one."""
        c = self._manifest.get("ood")
        return json.loads(json.dumps(c)) if c else None

    @property
    def arch(self) -> str:
        return self._manifest["arch"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self._manifest["input_shape"])

    @property
    def temperature(self) -> float:
        return float(self._manifest.get("temperature", 1.0))

    @property
    def aggregation(self) -> str | dict:
        """The image -> patient rule: "mean_log_prob" or a fitted rule (:mod:`thyrofast.aggregation`)."""
        return self._manifest.get("aggregation", "mean_log_prob")

    @property
    def read_options(self) -> dict:
        """:func:`thyrofast.read` options the model was trained with (``{"crop": ...}``).

        Files go through them in ``predict``/``evaluate``; arrays given to
        :class:`thyrofast.Classifier` are taken as already cropped.
        """
        return {"crop": "auto", **dict(self._manifest.get("read") or {})}

    @property
    def preprocess_dict(self) -> dict:
        return dict(self._manifest["preprocess"])

    @property
    def preprocess_params(self):
        """The exact preprocessing the model was trained with (a PreprocessParams)."""
        from . import PreprocessParams

        return PreprocessParams.from_dict(self._manifest["preprocess"])

    @property
    def artifacts(self) -> tuple[str, ...]:
        return tuple(self._manifest["artifacts"])

    def has(self, name: str) -> bool:
        return name in self._manifest["artifacts"]

    @property
    def sha256(self) -> str:
        """Identity of the bundle: SHA-256 of its ``thyrofast.json`` (which pins every artifact)."""
        return sha256_file(self.path / BUNDLE_FILE)

    def _entry(self, name: str) -> dict:
        try:
            return self._manifest["artifacts"][name]
        except KeyError:
            have = ", ".join(self._manifest["artifacts"]) or "none"
            raise KeyError(f"bundle {self.path} has no artifact {name!r} (it has: {have})") from None

    def _file(self, name: str) -> Path:
        return self.path / self._entry(name)["path"]

    def _check(self, name: str, data: bytes | None = None) -> None:
        entry = self._entry(name)
        file = self.path / entry["path"]
        if data is None:
            if not file.is_file():
                raise BundleIntegrityError(f"artifact {name!r} ({entry['path']}) is missing",
                                           source=str(file))
            size = file.stat().st_size
        else:
            size = len(data)
        if size != entry["bytes"]:
            raise BundleIntegrityError(
                f"artifact {name!r} ({entry['path']}) has {size} bytes, {BUNDLE_FILE} records "
                f"{entry['bytes']}: the bundle was modified or corrupted; refusing to load it",
                source=str(file))
        digest = sha256_bytes(data) if data is not None else sha256_file(file)
        if digest != entry["sha256"]:
            raise BundleIntegrityError(
                f"artifact {name!r} ({entry['path']}) fails its SHA-256 check (expected "
                f"{entry['sha256'][:16]}..., got {digest[:16]}...): the bundle was modified or "
                "corrupted; refusing to load it", source=str(file))

    def verify(self) -> None:
        """Check the size and SHA-256 of every artifact, and that no ONNX artifact
        uses external data; raise BundleIntegrityError."""
        for name in self._manifest["artifacts"]:
            if name.startswith("onnx"):
                self.read_artifact(name)  # hash and external-data check on the same bytes
            else:
                self._check(name)

    def _check_external_data(self, name: str, data: bytes) -> None:
        """An ONNX artifact must hold every tensor itself: no external data at all.

        External data is not covered by the artifact's hash, and a runtime given
        the model as bytes resolves a bare ``location`` against the *current
        working directory*: every byte that reaches an engine must be covered by
        the card's SHA-256.  Our exporter never writes external data (a model
        over protobuf's 2 GB limit cannot be serialized into a bundle at all),
        so refusing it costs nothing legitimate.
        """
        if not name.startswith("onnx"):
            return
        refuse_external_data(data, f"artifact {name!r}", str(self._file(name)))

    def artifact_path(self, name: str) -> Path:
        """Path of artifact ``name``, after verifying its hash (raises if it does not match).

        Readers that can take bytes should prefer :meth:`read_artifact`, which
        hashes exactly the bytes it returns (no window between check and use).
        """
        self._check(name)
        if name.startswith("onnx"):
            self._check_external_data(name, self._file(name).read_bytes())
        return self._file(name)

    def read_artifact(self, name: str) -> bytes:
        """The verified bytes of artifact ``name``."""
        file = self._file(name)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise BundleIntegrityError(f"artifact {name!r} ({file.name}) is missing",
                                       source=str(file)) from None
        self._check(name, data)
        self._check_external_data(name, data)
        return data

    def state_dict(self) -> dict:
        """The model weights (torch tensors), read from verified safetensors bytes."""
        return load_weights(self.read_artifact("weights"), str(self._file("weights")))

    @property
    def model_config(self) -> dict:
        cfg = {"arch": self.arch, "in_channels": int(self._manifest["in_channels"]),
               "width": float(self._manifest.get("width", 1.0)), "num_classes": len(self.classes)}
        if int(self._manifest.get("members", 1)) > 1:
            cfg["members"] = int(self._manifest["members"])
        return cfg

    def build_model(self):
        """The trained torch model, in eval mode, on the CPU."""
        from .models import build_from_config

        model = build_from_config(self.model_config)
        load_into(model, self.state_dict(), str(self._file("weights")))
        return model.eval()

    # ---- writing
    @classmethod
    def create(cls, path: str | os.PathLike, *, state_dict: Mapping, model_config: Mapping,
               preprocess: Any, input_shape, temperature: float = 1.0,
               training: Mapping | None = None, classes=None, aggregation: Any = "mean_log_prob",
               read: Mapping | None = None) -> "Bundle":
        """Write a new bundle (weights + model card) into folder ``path``.

        ``preprocess``: a PreprocessParams or its ``to_dict()``.  Existing ONNX
        artifacts in the folder are dropped from the card (they belonged to
        other weights); export them again with :mod:`thyrofast.export`.
        """
        from safetensors.torch import save as save_safetensors

        from . import CLASSES

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pre = preprocess.to_dict() if hasattr(preprocess, "to_dict") else dict(preprocess)
        shape = [int(v) for v in input_shape]
        if len(shape) != 3:
            raise ValueError(f"input_shape must be [C, H, W], got {input_shape!r}")
        temperature = float(temperature)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        data = save_safetensors(tensors, metadata={"format": "pt", "arch": str(model_config["arch"])})
        weights_file = ARTIFACT_FILES["weights"]
        atomic_write_bytes(path / weights_file, data)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "classes": list(classes or CLASSES),
            "arch": str(model_config["arch"]),
            "in_channels": int(model_config.get("in_channels", shape[0])),
            "width": float(model_config.get("width", 1.0)),
            **({"members": int(model_config["members"])} if int(model_config.get("members", 1)) > 1 else {}),
            "input_shape": shape,
            "preprocess": pre,
            "temperature": temperature,
            "aggregation": json.loads(json.dumps(aggregation)),
            "read": dict(read or {"crop": "auto"}),
            "training": dict(training or {}),
            "thyrofast_version": _thyrofast_version(),
            "artifacts": {"weights": {"path": weights_file, "sha256": sha256_bytes(data),
                                      "bytes": len(data)}},
        }
        _validate_manifest(manifest, path / BUNDLE_FILE)
        atomic_write_json(path / BUNDLE_FILE, manifest)
        return cls(path, manifest)

    def update(self, **fields) -> None:
        """Set top-level card fields (e.g. ``temperature``, ``training``) and save atomically."""
        forbidden = {"format", "format_version", "artifacts"} & set(fields)
        if forbidden:
            raise ValueError(f"cannot set {sorted(forbidden)} through update()")
        new = self.manifest
        new.update(json.loads(json.dumps(fields)))
        _validate_manifest(new, self.path / BUNDLE_FILE)
        self._manifest = new
        self._save()

    def add_artifact(self, name: str, produced: str | os.PathLike, *, info: Mapping | None = None) -> Path:
        """Move the finished file ``produced`` into the bundle as artifact ``name``.

        ``produced`` should be a temp file in the bundle folder (same file
        system); it is hashed, fsynced and renamed over the final name, then the
        card is updated.  ``info`` is stored beside the hash (e.g. precision notes).
        """
        if name not in ARTIFACT_FILES:
            raise ValueError(f"unknown artifact {name!r}; known: {', '.join(ARTIFACT_FILES)}")
        produced = Path(produced)
        final = self.path / ARTIFACT_FILES[name]
        digest = sha256_file(produced)
        size = produced.stat().st_size
        with open(produced, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(produced, final)
        entry = {"path": final.name, "sha256": digest, "bytes": size}
        if info:
            entry.update(json.loads(json.dumps(dict(info))))
        self._manifest["artifacts"][name] = entry
        self._save()
        return final

    def remove_artifact(self, name: str) -> None:
        """Drop artifact ``name`` from the card and delete its file (no-op if absent)."""
        if name == "weights":
            raise ValueError("a bundle always keeps its weights")
        entry = self._manifest["artifacts"].pop(name, None)
        self._save()
        with contextlib.suppress(FileNotFoundError):
            (self.path / (entry["path"] if entry else ARTIFACT_FILES[name])).unlink()

    def _save(self) -> None:
        atomic_write_json(self.path / BUNDLE_FILE, self._manifest)

    def __repr__(self) -> str:
        return (f"Bundle({str(self.path)!r}, arch={self.arch!r}, input_shape={list(self.input_shape)}, "
                f"artifacts={list(self.artifacts)})")


def load_weights(data: bytes, source: str) -> dict:
    """Safetensors bytes -> torch tensors; InputError (not SafetensorError) if they are not safetensors.

    The bytes have passed the card's hash, but a card can be edited together
    with its files: a pickle or a truncated file must be one clear error.
    """
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except Exception as exc:  # SafetensorError, and whatever a malformed header raises
        raise InputError("unreadable", f"weights are not a valid safetensors file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})", source=source) from None


def load_into(model, state: Mapping, source: str) -> None:
    """``model.load_state_dict(state, strict=True)``; InputError when the weights do not fit the model."""
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise InputError("unreadable", f"the weights do not fit the card's model: "
                         f"{' '.join(x.strip() for x in first[:3])[:300]}", source=source) from None


def _validate_manifest(m: Any, source: Path) -> None:
    def bad(msg: str):
        raise InputError("unreadable", f"invalid {BUNDLE_FILE}: {msg}", source=str(source))

    if not isinstance(m, dict):
        bad("not a JSON object")
    if m.get("format") != FORMAT:
        bad(f"format is {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        bad(f"format_version {m.get('format_version')!r} is not supported by this thyrofast "
            f"(it reads version {FORMAT_VERSION})")
    for key in ("classes", "arch", "input_shape", "preprocess", "artifacts", "in_channels"):
        if key not in m:
            bad(f"missing field {key!r}")
    if not isinstance(m["artifacts"], dict) or "weights" not in m["artifacts"]:
        bad("no 'weights' artifact")
    for name, entry in m["artifacts"].items():
        if not isinstance(entry, dict) or not {"path", "sha256", "bytes"} <= set(entry):
            bad(f"artifact {name!r} needs path, sha256 and bytes")
        p = entry["path"]
        # Artifacts live directly in the bundle folder: no absolute paths, no '..'.
        if not isinstance(p, str) or not p or p in (".", "..") or "/" in p or "\\" in p \
                or os.path.isabs(p):
            bad(f"artifact {name!r} has an unsafe path {p!r}")
        if not (isinstance(entry["sha256"], str) and len(entry["sha256"]) == 64):
            bad(f"artifact {name!r} has a malformed sha256")
        if isinstance(entry["bytes"], bool) or not isinstance(entry["bytes"], int) or entry["bytes"] < 0:
            bad(f"artifact {name!r}: field 'bytes' must be a non-negative integer (the file size), "
                f"got {entry['bytes']!r}")
    if not (isinstance(m["input_shape"], list) and len(m["input_shape"]) == 3):
        bad("input_shape must be [C, H, W]")
    # every other field's type and range (classes, temperature, preprocess, ...)
    from .card_schema import check_card_fields

    check_card_fields(m, bad)
