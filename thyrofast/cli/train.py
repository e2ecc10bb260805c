"""``thyrofast train DATA --out BUNDLE``: train a CNN and write a model bundle."""
from __future__ import annotations

import argparse

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported
from thyrofast.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thyrofast.train.loop import DEFAULTS

    p.add_argument("data", help="cohort manifest CSV, a folder holding manifest.csv, or a folder of class "
                                "folders (benign/ malignant/, BTN/ NMTN/ MMTN/, ...) with one sub-folder per "
                                "patient; the classes (2 or more) are the data's label / folder names, sorted "
                                "(the BTN/NMTN/MMTN preset keeps its order)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    opt.add_arch(p)
    p.add_argument("--width", type=float, default=None,
                   help=f"ResNet width multiplier (default {DEFAULTS.width} for resnets; 1.0 = torchvision's)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                   help="default: %(default)s; 0 keeps a --pretrained network with its class head as it is "
                        "and fits only the calibration and the image -> patient rule")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size,
                   help="network input side in pixels (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help="global batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience,
                   help="early stopping: epochs without a better validation AUC (default: %(default)s)")
    opt.add_seed(p, default=DEFAULTS.seed)
    opt.add_denoise(p, help="preprocessing noise reduction (default: srad, as the paper)")
    opt.add_normalize(p)
    p.add_argument("--channels", type=int, default=1, choices=(1, 3),
                   help="network input channels (3 = gray replicated; default 1)")
    p.add_argument("--pretrained", default=None, help="local .safetensors checkpoint to start from")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="fine-tune from a pretrained file: a bundle folder, or a .safetensors network or ensemble "
                        "(one member, --init-member), e.g. torchvision weights converted to .safetensors (README); "
                        "checked against --arch/--width first")
    p.add_argument("--init-member", type=int, default=None, metavar="I",
                   help="with an ensemble --init: the member to start from (default 0)")
    p.add_argument("--backbone-lr-scale", type=float, default=DEFAULTS.backbone_lr_scale,
                   help="backbone learning rate / head learning rate, in [0, 1]; below 1 keeps the features of "
                        "a --pretrained backbone (default: %(default)s)")
    p.add_argument("--aux-weight", type=float, default=DEFAULTS.aux_weight,
                   help="weight of the auxiliary finding heads, used when the manifest annotates findings "
                        "(view, TI-RADS lexicon, lymph nodes); 0: class labels only (default: %(default)s)")
    opt.add_crop(p, default=DEFAULTS.crop,
                 help="how files are cropped before preprocessing (stored in the bundle; default: "
                      "%(default)s = DICOM tissue region, else the detected ultrasound field)")
    opt.add_mask_annotations(p, help="fill burned-in annotations (calipers, measurement text) inside the field "
                                     "from the tissue around in every file read (thyrofast.read(mask_annotations="
                                     "True)); stored in the bundle, so predict/evaluate/export read files the same "
                                     "way (default: off)")
    opt.add_aggregation(p, help="image -> patient rule stored in the bundle (default: %(default)s, fitted on the "
                                "training patients)")
    p.add_argument("--positive", default=None, metavar="CLASS",
                   help="the class whose probability gets a decision threshold (operating point) chosen on the "
                        "validation patients and stored in the bundle; predict reports the decision at it "
                        "(default: the second class with 2 classes, e.g. malignant of benign/malignant; none "
                        "with more: the argmax)")
    p.add_argument("--target-sensitivity", type=float, default=None, metavar="S",
                   help="operating point: the highest threshold with validation sensitivity >= S for the "
                        "positive class (default: Youden's J, the maximum of sensitivity + specificity - 1)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="train although the data check finds pixel-identical images under different patients "
                        "(refused by default: a split would put one image in training and validation)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the data check (thyrofast check: duplicates across patients) before training")
    opt.add_endpoint(p, help="declare a named binary endpoint in the bundle, e.g. malignant=NMTN+MMTN; evaluate "
                             "reports its AUC and sensitivity / specificity; repeatable")
    p.add_argument("--conformal-alpha", type=float, default=0.1, metavar="A",
                   help="conformal prediction sets (thyrofast.conformal) calibrated on the validation patients at "
                        "miscoverage A (default %(default)s: each true class covered >= 90%%)")
    opt.add_device(p, default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in BUNDLE/.train")
    p.add_argument("--no-export", action="store_true", help="write weights only (no ONNX)")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 graphs")
    opt.add_threads(p, help="CPU threads for torch and preprocessing (default: all cores)")
    p.add_argument("--ghost-batches", type=int, default=1, help=argparse.SUPPRESS)
    opt.add_no_progress(p, help="no progress bars", quiet=True)


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.train.loop import train

    require("torch", "torchvision", needed_for="training")
    preprocess = opt.preprocess_overrides(args)
    with reported(InputError, ValueError, OSError):
        bundle = train(args.data, args.out, arch=args.arch, width=args.width, epochs=args.epochs,
                       image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
                       patience=args.patience, seed=args.seed, in_channels=args.channels,
                       pretrained=args.pretrained, device=args.device, resume=args.resume,
                       export=not args.no_export, int8=not args.no_int8,
                       ghost_batches=args.ghost_batches, threads=args.threads, preprocess=preprocess,
                       aux_weight=args.aux_weight, crop=args.crop, mask_annotations=args.mask_annotations,
                       aggregation=args.aggregation,
                       backbone_lr_scale=args.backbone_lr_scale,
                       positive=args.positive, target_sensitivity=args.target_sensitivity,
                       check=not args.no_check, allow_duplicates=args.allow_duplicates,
                       init=args.init, init_member=args.init_member, endpoints=args.endpoint,
                       conformal_alpha=args.conformal_alpha, progress=not args.no_progress)
    if bundle is not None:
        t = bundle.manifest["training"]
        val = t["validation"].get("final") or t["validation"]["after_temperature"]
        print(f"wrote {bundle.path}: {', '.join(bundle.artifacts)}")
        print(f"validation: patient macro-AUC {val['patient_macro_auc']}, "
              f"patient accuracy {val['patient_accuracy']}, temperature {bundle.temperature:.3f}")
        op = bundle.manifest.get("operating_point")
        if op:
            print(f"operating point ({op['rule']}): {op['positive']} when P >= {op['threshold']:.3f} "
                  f"(validation sensitivity {op['val_sensitivity']:.3f}, specificity {op['val_specificity']:.3f})")
    return 0
