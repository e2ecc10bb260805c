"""``thyrofast synth OUT --preset paper --seed 0 [--patients N] [--dicom] [--workers N]``."""
from __future__ import annotations

import argparse
import os

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from thyrofast.synth.cohort import PRESETS

    parser.add_argument("out", help="output folder (created; an interrupted run resumes from OUT.partial)")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                        help="study design to reproduce (default: paper = 195 patients, 3,537 images)")
    opt.add_seed(parser, help="random seed (default 0)")
    parser.add_argument("--patients", type=int, default=None,
                        help="number of patients; scales the preset's class proportions and image count")
    parser.add_argument("--dicom", action="store_true", help="also write US Image Storage DICOM files")
    opt.add_workers(parser, default=None,
                    help="worker processes (default: number of CPUs); output is identical for any value")
    opt.add_no_progress(parser)


def main(args: argparse.Namespace) -> int:
    from thyrofast.synth.cohort import generate_cohort

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    with reported(ValueError, FileExistsError, prefix=""):
        c = generate_cohort(args.out, preset=args.preset, seed=args.seed, patients=args.patients,
                            workers=workers, dicom=args.dicom, progress=not args.no_progress)
    print(f"{c.n_images} images of {c.n_patients} patients in {c.root} (manifest: {c.manifest.name}, "
          f"readers: {c.readers.name})")
    return 0
