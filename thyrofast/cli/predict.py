"""``thyrofast predict BUNDLE INPUTS... --out results.jsonl|.csv``: thin CLI over :mod:`thyrofast.predict`."""
from __future__ import annotations

import argparse
import sys

from thyrofast.cli._errors import CommandError, reason, reported
from thyrofast.cli._options import add_backend, add_device, add_no_progress, add_precision, add_threads

EXIT_INPUT_ERRORS = 1
EXIT_OUTPUT_ERROR = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="model bundle folder (with thyrofast.json)")
    parser.add_argument("inputs", nargs="+", help="image / DICOM files, folders, or manifest .csv files")
    parser.add_argument("--out", required=True, help="results file: .jsonl (default format) or .csv; "
                        "an existing file is resumed (inputs already recorded are skipped)")
    add_backend(parser)
    add_device(parser)
    add_precision(parser)
    add_threads(parser, help="CPU threads (default: all available)")
    parser.add_argument("--batch", type=int, default=16, help="frames per inference batch (default 16)")
    parser.add_argument("--saliency", metavar="DIR", default=None,
                        help="also write Grad-CAM overlays (PNG) into DIR (needs torch)")
    parser.add_argument("--sr", metavar="DIR", default=None,
                        help="also write a DICOM Structured Report (TID 1500) per study of the DICOM inputs into DIR "
                             "(needs the sr extra)")
    add_no_progress(parser)


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.classifier import Classifier
    from thyrofast.errors import InputError
    from thyrofast.predict import OutputError, predict_files

    for name in ("threads", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name} must be >= 1, got {value}")
    if args.saliency is not None:
        require("torch", "torchvision", needed_for="--saliency (Grad-CAM)")
    if args.sr is not None:
        require("highdicom", needed_for="--sr (DICOM Structured Report)")
    with reported(InputError, ValueError, prefix="cannot load the model: "):
        clf = Classifier.load(args.bundle, backend=args.backend, device=args.device, precision=args.precision,
                              threads=args.threads, max_batch=args.batch)
    p = clf.provenance
    print(f"model {p['bundle_sha256'][:12]} on {p['backend']}/{p['device']}/{p['precision']}", file=sys.stderr)
    try:
        s = predict_files(clf, args.inputs, args.out, saliency_dir=args.saliency, batch_frames=args.batch,
                          progress=not args.no_progress)
    except OutputError as exc:
        raise CommandError(reason(exc), EXIT_OUTPUT_ERROR) from exc
    except OSError as exc:  # the results file cannot be created (permissions, a missing drive, ...)
        raise CommandError(f"cannot write {args.out}: {reason(exc)}", EXIT_OUTPUT_ERROR) from exc
    except InputError as exc:  # e.g. an unreadable manifest given on the command line
        raise CommandError(str(exc)) from exc
    else:
        if args.sr is not None:
            n_sr = _write_sr(clf, args.out, args.sr)
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


def _write_sr(clf, results: str, directory: str) -> int:
    """One SR per study from the records in ``results`` (this run's and earlier ones'); their number."""
    from thyrofast.classifier import bundle_aggregation, bundle_operating_point
    from thyrofast.predict import RecordWriter
    from thyrofast.sr import write_study_reports

    with RecordWriter(results, None, clf.classes) as w:
        records = list(w.records)
    manifest = clf.bundle.manifest
    with reported(OSError, prefix=f"cannot write the SR into {directory}: ", code=EXIT_OUTPUT_ERROR, strerror=True):
        paths = write_study_reports(records, directory, classes=clf.classes, provenance=clf.provenance,
                                    aggregation=bundle_aggregation(clf), operating_point=bundle_operating_point(clf),
                                    conformal=manifest.get("conformal"))
    return len(paths)
