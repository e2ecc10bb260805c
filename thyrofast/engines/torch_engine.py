"""PyTorch backend: CPU FP32, CUDA FP32/FP16 with channels_last and CUDA graphs.

The network is rebuilt from its architecture name (``thyrofast.models``) and
``weights.safetensors`` (never pickle, never ``torch.load``).  On CUDA each
batch size gets its own captured CUDA graph over a static input tensor: the
input buffer handed out by :meth:`input_buffer` *is* the graph's input, so the
CUDA preprocessing kernel can write into it on :attr:`stream` and a replay
launches the whole network with one call (batch-1 latency is dominated by
launch overhead otherwise).

Threads: on the CPU each thread has its own input buffers
(``Engine._thread_slots``) and the eval-mode forward shares nothing mutable,
so the engine is ``concurrent``.  On CUDA the captured graphs, their static
inputs and the one stream are shared: callers serialize (the Classifier's lock).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Engine, bundle_input_shape, read_artifact

__all__ = ["TorchEngine", "build_module", "ieee_fp32"]


class ieee_fp32:
    """Context: FP32 convolutions and matmuls in IEEE FP32, not TF32.

    PyTorch runs FP32 cuDNN convolutions in TF32 on Ampere and later by
    default (10-bit mantissa): on the H200 that moved probabilities by up to
    2.6e-3 from the CPU's.  An engine that says "fp32" computes in FP32; a
    CUDA graph captured inside this context keeps the kernels chosen here.
    The flags are process-wide, so they are set only for the engine's own
    calls and restored after.
    """

    def __enter__(self):
        import torch

        self._conv = torch.backends.cudnn.conv
        self._mm = torch.backends.cuda.matmul
        self._saved = (self._conv.fp32_precision, self._mm.fp32_precision)
        self._conv.fp32_precision = "ieee"
        self._mm.fp32_precision = "ieee"
        return self

    def __exit__(self, *exc):
        self._conv.fp32_precision, self._mm.fp32_precision = self._saved
        return False


def build_module(manifest: dict, weights: bytes):
    """The torch module described by a model card, with weights loaded strictly."""
    from thyrofast import models
    from thyrofast.bundle import load_into, load_weights

    # The model card carries the architecture (contracts.md); a width
    # multiplier, when used, sits beside it or in a nested "model" config.
    cfg = {**manifest.get("model", {}),
           **{k: manifest[k] for k in ("arch", "in_channels", "width", "members") if k in manifest}}
    module = models.build_from_config(cfg)
    load_into(module, load_weights(weights, "weights"), "weights")
    return module.eval()


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self,
        module,
        *,
        input_shape: tuple[int, int, int],
        precision: str = "fp32",
        device: str = "cpu",
        max_batch: int = 64,
        threads: int | None = None,
        cuda_graphs: bool = True,
    ):
        import torch

        if precision not in ("fp32", "fp16"):
            raise ValueError(f"the torch backend supports fp32 and fp16, not {precision!r}")
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {device!r}")
        if dev.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 needs device='cuda' (CPU FP16 convolutions are slower than FP32)")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but torch sees no CUDA device")
        self.precision = precision
        self.device = dev.type
        self.input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        self.max_batch = int(max_batch)
        self.input_dtype = "float16" if precision == "fp16" else "float32"
        self._torch_dtype = torch.float16 if precision == "fp16" else torch.float32
        self._dev = dev
        if dev.type == "cpu" and threads:
            # torch's pool is process-wide: only touch it when asked to.
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads() if dev.type == "cpu" else None
        module = module.eval().to(dev)
        if dev.type == "cuda":
            module = module.to(dtype=self._torch_dtype, memory_format=torch.channels_last)
            self._stream = torch.cuda.Stream(device=dev)
        else:
            self._stream = None
        self.module = module
        self.cuda_graphs = bool(cuda_graphs) and dev.type == "cuda"
        self.concurrent = dev.type == "cpu"
        self._slots: dict[int, dict[str, Any]] = {}  # CUDA: one set, shared (callers serialize)

    @classmethod
    def from_bundle(cls, bundle, precision: str = "fp32", device: str = "cpu", **options) -> "TorchEngine":
        if hasattr(bundle, "build_model"):  # thyrofast.bundle.Bundle: verified safetensors
            module = bundle.build_model()
        else:
            _, weights = read_artifact(bundle, "weights")
            module = build_module(bundle.manifest, weights)
        options.setdefault("input_shape", bundle_input_shape(bundle))
        return cls(module, precision=precision, device=device, **options)

    @property
    def stream(self):
        return self._stream

    # -- buffers and graphs ---------------------------------------------------------

    def _slot(self, n: int) -> dict[str, Any]:
        import torch

        n = self._check_batch(n)
        slots = self._thread_slots() if self._dev.type == "cpu" else self._slots
        slot = slots.get(n)
        if slot is not None:
            return slot
        if self._dev.type == "cpu":
            host = np.zeros((n, *self.input_shape), dtype=np.float32)
            slot = {"host": host, "tensor": torch.from_numpy(host)}
        else:
            with torch.cuda.device(self._dev), torch.cuda.stream(self._stream):
                x = torch.zeros((n, *self.input_shape), dtype=self._torch_dtype, device=self._dev)
                out_host = torch.empty((n, self._n_classes(x)), dtype=torch.float32, pin_memory=True)
                slot = {"tensor": x, "out_host": out_host, "graph": None, "out": None}
                if self.cuda_graphs:
                    slot["graph"], slot["out"] = self._capture(x)
        slots[n] = slot
        return slot

    def _precision(self):
        """IEEE FP32 for an fp32 engine (see :class:`ieee_fp32`); nothing to change for fp16."""
        import contextlib

        return ieee_fp32() if self.precision == "fp32" else contextlib.nullcontext()

    def _n_classes(self, x) -> int:
        import torch

        with torch.inference_mode():
            return int(self.module(x[:1]).shape[-1])

    def _capture(self, x):
        """Capture ``module(x)`` into a CUDA graph on this engine's stream."""
        import torch

        with torch.inference_mode(), self._precision():
            # Warm up on the capture stream so cuDNN picks its algorithms (and
            # allocates workspaces) before capture, as torch.cuda.graphs requires.
            for _ in range(3):
                self.module(x)
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                out = self.module(x)
        return graph, out

    def input_buffer(self, batch: int):
        slot = self._slot(batch)
        return slot["host"] if self._dev.type == "cpu" else slot["tensor"]

    # -- run ------------------------------------------------------------------------

    def run(self, x=None, *, batch: int | None = None) -> np.ndarray:
        import torch

        if x is None:
            if batch is None:
                raise TypeError("run() needs an input array or batch=")
            slot = self._slot(batch)
        else:
            n = self._input_batch(x)
            slot = self._slot(n)
            self._fill(slot, x)
        if self._dev.type == "cpu":
            with torch.inference_mode():
                return self.module(slot["tensor"]).float().numpy().copy()
        with torch.cuda.device(self._dev), torch.cuda.stream(self._stream):
            if slot["graph"] is not None:
                slot["graph"].replay()
                out = slot["out"]
            else:
                with torch.inference_mode(), self._precision():
                    out = self.module(slot["tensor"])
            slot["out_host"].copy_(out, non_blocking=True)
        self._stream.synchronize()
        return slot["out_host"].numpy().copy()

    def _input_batch(self, x) -> int:
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[1:] != tuple(self.input_shape):
            raise ValueError(f"expected input of shape (N, {', '.join(map(str, self.input_shape))}), got {shape}")
        return shape[0]

    def _fill(self, slot, x) -> None:
        import torch

        dst = slot["tensor"]
        if isinstance(x, np.ndarray) and "host" in slot and x is slot["host"]:
            return
        if isinstance(x, torch.Tensor) and x.data_ptr() == dst.data_ptr():
            return
        src = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if self._dev.type == "cuda":
            with torch.cuda.stream(self._stream):
                dst.copy_(src, non_blocking=True)
        else:
            dst.copy_(src)

    def close(self) -> None:
        self._drop_thread_slots()
        self._slots.clear()
