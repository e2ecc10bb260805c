"""ONNX Runtime backend (CPU, FP32 / INT8 Q/DQ U8S8).

Settings are chosen, not inherited: full graph optimization (folds Q/DQ pairs
into QLinearConv/MatMulInteger kernels, fuses Conv+BN+ReLU), sequential
execution with ``intra_op`` threads only (a CNN at batch 1 has no
inter-op parallelism worth a second pool), and I/O binding to engine-owned
NumPy buffers so a run allocates nothing.

Threads: ``InferenceSession.run_with_iobinding`` may be called concurrently;
each thread binds its own input/output buffers (``Engine._thread_slots``), so
one session serves any number of threads with no lock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Engine, default_threads

__all__ = ["OnnxRuntimeEngine"]


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"
    concurrent = True

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int = 64,
        spin: bool = True,
        input_shape: tuple[int, int, int] | None = None,
    ):
        import onnxruntime as ort

        if device != "cpu":
            raise ValueError("the onnxruntime backend runs on device='cpu' only (use tensorrt or torch on CUDA)")
        self.precision = precision
        self.device = "cpu"
        self.max_batch = int(max_batch)
        self.threads = int(threads) if threads else default_threads()

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # Spinning trades idle CPU for ~latency; embedded callers that share the
        # CPU with other work can turn it off.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        so.log_severity_level = 3
        data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
        self._session = ort.InferenceSession(bytes(data), sess_options=so, providers=["CPUExecutionProvider"])

        inp = self._session.get_inputs()[0]
        out = self._session.get_outputs()[0]
        self._input_name, self._output_name = inp.name, out.name
        if input_shape is None:
            dims = inp.shape[1:]
            if not all(isinstance(d, int) for d in dims):
                raise ValueError(f"model input has symbolic non-batch dims {inp.shape}; pass input_shape")
            input_shape = tuple(dims)
        self.input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        self.input_dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(inp.type, "float32")
        self._output_dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(out.type, "float32")
        n_out = out.shape[-1]
        self._n_classes = int(n_out) if isinstance(n_out, int) else None

    @classmethod
    def from_bundle(cls, bundle, precision: str = "fp32", device: str = "cpu", **options) -> "OnnxRuntimeEngine":
        return cls._from_onnx_artifact(bundle, precision, device, **options)

    def _binding(self, n: int):
        import onnxruntime as ort

        n = self._check_batch(n)
        bound: dict[int, tuple[np.ndarray, np.ndarray, Any]] = self._thread_slots()
        if n not in bound:
            x = np.zeros((n, *self.input_shape), dtype=self.input_dtype)
            n_classes = self._n_classes
            if n_classes is None:  # symbolic output dim: ask the model once
                n_classes = self._session.run([self._output_name], {self._input_name: x})[0].shape[-1]
                self._n_classes = int(n_classes)
            y = np.zeros((n, n_classes), dtype=self._output_dtype)
            io = self._session.io_binding()
            io.bind_ortvalue_input(self._input_name, ort.OrtValue.ortvalue_from_numpy(x))
            io.bind_ortvalue_output(self._output_name, ort.OrtValue.ortvalue_from_numpy(y))
            bound[n] = (x, y, io)
        return bound[n]

    def input_buffer(self, batch: int) -> np.ndarray:
        return self._binding(batch)[0]

    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        _, y, io = self._stage_host_input(x, batch, self._binding)
        self._session.run_with_iobinding(io)
        return y.astype(np.float32, copy=True)

    def close(self) -> None:
        self._drop_thread_slots()
        self._session = None
