"""``thyrofast check DATA [--json OUT]``: duplicates, manifest problems and class balance.

Exit status: 0 the data set is clean (warnings allowed), 1 problems were found
(an error in the report), 2 the data set cannot be read at all or bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys

EXIT_PROBLEMS = 1
EXIT_UNUSABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="manifest CSV, a folder holding manifest.csv, or BTN/ NMTN/ MMTN/ folders")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the full report as JSON")
    parser.add_argument("--near-distance", type=int, default=None, metavar="BITS",
                        help="near-duplicate threshold: max Hamming distance of the 64-bit dHashes "
                             "(default 6; 0 = only hash-identical)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from thyrofast.check import NEAR_DUPLICATE_DISTANCE, check_dataset
    from thyrofast.errors import InputError

    near = NEAR_DUPLICATE_DISTANCE if args.near_distance is None else args.near_distance
    if not 0 <= near <= 64:
        print(f"thyrofast check: --near-distance must be in 0..64, got {near}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        report = check_dataset(args.data, near_distance=near, progress=not args.no_progress)
    except InputError as exc:
        print(f"thyrofast check: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(report.text())
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report.to_dict(), fh, indent=2)
        except OSError as exc:
            print(f"thyrofast check: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_UNUSABLE
    return 0 if report.ok else EXIT_PROBLEMS
