"""Smoke test of an installed thyrofast (a wheel in a fresh venv, maybe under
qemu): import, the core against the float64 NumPy reference on every denoise
mode, and, given a bundle folder, one Classifier prediction on ONNX Runtime.
Prints one JSON line.  Run as a script: python _wheel_smoke.py [BUNDLE]."""
from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import thyrofast  # noqa: E402

from _reference import preprocess_ref, speckle_frames  # noqa: E402


def main() -> None:
    info = thyrofast.build_info()
    out = {"thyrofast_file": thyrofast.__file__, "cpu_variant": info["cpu_variant"],
           "cpu_variants_runnable": info["cpu_variants_runnable"], "cc_on_path": shutil.which("cc") is not None,
           "max_err": {}}
    frames = speckle_frames(np.random.default_rng(3), 2, 45, 61, dtype=np.uint8)
    for denoise in ("none", "median3", "median5", "srad"):
        params = dict(size=(29, 37), denoise=denoise, srad_iterations=3)
        got = thyrofast.preprocess(frames, threads=1, **params)
        want = preprocess_ref(frames, **params)
        out["max_err"][denoise] = float(np.max(np.abs(got.astype(np.float64) - want)))
    if len(sys.argv) > 1:
        from thyrofast import Classifier

        clf = Classifier.load(sys.argv[1], backend="onnxruntime", device="cpu")
        pred = clf.predict(speckle_frames(np.random.default_rng(4), 2, 64, 64, dtype=np.uint8))
        out["prediction"] = {"probs": np.asarray(pred).round(4).tolist(), "classes": list(pred.classes),
                             "backend": pred.provenance["backend"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
