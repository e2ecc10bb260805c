"""A stand-in for the ``tensorrt`` module: records every API call the backend makes.

It implements just the documented TensorRT 10.x/11.x Python surface that
``thyrofast.engines.tensorrt_engine`` uses, with a "plan" that is a readable
byte string (so tests can tell which ONNX graph an engine was built from) and
an execution context that computes known logits from host "device" memory.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import types

import numpy as np

MEMORY: dict[int, np.ndarray] = {}  # fake device pointer -> array


def make(version: str = "10.9.0.34", strongly_typed_flag: bool = True, fail_parse: bool = False):
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls
    trt.deserialized = []

    class Logger:
        WARNING = 2

        def __init__(self, severity=None):
            self.severity = severity

    flags = types.SimpleNamespace()
    if strongly_typed_flag:
        flags.STRONGLY_TYPED = 0
    trt.NetworkDefinitionCreationFlag = flags
    # TensorRT 11 has no BuilderFlag.FP16 / INT8: any access to them fails here.
    trt.BuilderFlag = types.SimpleNamespace(REFIT=1)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.Logger = Logger
    trt.nptype = lambda dt: {"float32": np.float32, "float16": np.float16}[dt]

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.onnx = None
            self.num_inputs = 1

        def get_input(self, i):
            return Tensor("input")

    class Parser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            calls.append(("parse", hashlib.sha256(data).hexdigest()))
            if fail_parse:
                self.num_errors = 1
                return False
            self.network.onnx = data
            return True

        def get_error(self, i):
            return "fake parse error"

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timed"

    class Profile:
        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's own argument names
            calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))

    class Config:
        def __init__(self):
            self.timing = None

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            self.timing = cache

        def get_timing_cache(self):
            return self.timing

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build",))
            return b"PLAN|" + hashlib.sha256(network.onnx).hexdigest().encode()

    class Context:
        def __init__(self, engine):
            self.addr = {}
            self.shape = None

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def execute_async_v3(self, stream):
            calls.append(("execute_async_v3", stream, self.shape))
            x = MEMORY[self.addr["input"]]
            y = MEMORY[self.addr["logits"]]
            n = self.shape[0]
            m = x[:n].reshape(n, -1).astype(np.float64).mean(axis=1)
            y[:n] = np.stack([m, -m, 2 * m], axis=1)
            return True

    class CudaEngine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return (-1, 3)

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = True

        def deserialize_cuda_engine(self, data):
            trt.deserialized.append((bytes(data), self.engine_host_code_allowed))
            return CudaEngine() if bytes(data).startswith(b"PLAN|") else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


class HostArrays:
    """Device-array provider backed by host memory (stands in for CuPy / torch.cuda)."""

    name = "fake"
    stream = "fake-stream"
    stream_handle = 0xC0FFEE

    def empty(self, shape, dtype):
        a = np.zeros(shape, dtype=dtype)
        MEMORY[a.__array_interface__["data"][0]] = a
        return a

    def ptr(self, a):
        return a.__array_interface__["data"][0]

    def upload(self, dst, src):
        np.copyto(dst, src, casting="same_kind")

    def download(self, src):
        return np.array(src, copy=True)

    def is_own(self, a, dst):
        return isinstance(a, np.ndarray) and np.shares_memory(a, dst)
