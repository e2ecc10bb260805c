"""``thyrofast check DATA [--json OUT]``: duplicates, manifest problems and class balance.

Exit status: 0 the data set is clean (warnings allowed), 1 problems were found
(an error in the report), 2 the data set cannot be read at all or bad usage.
"""
from __future__ import annotations

import argparse
import json

from thyrofast.cli._errors import CommandError, reported
from thyrofast.cli._options import add_no_progress

EXIT_PROBLEMS = 1
EXIT_UNUSABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="manifest CSV, a folder holding manifest.csv, or BTN/ NMTN/ MMTN/ folders")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the full report as JSON")
    parser.add_argument("--near-distance", type=int, default=None, metavar="BITS",
                        help="near-duplicate threshold: max Hamming distance of the 64-bit dHashes "
                             "(default 6; 0 = only hash-identical)")
    add_no_progress(parser)


def main(args: argparse.Namespace) -> int:
    from thyrofast.check import NEAR_DUPLICATE_DISTANCE, check_dataset
    from thyrofast.errors import InputError

    near = NEAR_DUPLICATE_DISTANCE if args.near_distance is None else args.near_distance
    if not 0 <= near <= 64:
        raise CommandError(f"--near-distance must be in 0..64, got {near}", EXIT_UNUSABLE)
    with reported(InputError, prefix="", code=EXIT_UNUSABLE):
        report = check_dataset(args.data, near_distance=near, progress=not args.no_progress)
    print(report.text())
    if args.json:
        with reported(OSError, prefix=f"cannot write {args.json}: ", code=EXIT_UNUSABLE, strerror=True):
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report.to_dict(), fh, indent=2)
    return 0 if report.ok else EXIT_PROBLEMS
