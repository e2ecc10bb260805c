"""``thyrofast evaluate``: metrics, reader comparison, report and figures.

    thyrofast evaluate BUNDLE DATA [--split test] [--readers readers.csv]
                       [--level patient|image] --report OUT/
    thyrofast evaluate --predictions results.jsonl --labels manifest.csv
                       [--readers readers.csv] [--split test] --report OUT/
"""
from __future__ import annotations

import argparse

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import CommandError, reported
from thyrofast.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", nargs="?", help="model bundle folder (omit with --predictions)")
    parser.add_argument("data", nargs="?", help="data set: manifest CSV or a folder holding manifest.csv")
    parser.add_argument("--predictions", metavar="FILE", help="results.jsonl/.csv from `thyrofast predict`")
    parser.add_argument("--labels", metavar="CSV", help="labels manifest (path, patient_id, label[, split])")
    parser.add_argument("--split", default=None,
                        help="evaluate only this split; 'all' for every row, e.g. a second cohort generated "
                             "with another seed (default: 'test' with a bundle, all rows with --predictions)")
    parser.add_argument("--readers", metavar="CSV",
                        help="readers.csv (junior/senior calls and scores); with a bundle, readers.csv "
                             "beside the manifest is used when present")
    parser.add_argument("--level", choices=("patient", "image"), default="patient",
                        help="patient (default; image probabilities aggregated per patient by the bundle's "
                             "rule) or image")
    parser.add_argument("--aggregation-from", metavar="BUNDLE", default=None,
                        help="with --predictions: aggregate images per patient by this bundle's rule "
                             "(default: mean log-probability) and report its operating point")
    opt.add_endpoint(parser, help="a named binary endpoint, e.g. malignant=NMTN+MMTN: its AUC (the summed "
                                  "probability of its classes) and sensitivity / specificity of the calls; repeatable")
    parser.add_argument("--report", metavar="OUT", required=True,
                        help="output folder for report.json, report.md and figures")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    opt.add_no_progress(parser)
    opt.add_bootstrap(parser, help="bootstrap replicates (patient-level, default 2000)")
    opt.add_seed(parser, help="bootstrap seed (default 0)")
    parser.add_argument("--ci-level", type=float, default=0.95, help="confidence level (default 0.95)")
    # the names are checked where the bundle is loaded (as `evaluate` always did), not by the parser
    opt.add_backend(parser, help="inference backend with a bundle (default auto)", checked=False)
    opt.add_device(parser, help="inference device with a bundle (default auto)", checked=False)


def main(args: argparse.Namespace) -> int:
    from thyrofast.evaluate import evaluate_bundle, evaluate_predictions, summary_lines, write_report  # noqa: PLC0415

    opts = dict(n_boot=args.bootstrap, seed=args.seed, ci_level=args.ci_level, endpoints=args.endpoint)
    split = None if args.split == "all" else args.split
    # an unusable input exits 1, a bad combination of options 2
    with reported(InputError, prefix="", code=1), reported(ValueError, prefix=""):
        if args.predictions or args.labels:
            if not (args.predictions and args.labels):
                raise CommandError("--predictions and --labels go together")
            if args.bundle or args.data:
                raise CommandError("give either BUNDLE DATA or --predictions/--labels")
            if args.aggregation_from:
                from thyrofast.bundle import Bundle  # noqa: PLC0415

                b = Bundle.load(args.aggregation_from, verify=False)
                opts["aggregation"] = b.aggregation
                opts["operating_point"] = b.operating_point  # its decision threshold too
                if not args.endpoint:  # and the endpoints it declares
                    opts["endpoints"] = b.manifest.get("endpoints")
            result = evaluate_predictions(args.predictions, args.labels, readers_csv=args.readers,
                                          level=args.level, split=split, **opts)
        else:
            if args.aggregation_from:
                raise CommandError("--aggregation-from goes with --predictions (a bundle uses its own rule)")
            if not (args.bundle and args.data):
                raise CommandError("give BUNDLE DATA, or --predictions and --labels")
            result = evaluate_bundle(args.bundle, args.data, split=split if args.split else "test",
                                     readers=args.readers, level=args.level, backend=args.backend,
                                     device=args.device, progress=not args.no_progress, **opts)
        written = write_report(result, args.report, figures=not args.no_figures)
    c = result["counts"]
    print(f"{result['level']} level: {c['patients']} patients"
          + (f", {c['images']} images" if c.get("images") else "")
          + f"; {int(round(100 * result['ci_level']))}% CIs in brackets")
    print("\n".join(summary_lines(result)))
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"report: {written['report.md']}")
    return 0
