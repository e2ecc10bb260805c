"""``thyrofast pretrain OUT``: pretraining on phantom lexicon images (findings and, by default, diagnoses)."""
from __future__ import annotations

import argparse
import sys

from ..errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..models import ARCHS
    from .loop import DEFAULTS
    from .pretrain import BACKBONE_FILE, DIAGNOSIS_TARGETS, PretrainConfig

    p.description = ("Render distinct phantom lesions, one per patient, annotated with their findings (TI-RADS "
                     "lexicon, lymph-node features) and the patient's class, and pretrain the CNN on them; writes "
                     f"OUT/{BACKBONE_FILE} for `thyrofast train --pretrained`. Model and preprocessing options "
                     "must match that train call.")
    p.add_argument("out", help="folder to write (backbone.safetensors, pretrain.json)")
    p.add_argument("--images", type=int, default=PretrainConfig.images, help="lexicon images (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=PretrainConfig.epochs, help="default: %(default)s")
    p.add_argument("--arch", default=DEFAULTS.arch, choices=ARCHS, help="default: %(default)s")
    p.add_argument("--width", type=float, default=None, help=f"ResNet width multiplier (default {DEFAULTS.width})")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size, help="default: %(default)s")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="network input channels (default 1)")
    p.add_argument("--denoise", default=None, choices=("srad", "median3", "median5", "none"),
                   help="preprocessing noise reduction (default: srad)")
    p.add_argument("--normalize", default=None, choices=("percentile", "minmax", "zscore", "none"),
                   help="preprocessing gray-level normalization (default: percentile)")
    p.add_argument("--crop", default="detect", choices=("detect", "regions", "region", "none"),
                   help="crop of the rendered frames: detect = as `train --crop detect` reads PNG files, "
                        "regions = the ultrasound region (as DICOM files give it; 'region' is the older "
                        "spelling); default: %(default)s")
    p.add_argument("--lr", type=float, default=PretrainConfig.lr, help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--diagnosis-weight", type=float, default=PretrainConfig.diagnosis_weight,
                   help="weight of the class loss; 0 = findings only, no diagnoses (default: %(default)s)")
    p.add_argument("--diagnosis-target", default=PretrainConfig.diagnosis_target, choices=DIAGNOSIS_TARGETS,
                   help="what the class loss is measured against: the patient's class, or its expectation "
                        "given the shown lesion's findings (the generator's posterior: the same loss in "
                        "expectation with less noise); default: %(default)s")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME=A+B",
                   help="the class head's classes as groups of the phantom's BTN/NMTN/MMTN, each in exactly one "
                        "(e.g. --classes benign=BTN malignant=NMTN+MMTN), so a bundle with those classes can be "
                        "fine-tuned from it (train --init); default: the phantom's three")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=1,
                   help="ensemble members, each pretrained with its own seed and lesions (seed, seed+1, ...) "
                        "and stacked into one file that `train --epochs 0` uses; on the CPU they train side by "
                        "side, one process per core, the cores shared out (default: %(default)s)")
    p.add_argument("--shared-lexicon", action="store_true",
                   help="with --members N > 1: the members train on one set of lesions (the first seed's), "
                        "rendered once, instead of their own")
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads, shared out among side-by-side members (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    # --quiet: the older spelling; --no-progress as in every other command
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require

    from .pretrain import BACKBONE_FILE, pretrain

    require("torch", "torchvision", needed_for="pretraining")

    preprocess = {k: v for k, v in (("denoise", args.denoise), ("normalize", args.normalize)) if v}
    try:
        report = pretrain(args.out, images=args.images, epochs=args.epochs, seed=args.seed, arch=args.arch,
                          width=args.width, in_channels=args.channels, image_size=args.image_size,
                          preprocess=preprocess, crop=args.crop, lr=args.lr, workers=args.workers,
                          diagnosis_weight=args.diagnosis_weight, diagnosis_target=args.diagnosis_target,
                          members=args.members,
                          shared_lexicon=args.shared_lexicon,
                          threads=args.threads, device=args.device, progress=not args.no_progress,
                          classes=args.classes)
    except (InputError, ValueError) as exc:
        print(f"thyrofast pretrain: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output folder cannot be written (a file in its place, permissions, disk full)
        print(f"thyrofast pretrain: error: {exc}", file=sys.stderr)
        return 3
    print(f"wrote {args.out}/{BACKBONE_FILE} ({report['n_images']['train']} training images, "
          f"{report['seconds']:.0f} s); use: thyrofast train DATA --out BUNDLE --pretrained "
          f"{args.out}/{BACKBONE_FILE}")
    return 0
