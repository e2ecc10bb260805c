"""Preprocessing: raw ultrasound frames -> network input (spec v1).

The work is done by the C++ core (``thyrofast._core``; CUDA kernel with
``device="cuda"``).  Parameters are validated once, when a Preprocessor is
made.  NumPy frames go to the core as they are: it reads every accepted
layout (strides of any sign, no copy) and checks the frames and ``out``
before any work starts.  What it refuses comes back through the general path
here, which converts what can be converted (byte order, CPU tensors:
``layout``; CUDA arrays: ``device``) and words the errors.  See
``csrc/include/thyrofast/preprocess.h`` for the spec.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import _core
from .device import is_cuda_array, require_cuda, run_device, stream_handle
from .layout import frames_4d, host_frames, host_out, to_host
from .params import MAX_THREADS, OUTPUT_DTYPES, PreprocessParams, check_threads

__all__ = ["Preprocessor", "preprocess"]


class Preprocessor:
    """Reusable preprocessing with validated parameters.

    >>> pre = Preprocessor(size=(224, 224), denoise="srad")
    >>> x = pre(frames)               # (N, 1, 224, 224) float32
    """

    def __init__(self, params: PreprocessParams | None = None, *, threads: int | None = None,
                 device: str | None = None, **kwargs: Any) -> None:
        if params is not None and kwargs:
            raise TypeError("pass either a PreprocessParams or keyword parameters, not both")
        if params is None:
            params = PreprocessParams(**kwargs)
        elif not isinstance(params, PreprocessParams):
            raise TypeError(f"params must be a PreprocessParams, got {type(params).__name__}")
        self.params = params
        self._core_params = params.core_params()
        threads = check_threads(threads)
        self.threads = threads or min(os.cpu_count() or 1, MAX_THREADS)
        if device not in (None, "cpu", "cuda") and not (isinstance(device, str) and device.startswith("cuda:")):
            raise ValueError(f"device must be 'cpu', 'cuda' or None (follow the input), got {device!r}")
        self.device = device
        self._out_dtype = OUTPUT_DTYPES[params.dtype]

    def output_shape(self, n: int) -> tuple[int, int, int, int]:
        return (n, self.params.channels, *self.params.size)

    def __call__(self, frames: Any, out: Any = None, *, stream: Any = None) -> Any:
        if type(frames) is np.ndarray and (out is None or type(out) is np.ndarray) and self.device in (None, "cpu"):
            # The hot path of a video loop: straight to the core, which reads
            # any accepted layout.  Python-side checks cost more than the call
            # when the interpreter's caches are cold (a frame every 33 ms), so
            # anything the core refuses (or cannot read: big-endian uint16)
            # goes the general way below, which converts it or names the problem.
            try:
                return _core.preprocess_cpu(frames, self._core_params, out, self.threads)
            except (TypeError, ValueError):
                pass
        if is_cuda_array(frames):
            if self.device == "cpu":
                raise ValueError("frames live on a CUDA device but device='cpu' was requested")
            require_cuda()
            return run_device(frames, self._core_params, self._out_dtype, out, stream)
        frames, as_torch = to_host(frames)
        frames = host_frames(frames, self._core_params)
        shape4, _ = frames_4d(frames.shape, frames.strides)
        out_arr = host_out(out, self.output_shape(shape4[0]), self._out_dtype)
        if self.device is not None and self.device.startswith("cuda"):
            require_cuda()
            _core.preprocess_cuda_host(frames, self._core_params, out_arr, stream_handle(stream))
        else:
            _core.preprocess_cpu(frames, self._core_params, out_arr, self.threads)
        if out is not None:
            return out
        if as_torch:
            import torch

            return torch.from_numpy(out_arr)
        return out_arr

    def __repr__(self) -> str:
        return f"Preprocessor({self.params!r}, threads={self.threads})"


def preprocess(frames: Any, *, out: Any = None, threads: int | None = None, device: str | None = None,
               stream: Any = None, **params: Any) -> Any:
    """Preprocess frames with spec v1; see :class:`PreprocessParams` for ``params``."""
    return Preprocessor(threads=threads, device=device, **params)(frames, out=out, stream=stream)
