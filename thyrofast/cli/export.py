"""``thyrofast export BUNDLE [--int8 --calib DATA]``: (re)build a bundle's ONNX artifacts."""
from __future__ import annotations

import argparse

from thyrofast.cli._errors import CommandError, reported
from thyrofast.cli._options import add_no_progress
from thyrofast.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="model bundle folder (holds thyrofast.json)")
    p.add_argument("--no-fp16", action="store_true", help="skip the FP16 graph")
    p.add_argument("--int8", action="store_true",
                   help="also build the gated INT8 Q/DQ graphs (needs --calib)")
    p.add_argument("--calib", metavar="DATA",
                   help="cohort manifest (or its folder): training patients calibrate, "
                        "validation patients gate")
    p.add_argument("--n-calib", type=int, default=128, help="calibration frames (default: %(default)s)")
    add_no_progress(p, help="no progress bars", quiet=True)


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.export import export_bundle, export_from_data

    require("torch", "torchvision", needed_for="exporting ONNX from the bundle's weights")
    if args.int8 and not args.calib:
        raise CommandError("--int8 needs --calib DATA (frames to calibrate and gate on)")
    with reported(InputError, ValueError, FileNotFoundError):
        if args.int8:
            report = export_from_data(args.bundle, args.calib, fp16=not args.no_fp16,
                                      n_calib=args.n_calib, progress=not args.no_progress)
        else:
            report = export_bundle(args.bundle, fp16=not args.no_fp16)
    for name, result in report.items():
        if isinstance(result, dict):
            status = "written" if result["passed"] else f"NOT written ({result['reason']})"
            print(f"{name}: {status}; macro-AUC FP32 {result['auc_fp32']:.4f} / INT8 "
                  f"{result['auc_int8']:.4f}, top-1 agreement {result['agreement']:.2%}")
        else:
            print(f"{name}: {result}")
    return 0
