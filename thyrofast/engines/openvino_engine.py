"""OpenVINO backend (CPU, FP32 / INT8 from the Q/DQ U8S8 ONNX graph).

OpenVINO reads the Q/DQ ONNX directly and runs it with its own INT8 kernels.
Deliberate settings: the LATENCY hint (one stream: batch-1 latency is what a
device cart needs), an explicit thread count, and ``f32`` inference precision
for the FP32 graph so CPUs with AMX/AVX512-BF16 do not silently switch to
bf16.  Batch 1 is compiled with a static shape (lets the plugin pick its
fastest kernels); larger batches share one dynamic-batch compile.  Each batch
size has an infer request bound to an engine-owned NumPy buffer (shared
memory, no copies).

Threads: a compiled model is thread-safe, an infer request is not ("Infer
Request is busy").  Each thread gets its own requests and buffers
(``Engine._thread_slots``, the way ``AsyncInferQueue`` pools requests); the
compile itself happens once, under a lock.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import Engine, default_threads

__all__ = ["OpenVinoEngine"]


class OpenVinoEngine(Engine):
    backend = "openvino"
    concurrent = True

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int = 64,
        input_shape: tuple[int, int, int] | None = None,
    ):
        import openvino as ov

        if device != "cpu":
            raise ValueError("the openvino backend runs on device='cpu' only")
        self.precision = precision
        self.device = "cpu"
        self.max_batch = int(max_batch)
        self.threads = int(threads) if threads else default_threads()
        self._core = ov.Core()
        # Bytes: what was hash-checked is what gets parsed.  (Given bytes, OpenVINO
        # would resolve ONNX external data against the cwd; bundles refuse any.)
        self._model = self._core.read_model(bytes(model) if isinstance(model, (bytes, bytearray)) else str(model))
        inp = self._model.inputs[0]
        if input_shape is None:
            ps = inp.get_partial_shape()
            if ps.rank.get_length() != 4 or not all(ps[i].is_static for i in (1, 2, 3)):
                raise ValueError(f"model input shape {ps} is not (N, C, H, W) with static C, H, W; pass input_shape")
            input_shape = tuple(ps[i].get_length() for i in (1, 2, 3))
        self.input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        self.input_dtype = "float32"
        self._input_name = inp.get_any_name()
        self._compiled_models: dict = {}
        self._compile_lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle, precision: str = "fp32", device: str = "cpu", **options) -> "OpenVinoEngine":
        return cls._from_onnx_artifact(bundle, precision, device, **options)

    def _compiled(self, n: int):
        """Batch 1 gets its own static-shape compile (the latency case); larger
        batches share one dynamic-batch compile, so an odd batch size does not
        cost a fresh compilation."""
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        key = 1 if n == 1 else "dynamic"
        compiled = self._compiled_models.get(key)
        if compiled is not None:
            return compiled
        with self._compile_lock:
            if key in self._compiled_models:
                return self._compiled_models[key]
            model = self._model.clone()
            batch = ov.Dimension(1) if key == 1 else ov.Dimension(1, self.max_batch)
            model.reshape({self._input_name: ov.PartialShape([batch, *self.input_shape])})
            config = {
                hints.performance_mode: hints.PerformanceMode.LATENCY,
                props.inference_num_threads: self.threads,
                hints.num_requests: 1,
            }
            if self.precision == "fp32":
                config[hints.inference_precision] = ov.Type.f32
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled_models[key] = compiled
        return compiled

    def _request(self, n: int):
        import openvino as ov

        n = self._check_batch(n)
        requests: dict[int, tuple[np.ndarray, object]] = self._thread_slots()
        if n not in requests:
            request = self._compiled(n).create_infer_request()
            x = np.zeros((n, *self.input_shape), dtype=np.float32)
            request.set_input_tensor(ov.Tensor(x, shared_memory=True))
            requests[n] = (x, request)
        return requests[n]

    def input_buffer(self, batch: int) -> np.ndarray:
        return self._request(batch)[0]

    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        _, request = self._stage_host_input(x, batch, self._request)
        request.infer()
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._drop_thread_slots()
        self._compiled_models.clear()
        self._model = None
