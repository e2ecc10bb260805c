"""A small workload for compute-sanitizer: every kernel path once, on small frames.

Run under ``compute-sanitizer --tool memcheck|racecheck|initcheck|synccheck``.
pytest plus its collection costs tens of seconds under each tool; this script
launches each path (uint8/uint16, gray/RGB, ROI, every denoise and normalize
mode, fp32/fp16, odd sizes, a non-default stream, the host-input staging path)
and compares each result with the CPU core, the executable spec.
Exit status 0 only if every case matched.
"""
from __future__ import annotations

import os
import sys

import numpy as np

import thyrofast


def main() -> int:
    import torch

    rng = np.random.default_rng(0)
    stream = torch.cuda.Stream()
    bad = 0
    cases = 0
    # SANITIZE_MAX_CASES=N: only the first N kernel cases (racecheck is slow on
    # the cluster kernel); the first 24 are uint8 gray, every denoise x normalize x dtype
    limit = int(os.environ.get("SANITIZE_MAX_CASES", "0")) or None
    for dtype in (np.uint8, np.uint16):
        top = 255 if dtype == np.uint8 else 4095
        for shape in ((2, 37, 53), (1, 64, 48, 3)):
            frames = rng.integers(0, top + 1, size=shape).astype(dtype)
            for denoise in ("none", "median3", "median5", "srad"):
                for normalize in ("percentile", "minmax", "zscore"):
                    for out_dtype, size in (("float32", (19, 23)), ("float16", (40, 40))):
                        if limit is not None and cases >= limit:
                            continue
                        kw = dict(size=size, denoise=denoise, normalize=normalize, dtype=out_dtype,
                                  roi=(3, 2, shape[2] - 5, shape[1] - 4))
                        if dtype == np.uint16:
                            kw["max_value"] = top
                        ref = thyrofast.Preprocessor(**kw)(frames)
                        gpu = thyrofast.Preprocessor(**kw, device="cuda")
                        with torch.cuda.stream(stream):
                            dev = torch.from_numpy(frames).cuda()
                            got = gpu(dev, stream=stream)
                        stream.synchronize()
                        got = got.float().cpu().numpy()
                        tol = 1e-4 if out_dtype == "float32" else 2e-3
                        err = float(np.abs(got - ref.astype(np.float32)).max())
                        cases += 1
                        if not err <= tol:
                            bad += 1
                            print(f"MISMATCH {dtype.__name__} {shape} {kw}: max |gpu-cpu| = {err:g}")
    # host (NumPy) input on the CUDA preprocessor: the pinned staging path
    frames = rng.integers(0, 256, size=(3, 50, 70)).astype(np.uint8)
    ref = thyrofast.Preprocessor(size=(32, 32))(frames)
    got = thyrofast.Preprocessor(size=(32, 32), device="cuda")(frames)
    got = got.cpu().numpy() if hasattr(got, "cpu") else np.asarray(got)
    cases += 1
    if not np.abs(got - ref).max() <= 1e-4:
        bad += 1
        print("MISMATCH host-staged input")
    torch.cuda.synchronize()
    print(f"sanitize_case: {cases} cases, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
