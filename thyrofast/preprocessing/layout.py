"""Host (CPU) arrays for the core: the accepted layouts, the pixel dtypes,
byte order, CPU tensors and array-likes, and the ``out`` buffer.

The layout rule itself (which shapes are frames, which axes are added) lives
in the core (``_core.frames_4d``, ``csrc/python/array_views.h``); NumPy input
reaches it directly.  What the core cannot read (big-endian uint16, foreign
array types) is converted here, and everything else is refused with an error
that names the problem.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core

__all__ = ["ACCEPTED", "frames_4d", "host_frames", "host_out", "is_torch_cpu_tensor", "to_host"]

#: The pixel dtypes the core reads, as error messages name them.
ACCEPTED = "uint8 or uint16"


def frames_4d(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(N, H, W, C) shape and strides for an accepted input shape; ValueError otherwise.

    (H, W) gray; (H, W, 3) colour; (H, W, 4) RGBA; (N, H, W) gray batch;
    (N, H, W, 1|3|4).  RGBA's alpha is dropped (C = 3, same strides, no copy),
    as ``Classifier.predict`` and ``thyrofast.read`` drop it.  A 3-D array
    whose last axis is 3 or 4 is read as one colour frame: pass a gray batch
    of 3- or 4-pixel-wide frames as (N, H, 3|4, 1).  Empty frames are refused.
    The rule itself lives in the core (``_core.frames_4d``), which NumPy
    input reaches directly.
    """
    return _core.frames_4d(tuple(shape), tuple(strides))


def host_frames(frames: np.ndarray, core_params: Any = None) -> np.ndarray:
    """The frames as the core reads them: uint8/uint16 in native byte order.

    With ``core_params``, frames that need a byte-order copy are validated
    first (shape, roi, size limits: what the core checks), so a frame the
    core refuses is never copied (a stride-0 view can stand for terabytes).
    """
    dt = frames.dtype
    if dt.kind != "u" or dt.itemsize not in (1, 2):
        raise TypeError(f"frames must be {ACCEPTED}, got {dt}; convert explicitly (no silent casts)")
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        native = dt.newbyteorder("=")
        if core_params is not None:
            _core.validate(frames.view(native), core_params)  # same bytes reinterpreted: no copy
        # value-preserving: same numbers in native byte order (common in DICOM)
        frames = frames.astype(native)
    return frames


def is_torch_cpu_tensor(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "numpy") and getattr(getattr(x, "device", None), "type", "") == "cpu"


def to_host(frames: Any) -> tuple[np.ndarray, bool]:
    """(a NumPy array of ``frames``, whether they came as a CPU tensor); TypeError for anything else.

    CPU tensors and array-likes are viewed or converted, never cast: the
    dtype is checked by :func:`host_frames`.
    """
    if is_torch_cpu_tensor(frames):
        return frames.numpy(), True
    if not isinstance(frames, np.ndarray):
        if hasattr(frames, "__array__") or hasattr(frames, "__array_interface__"):
            return np.asarray(frames), False
        raise TypeError(f"frames must be a NumPy/CuPy/PyTorch array of {ACCEPTED}, got {type(frames).__name__}")
    return frames, False


def host_out(out: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A new ``shape`` array of ``dtype`` (``out`` None), or ``out`` as a NumPy array once it is
    checked: a NumPy array or CPU tensor of that dtype and shape, C-contiguous and writeable."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if is_torch_cpu_tensor(out):
        out = out.numpy()
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array (or CPU tensor), got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out
