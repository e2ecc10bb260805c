"""Type stub of ``thyrofast._core``, the compiled C++/CUDA core (preprocessing spec v1).

Written by hand from ``csrc/python/bindings.cpp``; ``tests/test_core_stub.py`` checks that
the names here and the names the built module exports are the same.  The spec itself is
documented in ``csrc/include/thyrofast/preprocess.h``.
"""

from typing import ClassVar, TypedDict

import numpy as np

class CudaError(RuntimeError):
    """``thyrofast::cuda_error``: a CUDA call failed, or the build has no CUDA."""

class Denoise:
    none: ClassVar[Denoise]
    median3: ClassVar[Denoise]
    median5: ClassVar[Denoise]
    srad: ClassVar[Denoise]
    __members__: ClassVar[dict[str, Denoise]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Normalize:
    percentile: ClassVar[Normalize]
    minmax: ClassVar[Normalize]
    zscore: ClassVar[Normalize]
    none: ClassVar[Normalize]
    __members__: ClassVar[dict[str, Normalize]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class ChannelOrder:
    rgb: ClassVar[ChannelOrder]
    bgr: ClassVar[ChannelOrder]
    __members__: ClassVar[dict[str, ChannelOrder]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class OutputType:
    float32: ClassVar[OutputType]
    float16: ClassVar[OutputType]
    __members__: ClassVar[dict[str, OutputType]]
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class Params:
    """``thyrofast::PreprocessParams``; the defaults are spec v1's."""

    has_roi: bool
    roi_x: int
    roi_y: int
    roi_w: int
    roi_h: int
    channel_order: ChannelOrder
    max_value: float  # 0: 255 for uint8, 65535 for uint16
    out_h: int
    out_w: int
    denoise: Denoise
    srad_iterations: int
    srad_lambda: float
    srad_rho: float
    normalize: Normalize
    percentile_lo: float
    percentile_hi: float
    mean: float
    std: float
    channels: int
    out_type: OutputType
    def __init__(self) -> None: ...

class _BuildInfo(TypedDict):
    version: str
    compiler: str
    openmp: bool
    cuda: bool
    cuda_architectures: str
    cpu_variant: str  # the CPU code variant preprocess_cpu runs: baseline, avx2 or native
    cpu_variants_built: str  # comma-separated, lowest first
    cpu_variants_runnable: str  # those this CPU can run

def preprocess_cpu(
    frames: np.ndarray, params: Params, out: np.ndarray | None = None, threads: int = 0
) -> np.ndarray:
    """frames: (H, W), (H, W, 3), (H, W, 4) (RGBA, alpha dropped), (N, H, W) or (N, H, W, 1|3|4)
    uint8/native uint16, any strides; out: None (allocated) or a C-contiguous (N, C, out_h, out_w)
    float32/float16 array; returns out.  Releases the GIL while it works; threads=0: all cores."""

def frames_4d(
    shape: list[int] | tuple[int, ...], strides: list[int] | tuple[int, ...]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(N, H, W, C) shape and strides of an accepted input layout; ValueError for any other."""

class DeviceFrames:
    """A batch of frames in device memory, as ``preprocess_cuda`` takes it: the device pointer
    (from ``__cuda_array_interface__`` / DLPack), the pixel type code (0 uint8, 1 uint16), and the
    (N, H, W, C) shape and element strides of ``frames_4d``.  Checked by ``preprocess_cuda``."""

    def __init__(
        self,
        ptr: int,
        dtype_code: int,
        shape: tuple[int, int, int, int] | list[int],
        strides: tuple[int, int, int, int] | list[int],
    ) -> None: ...
    @property
    def ptr(self) -> int: ...
    @property
    def dtype_code(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int, int, int]: ...
    @property
    def strides(self) -> tuple[int, int, int, int]: ...

def preprocess_cuda(frames: DeviceFrames, params: Params, out_ptr: int, stream: int = 0) -> None:
    """frames: a DeviceFrames (device pointer from __cuda_array_interface__ / DLPack, (N, H, W, C)
    shape, element strides); out_ptr: a C-contiguous (N, C, out_h, out_w) device buffer.  Raises
    RuntimeError in a build without CUDA."""

def preprocess_cuda_host(frames: np.ndarray, params: Params, out: np.ndarray, stream: int = 0) -> None:
    """Host arrays, copied through pinned staging on `stream`; synchronizes."""

def validate(arg0: np.ndarray, arg1: Params, /) -> None:
    """Raises ValueError (std::invalid_argument) if the frames or the parameters break the spec."""

def build_info() -> _BuildInfo:
    """version, compiler, openmp, cuda, cuda_architectures and the CPU variants of this build; raises
    RuntimeError when THYROFAST_CPU_VARIANT names a variant this build lacks or this CPU cannot run."""

def cuda_device_count() -> int:
    """0 without CUDA, a driver or a device."""

def cuda_last_kernel() -> str:
    """The CUDA kernel of the last preprocess call: 'cluster:S', 'block' or '' (none yet)."""
