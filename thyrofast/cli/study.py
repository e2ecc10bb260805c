"""``thyrofast study [PROTOCOL] OUT [--quick] [--rung R] [--replicate ID]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", nargs="?", default="thyrofast-study", type=Path,
                   help="study folder (default ./thyrofast-study); re-running resumes, finished units are kept")
    p.add_argument("--protocol", default="full",
                   help="'full' (docs/study_protocol.md), 'quick', or a protocol JSON file (default: full)")
    p.add_argument("--quick", action="store_true", help="the tiny CI protocol (a few minutes; numbers mean nothing)")
    p.add_argument("--rung", action="append", help="run only this rung now (repeatable); the report covers all done")
    p.add_argument("--replicate", action="append", help="run only this replicate now (repeatable)")
    opt.add_workers(p, help="rendering processes")
    opt.add_device(p)
    opt.add_no_progress(p, help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require

    require("torch", "torchvision", needed_for="pretraining and training")
    from thyrofast.study import run_study

    with reported(ValueError, FileExistsError):
        rep = run_study(args.protocol, args.out, quick=args.quick, rungs=args.rung, replicates=args.replicate,
                        workers=args.workers, device=args.device, progress=not args.no_progress)
    print(f"study report: {Path(args.out) / 'report.md'} ({len(rep['units_done'])} units done, "
          f"{len(rep['units_missing'])} missing)")
    return 0
