"""Preprocessing spec v1: raw ultrasound frames -> network input, on the C++/CUDA core.

``thyrofast.preprocess(frames, **params)`` is :func:`preprocess` here; the
package is split by concern, each module importing only those listed before it:

- ``params``: :class:`PreprocessParams` (validation, serialization), ``check_threads`` and the limits;
- ``layout``: host arrays (accepted layouts and dtypes, byte order, CPU tensors, ``out``);
- ``device``: CUDA arrays (``__cuda_array_interface__``, torch, CuPy) for the CUDA kernel;
- ``preprocessor``: :class:`Preprocessor` and :func:`preprocess`;
- ``info``: :func:`build_info`.

See ``csrc/include/thyrofast/preprocess.h`` for the spec.
"""
from __future__ import annotations

from .info import build_info
from .params import MAX_ROI, MAX_THREADS, PreprocessParams, check_threads
from .preprocessor import Preprocessor, preprocess

__all__ = ["PreprocessParams", "Preprocessor", "preprocess", "build_info", "check_threads", "MAX_ROI", "MAX_THREADS"]
