"""Choosing a (backend, device, precision) for ``"auto"`` arguments.

Order for ``backend="auto"``:
1. TensorRT, if it is importable and a CUDA GPU is present (FP16 graph);
2. torch on CUDA (FP16, channels_last, CUDA graphs);
3. on the CPU, the fastest installed INT8 backend if the bundle has the CPU
   INT8 graph (it exists only when it passed the INT8 accuracy gate);
4. else the fastest installed FP32 CPU backend.

Measured on the development machine (AMD EPYC, AVX2 without VNNI, 2 vCPUs
shared with other jobs: load average 3.8-4.9 during the run, so absolute
numbers are inflated; the ranking held in all three runs made).  ResNet-18
1x224x224, batch 1, median ms over 48 interleaved runs (1 thread / 2 threads):

    openvino int8 (U8S8 Q/DQ)   35 /  48     onnxruntime int8 (U8S8)   91 / 149
    onnxruntime fp32            66 / 107     onnxruntime int8 (S8S8)  104 / 172
    openvino fp32               72 /  99     torch eager fp32         128 / 426

OpenVINO runs the U8S8 Q/DQ graph ~2x faster than FP32 even without VNNI.
ONNX Runtime's U8S8 kernels were *slower* than its FP32 ones on this AVX2-only
CPU (without VNNI its u8*s8 path goes through int16 pair sums; on CPUs with
VNNI / AMX it is the faster one), so ONNX Runtime INT8 is only preferred over
FP32 where the CPU reports VNNI (``cpu_has_int8_dot``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Iterable

from .._extras import install_hint
from .base import ARTIFACT_FOR, BACKENDS, PRECISIONS

__all__ = ["Choice", "resolve", "available_backends", "cuda_available", "cpu_has_int8_dot", "CPU_INT8_ORDER",
           "CPU_FP32_ORDER"]

CPU_INT8_ORDER = ("openvino", "onnxruntime")  # fastest first (see the table above)
CPU_FP32_ORDER = ("onnxruntime", "openvino", "torch")


def cpu_flags() -> set[str] | None:
    """The x86 CPU's feature flags from /proc/cpuinfo; None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return None


def cpu_has_int8_dot() -> bool:
    """The CPU has 8-bit dot-product instructions (x86 VNNI / AMX, or not x86 at all).

    Linux reads /proc/cpuinfo; elsewhere we cannot tell and assume yes.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return True  # ARM64 ONNX Runtime uses SDOT/UDOT/I8MM
    flags = cpu_flags()
    return True if flags is None else bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


DEVICES = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Choice:
    backend: str
    device: str
    precision: str


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> dict[str, bool]:
    """Which backends' Python packages are installed (says nothing about GPUs)."""
    return {
        "tensorrt": _importable("tensorrt"),
        "torch": _importable("torch") and _importable("torchvision"),
        "openvino": _importable("openvino"),
        "onnxruntime": _importable("onnxruntime"),
    }


def cuda_available() -> bool:
    """A CUDA GPU is usable from this process (torch or CuPy)."""
    if _importable("torch"):
        import torch

        if torch.cuda.is_available():
            return True
    if _importable("cupy"):
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 - no driver, no device: simply not available
            return False
    return False


def _supports(backend: str, device: str, precision: str, artifacts: set[str]) -> str | None:
    """``None`` if supported, else the reason why not."""
    if backend in ("tensorrt",) and device != "cuda":
        return "tensorrt runs on CUDA only"
    if backend in ("onnxruntime", "openvino") and device != "cpu":
        return f"{backend} runs on the CPU only here"
    if backend == "torch" and device == "cpu" and precision == "fp16":
        return "torch fp16 needs CUDA"
    name = ARTIFACT_FOR.get((backend, precision))
    if name is None:
        return f"{backend} has no {precision} path"
    if name not in artifacts:
        return f"the bundle has no {name!r} artifact"
    return None


def resolve(
    artifacts: Iterable[str],
    backend: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    *,
    installed: dict[str, bool] | None = None,
    has_cuda: bool | None = None,
    int8_dot: bool | None = None,
) -> Choice:
    """Resolve ``"auto"`` fields against the bundle's artifacts and this machine."""
    artifacts = set(artifacts)
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if device not in ("auto", *DEVICES):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    installed = available_backends() if installed is None else installed
    if has_cuda is None:
        has_cuda = cuda_available() if device != "cpu" else False
    if device == "cuda" and not has_cuda:
        raise ValueError("device='cuda' requested but no CUDA GPU is available")

    candidates: list[Choice] = []
    devices = ["cuda", "cpu"] if device == "auto" else [device]
    for dev in devices:
        if dev == "cuda" and not has_cuda:
            continue
        if dev == "cuda":
            order = ["tensorrt", "torch"]
            precs = ["fp16", "fp32"]
        else:
            order = list(dict.fromkeys([*CPU_INT8_ORDER, *CPU_FP32_ORDER]))
            precs = ["int8", "fp32"]
        if backend != "auto":
            order = [backend]
        if precision != "auto":
            precs = [precision]
        if dev == "cpu" and backend == "auto":
            fast_dot = cpu_has_int8_dot() if int8_dot is None else int8_dot
            # INT8 beats FP32 across backends, except ONNX Runtime INT8 on CPUs
            # without 8-bit dot products, where its FP32 kernels are faster.
            int8_first = [b for b in CPU_INT8_ORDER if fast_dot or b != "onnxruntime"]
            pairs = [(b, "int8") for b in int8_first if "int8" in precs]
            pairs += [(b, p) for p in precs if p != "int8" for b in CPU_FP32_ORDER]
            pairs += [(b, "int8") for b in CPU_INT8_ORDER if b not in int8_first and "int8" in precs]
        else:
            pairs = [(b, p) for b in order for p in precs]
            if dev == "cpu" and backend == "onnxruntime" and precision == "auto":
                fast_dot = cpu_has_int8_dot() if int8_dot is None else int8_dot
                if not fast_dot:  # its FP32 kernels are the faster ones here
                    pairs.sort(key=lambda bp: bp[1] == "int8")
        for b, p in pairs:
            candidates.append(Choice(b, dev, p))

    reasons = []
    for c in candidates:
        if not installed.get(c.backend, False):
            reasons.append(f"{c.backend}: not installed ({install_hint(c.backend)})")
            continue
        why = _supports(c.backend, c.device, c.precision, artifacts)
        if why is None:
            return c
        reasons.append(f"{c.backend}/{c.device}/{c.precision}: {why}")
    if not candidates:
        raise ValueError(f"no usable device for backend={backend!r} device={device!r}")
    raise ValueError(
        f"no usable engine for backend={backend!r}, device={device!r}, precision={precision!r}: "
        + "; ".join(dict.fromkeys(reasons))
    )
