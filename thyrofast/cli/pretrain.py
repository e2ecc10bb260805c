"""``thyrofast pretrain OUT``: pretraining on phantom lexicon images (findings and, by default, diagnoses)."""
from __future__ import annotations

import argparse

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported
from thyrofast.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thyrofast.io.schema import RENDER_CROPS
    from thyrofast.train.loop import DEFAULTS
    from thyrofast.train.pretrain import BACKBONE_FILE, DIAGNOSIS_TARGETS, PretrainConfig

    p.description = ("Render distinct phantom lesions, one per patient, annotated with their findings (TI-RADS "
                     "lexicon, lymph-node features) and the patient's class, and pretrain the CNN on them; writes "
                     f"OUT/{BACKBONE_FILE} for `thyrofast train --pretrained`. Model and preprocessing options "
                     "must match that train call.")
    p.add_argument("out", help="folder to write (backbone.safetensors, pretrain.json)")
    p.add_argument("--images", type=int, default=PretrainConfig.images, help="lexicon images (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=PretrainConfig.epochs, help="default: %(default)s")
    opt.add_arch(p)
    p.add_argument("--width", type=float, default=None, help=f"ResNet width multiplier (default {DEFAULTS.width})")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size, help="default: %(default)s")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="network input channels (default 1)")
    opt.add_denoise(p)
    opt.add_normalize(p)
    # a rendering's crops, "region" (the older spelling of "regions") accepted beside "regions"
    crops = [c for mode in RENDER_CROPS for c in ((mode, "region") if mode == "regions" else (mode,))]
    opt.add_crop(p, default=PretrainConfig.crop, choices=crops,
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
    opt.add_seed(p)
    p.add_argument("--members", type=int, default=1,
                   help="ensemble members, each pretrained with its own seed and lesions (seed, seed+1, ...) "
                        "and stacked into one file that `train --epochs 0` uses; on the CPU they train side by "
                        "side, one process per core, the cores shared out (default: %(default)s)")
    p.add_argument("--shared-lexicon", action="store_true",
                   help="with --members N > 1: the members train on one set of lesions (the first seed's), "
                        "rendered once, instead of their own")
    opt.add_workers(p, help="rendering processes (default: %(default)s)")
    opt.add_threads(p, help="torch threads, shared out among side-by-side members (default: torch's choice)")
    opt.add_device(p, default="cpu")
    opt.add_no_progress(p, help="no progress bars", quiet=True)


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.train.pretrain import BACKBONE_FILE, pretrain

    require("torch", "torchvision", needed_for="pretraining")

    preprocess = opt.preprocess_overrides(args)
    # the output folder cannot be written (a file in its place, permissions, disk full): exit 3
    with reported(InputError, ValueError), reported(OSError, code=3):
        report = pretrain(args.out, images=args.images, epochs=args.epochs, seed=args.seed, arch=args.arch,
                          width=args.width, in_channels=args.channels, image_size=args.image_size,
                          preprocess=preprocess, crop=args.crop, lr=args.lr, workers=args.workers,
                          diagnosis_weight=args.diagnosis_weight, diagnosis_target=args.diagnosis_target,
                          members=args.members,
                          shared_lexicon=args.shared_lexicon,
                          threads=args.threads, device=args.device, progress=not args.no_progress,
                          classes=args.classes)
    print(f"wrote {args.out}/{BACKBONE_FILE} ({report['n_images']['train']} training images, "
          f"{report['seconds']:.0f} s); use: thyrofast train DATA --out BUNDLE --pretrained "
          f"{args.out}/{BACKBONE_FILE}")
    return 0
