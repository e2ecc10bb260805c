"""``thyrofast demo [OUT] [--quick] [--force]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", nargs="?", default="thyrofast-demo", type=Path,
                   help="output folder (default ./thyrofast-demo); re-running resumes")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer patients, small input, a short pretraining")
    p.add_argument("--force", action="store_true", help="redo every step")
    opt.add_seed(p)
    opt.add_device(p)
    opt.add_workers(p, help="rendering processes (cohort and pretraining images)")
    p.add_argument("--epochs", type=int,
                   help="training epochs on the cohort (the recipe: 0, the pretrained network is kept; "
                        "N > 0 trains its heads for N epochs)")
    p.add_argument("--image-size", type=int, help="override the network input size")
    p.add_argument("--patients", type=int, help="override the cohort size (class mix kept)")
    p.add_argument("--pretrain-images", type=int,
                   help="pretraining images per ensemble member (default: the recipe's, see thyrofast.demo.RECIPE)")
    p.add_argument("--pretrain-members", type=int,
                   help="pretrain this many networks (own seeds, one shared set of lesions) and average them "
                        "(default: the recipe's, 2; 1 = a single network: 13 instead of 17 minutes on 2 CPU "
                        "cores, measured with 12,000 lesions)")
    from thyrofast.train.pretrain import DIAGNOSIS_TARGETS

    p.add_argument("--pretrain-target", choices=DIAGNOSIS_TARGETS,
                   help="what the pretraining's class loss is measured against: the generator's posterior of the "
                        "class given the shown lesion (the recipe's), or the patient's class (see `thyrofast "
                        "pretrain --diagnosis-target`)")
    opt.add_no_progress(p, help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.demo import DemoConfig, run_demo

    # pretraining and training need PyTorch: say so before the cohort is rendered
    require("torch", "torchvision", needed_for="pretraining and training")
    with reported(ValueError):
        cfg = DemoConfig(out=args.out, quick=args.quick, seed=args.seed, device=args.device, workers=args.workers,
                         force=args.force, epochs=args.epochs, image_size=args.image_size, patients=args.patients,
                         pretrain_images=args.pretrain_images, pretrain_members=args.pretrain_members,
                         pretrain_target=args.pretrain_target,
                         progress=not args.no_progress)
    run_demo(cfg)
    return 0
