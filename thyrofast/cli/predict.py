"""``thyrofast predict BUNDLE INPUTS... --out results.jsonl|.csv``: thin CLI over :mod:`thyrofast.predict`."""
from __future__ import annotations

import argparse
import sys

EXIT_INPUT_ERRORS = 1
EXIT_OUTPUT_ERROR = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="model bundle folder (with thyrofast.json)")
    parser.add_argument("inputs", nargs="+", help="image / DICOM files, folders, or manifest .csv files")
    parser.add_argument("--out", required=True, help="results file: .jsonl (default format) or .csv; "
                        "an existing file is resumed (inputs already recorded are skipped)")
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "torch", "openvino", "onnxruntime"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    parser.add_argument("--batch", type=int, default=16, help="frames per inference batch (default 16)")
    parser.add_argument("--saliency", metavar="DIR", default=None,
                        help="also write Grad-CAM overlays (PNG) into DIR (needs torch)")
    parser.add_argument("--sr", metavar="DIR", default=None,
                        help="also write a DICOM Structured Report (TID 1500) per study of the DICOM inputs into DIR "
                             "(needs the sr extra)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.classifier import Classifier
    from thyrofast.errors import InputError
    from thyrofast.predict import OutputError, predict_files

    for name in ("threads", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"thyrofast predict: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.saliency is not None:
        require("torch", "torchvision", needed_for="--saliency (Grad-CAM)")
    if args.sr is not None:
        require("highdicom", needed_for="--sr (DICOM Structured Report)")
    try:
        clf = Classifier.load(args.bundle, backend=args.backend, device=args.device, precision=args.precision,
                              threads=args.threads, max_batch=args.batch)
    except (InputError, ValueError) as exc:
        print(f"thyrofast predict: cannot load the model: {exc}", file=sys.stderr)
        return 2
    p = clf.provenance
    print(f"model {p['bundle_sha256'][:12]} on {p['backend']}/{p['device']}/{p['precision']}", file=sys.stderr)
    try:
        s = predict_files(clf, args.inputs, args.out, saliency_dir=args.saliency, batch_frames=args.batch,
                          progress=not args.no_progress)
    except OutputError as exc:
        print(f"thyrofast predict: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_OUTPUT_ERROR
    except OSError as exc:  # the results file cannot be created (permissions, a missing drive, ...)
        print(f"thyrofast predict: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_OUTPUT_ERROR
    except InputError as exc:  # e.g. an unreadable manifest given on the command line
        print(f"thyrofast predict: {exc}", file=sys.stderr)
        return 2
    else:
        if args.sr is not None:
            n_sr = _write_sr(clf, args.out, args.sr)
            if n_sr is None:
                return EXIT_OUTPUT_ERROR
            print(f"{n_sr} DICOM SR (one per study) -> {args.sr}", file=sys.stderr)
    finally:
        clf.close()
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(s.error_codes.items()))
    print(
        f"{s.n_inputs} inputs: {s.n_ok} ok, {s.n_error} failed{f' ({codes})' if codes else ''}, "
        f"{s.n_skipped} already recorded; {s.n_frames} frames in {s.seconds:.1f} s "
        f"({s.frames_per_second:.1f} frames/s); {s.n_patients} patients -> {args.out}",
        file=sys.stderr,
    )
    manifest = clf.bundle.manifest if hasattr(clf, "bundle") else {}
    if manifest.get("conformal") or manifest.get("ood"):
        print(f"{s.n_referred_images} of {s.n_frames} frames referred for human review (prediction set not one "
              "class, or out of distribution)", file=sys.stderr)
        if str(args.out).lower().endswith(".csv"):
            print("warning: CSV results hold no prediction sets, refer flags or OOD results; write .jsonl for "
                  "them", file=sys.stderr)
    for k, seen in s.mixed_settings.items():
        print(f"warning: {args.out} also holds records made with {k} {', '.join(seen)} "
              f"(this run: {p[k]}); each record names its own", file=sys.stderr)
    if s.n_error_recorded:
        print(f"{s.n_error_recorded} skipped inputs had failed in an earlier run", file=sys.stderr)
    return EXIT_INPUT_ERRORS if (s.n_error or s.n_error_recorded) else 0


def _write_sr(clf, results: str, directory: str) -> int | None:
    """One SR per study from the records in ``results`` (this run's and earlier ones'); None on a write error."""
    from thyrofast.classifier import bundle_aggregation, bundle_operating_point
    from thyrofast.predict import RecordWriter
    from thyrofast.sr import write_study_reports

    with RecordWriter(results, None, clf.classes) as w:
        records = list(w.records)
    manifest = clf.bundle.manifest
    try:
        paths = write_study_reports(records, directory, classes=clf.classes, provenance=clf.provenance,
                                    aggregation=bundle_aggregation(clf), operating_point=bundle_operating_point(clf),
                                    conformal=manifest.get("conformal"))
    except OSError as exc:
        print(f"thyrofast predict: cannot write the SR into {directory}: {exc.strerror or exc}", file=sys.stderr)
        return None
    return len(paths)
