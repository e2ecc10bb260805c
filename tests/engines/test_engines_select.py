"""The 'auto' choice of backend / device / precision."""
from __future__ import annotations

import pytest

from thyrofast.engines.select import CPU_FP32_ORDER, CPU_INT8_ORDER, Choice, cpu_has_int8_dot, resolve

ALL = {"weights", "onnx_fp32", "onnx_fp16", "onnx_int8_trt", "onnx_int8_cpu"}
FP_ONLY = {"weights", "onnx_fp32", "onnx_fp16"}
EVERYTHING = {"tensorrt": True, "torch": True, "openvino": True, "onnxruntime": True}


def test_gpu_with_tensorrt_prefers_tensorrt_fp16():
    assert resolve(ALL, installed=EVERYTHING, has_cuda=True) == Choice("tensorrt", "cuda", "fp16")


def test_gpu_without_tensorrt_uses_torch_fp16():
    inst = {**EVERYTHING, "tensorrt": False}
    assert resolve(ALL, installed=inst, has_cuda=True) == Choice("torch", "cuda", "fp16")


@pytest.mark.parametrize("dot", [True, False])
def test_no_gpu_uses_fastest_cpu_int8_then_fp32(dot):
    kw = dict(has_cuda=False, int8_dot=dot)
    assert CPU_INT8_ORDER[0] == "openvino"
    assert resolve(ALL, installed=EVERYTHING, **kw) == Choice("openvino", "cpu", "int8")
    # INT8 graph absent (gate failed): the fastest FP32 backend
    assert resolve(FP_ONLY, installed=EVERYTHING, **kw) == Choice(CPU_FP32_ORDER[0], "cpu", "fp32")
    # without OpenVINO: ONNX Runtime INT8 only where the CPU has 8-bit dot products
    inst = {**EVERYTHING, "openvino": False}
    want = "int8" if dot else "fp32"
    assert resolve(ALL, installed=inst, **kw) == Choice("onnxruntime", "cpu", want)
    # only INT8 requested: still served without dot products
    assert resolve(ALL, installed=inst, precision="int8", **kw) == Choice("onnxruntime", "cpu", "int8")


def test_cpu_feature_probe_returns_a_bool():
    assert isinstance(cpu_has_int8_dot(), bool)


def test_explicit_choices_are_honoured_or_explained():
    for dot, want in ((True, "int8"), (False, "fp32")):
        got = resolve(ALL, backend="onnxruntime", installed=EVERYTHING, has_cuda=False, int8_dot=dot)
        assert got == Choice("onnxruntime", "cpu", want)
    assert resolve(ALL, backend="torch", installed=EVERYTHING, has_cuda=False) == Choice("torch", "cpu", "fp32")
    assert resolve(ALL, device="cpu", installed=EVERYTHING, has_cuda=True).device == "cpu"
    with pytest.raises(ValueError, match="no usable engine.*onnx_int8_cpu"):
        resolve(FP_ONLY, backend="openvino", precision="int8", installed=EVERYTHING, has_cuda=False)
    with pytest.raises(ValueError, match="no CUDA"):
        resolve(ALL, device="cuda", installed=EVERYTHING, has_cuda=False)
    with pytest.raises(ValueError, match="not installed"):
        resolve(ALL, backend="tensorrt", installed={**EVERYTHING, "tensorrt": False}, has_cuda=True)
    with pytest.raises(ValueError, match="backend must be"):
        resolve(ALL, backend="tflite")
    with pytest.raises(ValueError, match="precision must be"):
        resolve(ALL, precision="int4")


def test_torch_cuda_int8_is_not_offered():
    with pytest.raises(ValueError, match="no int8 path"):
        resolve(ALL, backend="torch", device="cuda", precision="int8", installed=EVERYTHING, has_cuda=True)
