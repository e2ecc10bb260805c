"""Content-addressed cache of built TensorRT engines (or any built blob).

An engine is valid only for the exact ONNX graph, TensorRT version, GPU model
and compute capability, and optimization profile it was built for, so the key
is the SHA-256 of exactly those fields.  Engines are executable artifacts
(NVIDIA, "Security Considerations: Engine Deserialization and the Trust
Boundary": deserialize only engines you built yourself or received over a
trusted channel), hence:

* every entry is written atomically: temp file in the same folder, fsync,
  ``os.replace``; the engine first, then its manifest, which is the commit point;
* the manifest records the key fields and the engine's SHA-256 and size, and
  :meth:`EngineCache.load` hashes the engine bytes *before* anything
  deserializes them; any mismatch (corrupt, truncated, swapped, foreign key)
  is either rebuilt (``on_mismatch="rebuild"``, the default: the cache is ours)
  or refused with :class:`EngineCacheError` (``on_mismatch="refuse"``);
* the cache folder must belong to the current user and not be writable by
  group or others (anyone who can write there can run code on the GPU host).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from .._fs import atomic_write_bytes

__all__ = [
    "EngineKey",
    "EngineCache",
    "EngineCacheError",
    "atomic_write_bytes",
    "default_cache_dir",
]

MANIFEST_FORMAT = "thyrofast-engine-cache"
MANIFEST_VERSION = 1


class EngineCacheError(RuntimeError):
    """A cached engine failed its integrity check and the policy is to refuse it."""


def default_cache_dir() -> Path:
    """``$THYROFAST_CACHE_DIR/engines``, else ``$XDG_CACHE_HOME/thyrofast/engines``, else ``~/.cache/...``."""
    if os.environ.get("THYROFAST_CACHE_DIR"):
        return Path(os.environ["THYROFAST_CACHE_DIR"]) / "engines"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "thyrofast" / "engines"


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on.  ``digest`` names the cache entry."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    #: ((min N,C,H,W), (opt ...), (max ...)) for the one input
    profile: tuple
    #: other builder settings that change the engine (e.g. optimization level)
    options: tuple = ()

    def to_dict(self) -> dict:
        return {
            "onnx_sha256": self.onnx_sha256,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "profile": [list(map(int, s)) for s in self.profile],
            "options": [list(o) if isinstance(o, (tuple, list)) else o for o in self.options],
        }

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class EngineCache:
    def __init__(self, root: str | Path | None = None, *, on_mismatch: str = "rebuild"):
        if on_mismatch not in ("rebuild", "refuse"):
            raise ValueError("on_mismatch must be 'rebuild' or 'refuse'")
        self.root = Path(root) if root is not None else default_cache_dir()
        self.on_mismatch = on_mismatch

    # -- layout ---------------------------------------------------------------------

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.digest}.engine"

    def manifest_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.digest}.json"

    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
        # Timing caches are only valid for one TensorRT version and device.
        tag = hashlib.sha256(f"{trt_version}|{gpu_name}|{compute_capability}".encode()).hexdigest()[:16]
        return self.root / f"timing-{tag}.cache"

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._check_trusted_dir()

    def _check_trusted_dir(self) -> None:
        st = self.root.stat()
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise EngineCacheError(f"engine cache {self.root} belongs to another user; refusing to use it")
        if st.st_mode & 0o022:
            raise EngineCacheError(
                f"engine cache {self.root} is writable by group/others (mode {oct(st.st_mode & 0o777)}); "
                "engines are executable, fix it with: chmod 700 " + str(self.root)
            )

    # -- entries --------------------------------------------------------------------

    def load(self, key: EngineKey) -> bytes | None:
        """The verified engine bytes for ``key``, or ``None`` if absent (or dropped as invalid)."""
        mpath, epath = self.manifest_path(key), self.engine_path(key)
        if not mpath.exists():
            # No manifest = never committed (e.g. a crash between the two writes).
            return None
        self._check_trusted_dir()
        problem = None
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as exc:
            manifest, problem = None, f"unreadable manifest ({exc})"
        data = None
        if manifest is not None:
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key.to_dict():
                problem = "manifest does not describe this key"
            else:
                try:
                    data = epath.read_bytes()
                except OSError as exc:
                    problem = f"engine file missing ({exc})"
                else:
                    digest = hashlib.sha256(data).hexdigest()
                    if len(data) != manifest.get("bytes") or digest != manifest.get("engine_sha256"):
                        problem = "engine SHA-256 differs from its manifest (corrupt or modified)"
        if problem is None:
            return data
        if self.on_mismatch == "refuse":
            raise EngineCacheError(f"cached engine {epath.name}: {problem}; refusing to deserialize it")
        self.evict(key)
        return None

    def store(self, key: EngineKey, data: bytes, *, extra: dict | None = None) -> Path:
        self._ensure_root()
        data = bytes(data)
        atomic_write_bytes(self.engine_path(key), data)
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "key": key.to_dict(),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "created_unix": time.time(),
            **({"extra": extra} if extra else {}),
        }
        atomic_write_bytes(self.manifest_path(key), json.dumps(manifest, indent=1, sort_keys=True).encode())
        return self.engine_path(key)

    def evict(self, key: EngineKey) -> None:
        # Manifest first: without it the entry is already "absent".
        for p in (self.manifest_path(key), self.engine_path(key)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    @contextlib.contextmanager
    def _lock(self, key: EngineKey):
        """Serialize builders of one key across processes (builds take minutes)."""
        self._ensure_root()
        path = self.root / f"{key.digest}.lock"
        with open(path, "a+b") as f:
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - non-POSIX: best effort
                pass
            yield

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """``(engine_bytes, built)``: the cached engine, or a fresh build that is then stored."""
        data = self.load(key)
        if data is not None:
            return data, False
        with self._lock(key):
            data = self.load(key)  # another process may have built it meanwhile
            if data is not None:
                return data, False
            data = bytes(build())
            self.store(key, data)
            return data, True

    # -- TensorRT timing cache (advisory: a bad one only costs build time) ------------

    def read_timing_cache(self, trt_version: str, gpu_name: str, compute_capability: str) -> bytes:
        path = self.timing_cache_path(trt_version, gpu_name, compute_capability)
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def write_timing_cache(self, trt_version: str, gpu_name: str, compute_capability: str, data: bytes) -> None:
        self._ensure_root()
        atomic_write_bytes(self.timing_cache_path(trt_version, gpu_name, compute_capability), bytes(data))
