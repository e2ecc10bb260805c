"""TensorRT backend (CUDA; FP16 / INT8 / FP32 from strongly typed ONNX graphs).

Written against the documented TensorRT 10.x / 11.x Python API
(docs.nvidia.com/deeplearning/tensorrt, Python API reference):

* ``Builder.create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))``
  -- "Core/Builder": strongly typed networks take every tensor's type from the
  graph.  TensorRT 11 deprecates the flag ("Strongly typed mode is always
  enabled ... retained for API compatibility but is ignored") and removed
  ``BuilderFlag.FP16/INT8`` and calibrators, so precision comes only from the
  graph we parse: ``model.fp16.onnx`` for FP16, the symmetric S8S8 Q/DQ graph
  for INT8.  No builder precision flag is ever set here.
* ``OnnxParser(network, logger).parse(bytes)`` / ``get_error(i)`` -- "Parsers/Onnx".
* ``Builder.create_optimization_profile()`` + ``IOptimizationProfile.set_shape(
  name, min, opt, max)`` + ``IBuilderConfig.add_optimization_profile`` for
  batch 1..max_batch.
* ``IBuilderConfig.create_timing_cache(bytes)`` / ``set_timing_cache(cache,
  ignore_mismatch=False)`` and ``ITimingCache.serialize()`` -- "Core/TimingCache"
  and the "Optimizing Builder Performance: Timing Cache" guide.
* ``Builder.build_serialized_network(network, config)`` -> ``IHostMemory``.
* ``Runtime.deserialize_cuda_engine(bytes)`` (only after the engine cache has
  checked the bytes' SHA-256, see ``engine_cache.py``), with
  ``Runtime.engine_host_code_allowed = False`` (no host code in engines).
* ``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
  get_tensor_dtype``; ``IExecutionContext.set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3(stream_handle)`` --
  "Core/ExecutionContext" (name-based I/O, the only form left in 10.x/11.x).

Device memory comes from CuPy when installed, else torch; neither is required
by the rest of thyrofast.  TensorRT is never imported at module import time.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
from typing import Any

import numpy as np

from .base import Engine
from .engine_cache import EngineCache, EngineKey

__all__ = ["TensorRTEngine", "tensorrt_available", "gpu_info", "build_serialized_engine", "engine_key"]


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _trt():
    return importlib.import_module("tensorrt")


def gpu_info(device_index: int = 0) -> tuple[str, str]:
    """``(GPU name, "major.minor")`` of a CUDA device, via CuPy or torch."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(device_index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return name, f"{props['major']}.{props['minor']}"
    except ImportError:
        pass
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible")
    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


# -- device memory (CuPy or torch) ----------------------------------------------------


class _CupyArrays:
    name = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.ptr)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def ptr(self, a) -> int:
        return int(a.data.ptr)

    def upload(self, dst, src) -> None:
        dst.set(np.ascontiguousarray(src, dtype=dst.dtype), stream=self.stream)

    def download(self, src) -> np.ndarray:
        out = src.get(stream=self.stream)
        self.stream.synchronize()
        return out

    def is_own(self, a, dst) -> bool:
        return isinstance(a, self.cp.ndarray) and a.data.ptr == dst.data.ptr


class _TorchArrays:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def empty(self, shape, dtype):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, np.dtype(dtype).name), device="cuda")

    def ptr(self, a) -> int:
        return int(a.data_ptr())

    def upload(self, dst, src) -> None:
        with self.torch.cuda.stream(self.stream):
            dst.copy_(self.torch.as_tensor(np.ascontiguousarray(src)), non_blocking=True)

    def download(self, src) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            out = src.to("cpu", non_blocking=False)
        self.stream.synchronize()
        return out.numpy()

    def is_own(self, a, dst) -> bool:
        return isinstance(a, self.torch.Tensor) and a.data_ptr() == dst.data_ptr()


def default_device_arrays():
    try:
        return _CupyArrays()
    except ImportError:
        return _TorchArrays()


# -- build ----------------------------------------------------------------------------


def engine_key(onnx_sha256: str, input_shape, max_batch: int, opt_batch: int, *, gpu=None, options=()) -> EngineKey:
    trt = _trt()
    name, cc = gpu if gpu is not None else gpu_info()
    c, h, w = input_shape
    profile = ((1, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))
    return EngineKey(onnx_sha256, str(trt.__version__), name, cc, profile, tuple(options))


def build_serialized_engine(onnx_bytes: bytes, key: EngineKey, *, cache: EngineCache | None = None,
                            workspace_bytes: int | None = None) -> bytes:
    """Parse a strongly typed ONNX graph and build an engine for ``key.profile``."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:  # 10.x needs it; 11.x keeps it as an ignored no-op
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    if network.num_inputs != 1:
        raise RuntimeError(f"expected a network with one input, got {network.num_inputs}")
    input_name = network.get_input(0).name

    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    pmin, popt, pmax = (tuple(s) for s in key.profile)
    profile.set_shape(input_name, pmin, popt, pmax)
    config.add_optimization_profile(profile)

    tkey = (key.trt_version, key.gpu_name, key.compute_capability)
    timing = config.create_timing_cache(cache.read_timing_cache(*tkey) if cache else b"")
    config.set_timing_cache(timing, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    if cache is not None:
        cache.write_timing_cache(*tkey, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


# -- engine ---------------------------------------------------------------------------


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(
        self,
        onnx_bytes: bytes,
        *,
        input_shape: tuple[int, int, int],
        precision: str = "fp16",
        device: str = "cuda",
        max_batch: int = 64,
        opt_batch: int = 1,
        cache: EngineCache | None = None,
        device_arrays: Any = None,
        gpu: tuple[str, str] | None = None,
        workspace_bytes: int | None = None,
    ):
        if device != "cuda":
            raise ValueError("the tensorrt backend needs device='cuda'")
        if not 1 <= opt_batch <= max_batch:
            raise ValueError("need 1 <= opt_batch <= max_batch")
        trt = _trt()
        self.precision = precision
        self.device = "cuda"
        self.input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        self.max_batch = int(max_batch)
        self.cache = cache if cache is not None else EngineCache()
        onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
        self.key = engine_key(onnx_sha, self.input_shape, self.max_batch, int(opt_batch), gpu=gpu,
                              options=(("workspace", int(workspace_bytes or 0)),))
        # The cache hashes the engine bytes against their manifest before we
        # get them; only then are they deserialized.
        plan, self.built = self.cache.get_or_build(
            self.key,
            lambda: build_serialized_engine(onnx_bytes, self.key, cache=self.cache, workspace_bytes=workspace_bytes),
        )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if hasattr(self._runtime, "engine_host_code_allowed"):
            self._runtime.engine_host_code_allowed = False
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built for another version or GPU?)")
        self._context = self._engine.create_execution_context()

        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeError(f"expected one input and one output tensor, got {inputs} / {outputs}")
        self._in_name, self._out_name = inputs[0], outputs[0]
        in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._in_name)))
        out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._out_name)))
        self.input_dtype = in_dtype.name

        self._arrays = device_arrays if device_arrays is not None else default_device_arrays()
        out_shape = tuple(self._engine.get_tensor_shape(self._out_name))
        self._n_classes = int(out_shape[-1])
        # One allocation at max batch; smaller batches are leading-dim views, so
        # the tensor addresses never change.
        self._x = self._arrays.empty((self.max_batch, *self.input_shape), in_dtype)
        self._y = self._arrays.empty((self.max_batch, self._n_classes), out_dtype)
        self._context.set_tensor_address(self._in_name, self._arrays.ptr(self._x))
        self._context.set_tensor_address(self._out_name, self._arrays.ptr(self._y))

    @classmethod
    def from_bundle(cls, bundle, precision: str = "fp16", device: str = "cuda", **options) -> "TensorRTEngine":
        return cls._from_onnx_artifact(bundle, precision, device, **options)

    @property
    def stream(self):
        return self._arrays.stream

    @property
    def stream_handle(self) -> int:
        return self._arrays.stream_handle

    def input_buffer(self, batch: int):
        n = self._check_batch(batch)
        return self._x[:n]

    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        if x is None:
            if batch is None:
                raise TypeError("run() needs an input array or batch=")
            n = self._check_batch(batch)
        else:
            shape = tuple(x.shape)
            if len(shape) != 4 or shape[1:] != self.input_shape:
                raise ValueError(f"expected input of shape (N, {', '.join(map(str, self.input_shape))}), got {shape}")
            n = self._check_batch(shape[0])
            if not self._arrays.is_own(x, self._x):
                self._arrays.upload(self._x[:n], x)
        if not self._context.set_input_shape(self._in_name, (n, *self.input_shape)):
            raise RuntimeError(f"TensorRT rejected input shape {(n, *self.input_shape)}")
        if not self._context.execute_async_v3(self._arrays.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return np.asarray(self._arrays.download(self._y[:n]), dtype=np.float32)

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._x = self._y = None
