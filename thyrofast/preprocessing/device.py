"""Device arrays (CuPy, PyTorch, anything with ``__cuda_array_interface__``)
for the CUDA preprocessing kernel.  Neither CuPy nor torch is required: the
output is allocated with the input's own library.

The frames go to the core as one ``_core.DeviceFrames`` (device pointer,
pixel type code, (N, H, W, C) shape and element strides); the core checks
them (``csrc/python/array_views.h``, ``device_batch``) and the parameters
before the kernel runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .layout import frames_4d

__all__ = ["is_cuda_array", "require_cuda", "run_device", "stream_handle"]

_TYPESTR = {"|u1": 0, "<u2": 1}
_CUDA_CHECKED: list[bool] = []


def require_cuda() -> None:
    """RuntimeError unless this build has CUDA and a device is present."""
    if _CUDA_CHECKED:  # once found, a build with CUDA and a device stay so (this runs on every batch-1 call)
        return
    if not _core.build_info()["cuda"]:
        raise RuntimeError("thyrofast was built without CUDA (THYROFAST_CUDA=OFF or no nvcc at build time)")
    if _core.cuda_device_count() == 0:
        raise RuntimeError("no CUDA device is available (no GPU, or no NVIDIA driver)")
    _CUDA_CHECKED.append(True)


def is_cuda_array(x: Any) -> bool:
    if type(x).__module__ == "torch":  # a torch tensor builds its interface dict on every access: skip that
        return bool(x.is_cuda)
    return hasattr(x, "__cuda_array_interface__")


def _output_shape(params: Any, n: int) -> tuple[int, int, int, int]:
    return (n, params.channels, params.out_h, params.out_w)


def _interface(x: Any) -> dict:
    cai = x.__cuda_array_interface__
    if cai.get("mask") is not None:
        raise ValueError("masked device arrays are not supported")
    return cai


def stream_handle(stream: Any) -> int:
    """cudaStream_t as an int from None / int / CuPy or torch stream objects."""
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream", "handle"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise TypeError(f"stream must be an int handle or a CuPy/PyTorch stream, got {type(stream).__name__}")


def _library(x: Any) -> str:
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("torch"):
        return "torch"
    return "other"


def _current_stream(x: Any, lib: str) -> int:
    if lib == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().ptr
    if lib == "torch":
        import torch

        return torch.cuda.current_stream(x.device).cuda_stream
    return 0


def _empty_like_lib(x: Any, lib: str, shape: tuple[int, ...], dtype: Any) -> Any:
    if lib == "cupy":
        import cupy

        with cupy.cuda.Device(x.device.id):
            return cupy.empty(shape, dtype=dtype)
    if lib == "torch":
        import torch

        tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float16
        return torch.empty(shape, dtype=tdt, device=x.device)
    raise TypeError("pass out= for device arrays that are neither CuPy nor PyTorch")


def _run_torch(frames: Any, params: Any, out_dtype: Any, out: Any, stream: Any) -> Any:
    """The same call for torch tensors, from the tensor's own attributes: a
    torch tensor's __cuda_array_interface__ is rebuilt on each access, which
    costs a batch-1 call more than the kernel.  None: take the general path
    (which names whatever is wrong)."""
    import torch

    code = 0 if frames.dtype == torch.uint8 else (1 if frames.dtype == getattr(torch, "uint16", None) else -1)
    if code < 0 or frames.requires_grad:
        return None
    want = torch.float32 if np.dtype(out_dtype) == np.float32 else torch.float16
    if out is not None and not (type(out) is torch.Tensor and out.is_cuda and out.dtype == want
                                and not out.requires_grad and out.is_contiguous()):
        return None
    item = 1 if code == 0 else 2
    shape4, strides4 = frames_4d(tuple(frames.shape), tuple(s * item for s in frames.stride()))
    out_shape = _output_shape(params, shape4[0])
    if out is None:
        out = torch.empty(out_shape, dtype=want, device=frames.device)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out must have shape {out_shape}, got {tuple(out.shape)}")
    handle = stream_handle(stream) if stream is not None else torch.cuda.current_stream(frames.device).cuda_stream
    device_frames = _core.DeviceFrames(frames.data_ptr(), code, shape4, tuple(s // item for s in strides4))
    _core.preprocess_cuda(device_frames, params, out.data_ptr(), handle)
    return out


def run_device(frames: Any, params: Any, out_dtype: Any, out: Any, stream: Any) -> Any:
    """Run the CUDA kernel on device ``frames`` with ``params`` (a ``_core.Params``) into ``out``
    (None: a new C-contiguous array of ``out_dtype`` from the frames' own library); returns out."""
    if type(frames).__module__ == "torch":
        done = _run_torch(frames, params, out_dtype, out, stream)
        if done is not None:
            return done

    cai = _interface(frames)
    typestr = cai["typestr"]
    if typestr not in _TYPESTR:
        raise TypeError(f"frames must be uint8 or uint16 (little-endian), got typestr {typestr!r}")
    item = 1 if typestr == "|u1" else 2
    shape = tuple(int(v) for v in cai["shape"])
    if cai.get("strides") is None:
        strides, acc = [], item
        for dim in reversed(shape):
            strides.append(acc)
            acc *= dim
        strides = tuple(reversed(strides))
    else:
        strides = tuple(int(v) for v in cai["strides"])
    if any(s % item for s in strides):
        raise ValueError("device array strides must be multiples of the element size")
    shape4, strides4 = frames_4d(shape, strides)
    est = tuple(s // item for s in strides4)
    ptr = int(cai["data"][0])
    lib = _library(frames)
    handle = stream_handle(stream) if stream is not None else _current_stream(frames, lib)
    out_shape = _output_shape(params, shape4[0])
    if out is None:
        out = _empty_like_lib(frames, lib, out_shape, out_dtype)
    ocai = _interface(out)
    want = "<f4" if np.dtype(out_dtype) == np.float32 else "<f2"
    if ocai["typestr"] != want:
        raise TypeError(f"out must have dtype {np.dtype(out_dtype)}, got typestr {ocai['typestr']!r}")
    if tuple(ocai["shape"]) != out_shape:
        raise ValueError(f"out must have shape {out_shape}, got {tuple(ocai['shape'])}")
    if ocai.get("strides") is not None:
        c_strides, acc = [], np.dtype(out_dtype).itemsize
        for dim in reversed(out_shape):
            c_strides.append(acc)
            acc *= dim
        if tuple(ocai["strides"]) != tuple(reversed(c_strides)):
            raise ValueError("out must be C-contiguous")
    if ocai["data"][1]:
        raise ValueError("out is read-only")
    _core.preprocess_cuda(_core.DeviceFrames(ptr, _TYPESTR[typestr], shape4, est), params, int(ocai["data"][0]), handle)
    return out
