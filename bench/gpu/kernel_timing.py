"""Kernel-by-kernel GPU timing of the fused preprocessing (a device-check add-on).

For each CUDA kernel (THYROFAST_CUDA_KERNEL=cluster|block) and batch (1, 64),
1024 x 768 uint8 -> 224 x 224 fp16, area -> {none, srad(10)} -> percentile:
  call    CUDA events around one Preprocessor call (what `bench preprocess` times:
          the Python call's host time counts when the GPU waits for it)
  stream  CUDA events around 50 calls back to back, per call (host work hidden
          behind the GPU's when the GPU is the slower side)
  host    wall time of one call's host side, per call
Prints one line per case; exit status 0.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

import thyrofast
from thyrofast.bench.preprocess_bench import _frame


def events(fn, n):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3 / n  # us per call


def main() -> int:
    frames = torch.from_numpy(np.stack([_frame(seed=i) for i in range(64)])).cuda()
    out = torch.empty((64, 1, 224, 224), dtype=torch.float16, device="cuda")
    print(f"{'kernel':<8} {'batch':>5} {'denoise':<7} {'ran':<11} {'call us':>9} {'stream us':>10} {'host us':>8}")
    for kernel in ("cluster", "block"):
        os.environ["THYROFAST_CUDA_KERNEL"] = kernel
        for batch in (1, 64):
            x, o = frames[:batch], out[:batch]
            for denoise in ("none", "srad"):
                pre = thyrofast.Preprocessor(size=(224, 224), denoise=denoise, dtype="float16")
                fn = lambda pre=pre, x=x, o=o: pre(x, out=o)  # noqa: E731
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
                ran = thyrofast._core.cuda_last_kernel()
                call = float(np.median([events(fn, 1) for _ in range(40)]))
                stream = events(fn, 50)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(50):
                    fn()
                host = (time.perf_counter() - t0) / 50 * 1e6
                torch.cuda.synchronize()
                print(f"{kernel:<8} {batch:>5} {denoise:<7} {ran:<11} {call:>9.1f} {stream:>10.1f} {host:>8.1f}")
    # where the cluster kernel's time goes: stage variants, back to back (stream us)
    os.environ["THYROFAST_CUDA_KERNEL"] = "cluster"
    variants = [("resize only", dict(denoise="none", normalize="none")),
                ("+ minmax", dict(denoise="none", normalize="minmax")),
                ("+ percentile", dict(denoise="none", normalize="percentile")),
                ("+ median5", dict(denoise="median5", normalize="none")),
                ("+ srad(1)", dict(denoise="srad", srad_iterations=1, normalize="none")),
                ("+ srad(10)", dict(denoise="srad", normalize="none")),
                ("+ srad(10) + percentile", dict(denoise="srad", normalize="percentile"))]
    for batch, sizes in ((1, ("", "16", "8")), (64, ("", "4", "8", "16"))):
        for forced in sizes:
            if forced:
                os.environ["THYROFAST_CUDA_CLUSTER"] = forced
            x, o = frames[:batch], out[:batch]
            line = []
            for name, kw in variants:
                pre = thyrofast.Preprocessor(size=(224, 224), dtype="float16", **kw)
                fn = lambda pre=pre, x=x, o=o: pre(x, out=o)  # noqa: E731
                for _ in range(3):
                    fn()
                line.append(f"{name}: {events(fn, 30):.1f}")
            print(f"batch {batch} {thyrofast._core.cuda_last_kernel()}: " + ", ".join(line))
            os.environ.pop("THYROFAST_CUDA_CLUSTER", None)
    os.environ.pop("THYROFAST_CUDA_KERNEL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
