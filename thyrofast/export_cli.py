"""``thyrofast export BUNDLE [--int8 --calib DATA]``: (re)build a bundle's ONNX artifacts."""
from __future__ import annotations

import argparse
import sys

from .errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="model bundle folder (holds thyrofast.json)")
    p.add_argument("--no-fp16", action="store_true", help="skip the FP16 graph")
    p.add_argument("--int8", action="store_true",
                   help="also build the gated INT8 Q/DQ graphs (needs --calib)")
    p.add_argument("--calib", metavar="DATA",
                   help="cohort manifest (or its folder): training patients calibrate, "
                        "validation patients gate")
    p.add_argument("--n-calib", type=int, default=128, help="calibration frames (default: %(default)s)")
    # --quiet: the older spelling; --no-progress as in every other command
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars")


def export_from_data(bundle, data, *, fp16: bool = True, n_calib: int = 128, seed: int = 0,
                     progress: bool = True, log=print) -> dict:
    """Export ``bundle`` with INT8 calibrated/gated on cohort ``data`` (bundle's own preprocessing)."""
    import numpy as np

    from .bundle import Bundle
    from .export import export_bundle
    from .train.data import assign_splits, load_frames, read_manifest

    if isinstance(n_calib, bool) or not isinstance(n_calib, int) or n_calib < 1:
        raise ValueError(f"n_calib must be a positive integer, got {n_calib!r}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle, verify=False)  # export rebuilds the ONNX files
    # Same patient split as training (same fraction and seed) when the manifest has no val split.
    cfg = bundle.manifest.get("training", {}).get("config", {})
    val_fraction = cfg.get("val_fraction", 0.15)
    seed = cfg.get("seed", seed)
    records = read_manifest(data)
    split = assign_splits(records, val_fraction=val_fraction, seed=seed)
    rng = np.random.default_rng(seed)
    calib_idx = sorted(rng.permutation(split.train)[:n_calib].tolist())
    params = bundle.preprocess_params
    # files read as in training and predict (the bundle's tissue crop), so INT8 is tuned and gated on what it will see
    crop = (bundle.read_options or {}).get("crop", "auto")
    calib, _ = load_frames(records, calib_idx, params, progress=progress, crop=crop)
    val, _ = load_frames(records, split.val, params, progress=progress, crop=crop)
    labels = np.array([records[i].label for i in split.val])
    return export_bundle(bundle, fp16=fp16, int8=True, calib=calib, val_frames=val.astype(np.float32),
                         val_labels=labels, n_calib=n_calib, seed=seed, log=log)


def main(args: argparse.Namespace) -> int:
    from ._extras import require
    from .export import export_bundle

    require("torch", "torchvision", needed_for="exporting ONNX from the bundle's weights")
    if args.int8 and not args.calib:
        print("thyrofast export: --int8 needs --calib DATA (frames to calibrate and gate on)",
              file=sys.stderr)
        return 2
    try:
        if args.int8:
            report = export_from_data(args.bundle, args.calib, fp16=not args.no_fp16,
                                      n_calib=args.n_calib, progress=not args.no_progress)
        else:
            report = export_bundle(args.bundle, fp16=not args.no_fp16)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"thyrofast export: error: {exc}", file=sys.stderr)
        return 2
    for name, result in report.items():
        if isinstance(result, dict):
            status = "written" if result["passed"] else f"NOT written ({result['reason']})"
            print(f"{name}: {status}; macro-AUC FP32 {result['auc_fp32']:.4f} / INT8 "
                  f"{result['auc_int8']:.4f}, top-1 agreement {result['agreement']:.2%}")
        else:
            print(f"{name}: {result}")
    return 0
