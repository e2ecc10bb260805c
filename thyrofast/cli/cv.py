"""``thyrofast cv DATA --out FOLDER``: patient-level stratified k-fold cross-validation with repeats."""
from __future__ import annotations

import argparse
import math

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import reported
from thyrofast.errors import InputError

# training options passed through to every fold (name on the command line -> train() keyword)
_TRAIN_OPTS = ("arch", "width", "epochs", "image_size", "batch_size", "lr", "patience", "aggregation", "crop",
               "positive", "target_sensitivity", "threads", "pretrained", "init", "aux_weight", "backbone_lr_scale")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thyrofast.train.loop import DEFAULTS

    p.add_argument("data", help="data set as thyrofast train takes it (manifest CSV, folder with manifest.csv, or "
                                "class folders); every patient is used, the manifest's split column is not")
    p.add_argument("--out", required=True, help="output folder (rerun with the same settings to resume)")
    p.add_argument("--folds", type=int, default=5, help="folds per repeat (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2, help="repeats, each with its own deal (default: %(default)s)")
    opt.add_seed(p, help="repeat r deals and trains with seed + r (default 0)")
    opt.add_endpoint(p, help="named binary endpoint reported per fold and pooled, e.g. malignant=NMTN+MMTN; "
                             "repeatable")
    opt.add_arch(p)
    p.add_argument("--width", type=float, default=None, help="ResNet width multiplier (train's default)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="default: %(default)s")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="default: %(default)s")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="default: %(default)s")
    p.add_argument("--patience", type=int, default=DEFAULTS.patience, help="default: %(default)s")
    opt.add_aggregation(p)
    opt.add_crop(p, default=DEFAULTS.crop)
    opt.add_mask_annotations(p, help="read every file with burned-in annotations masked (as thyrofast train "
                                     "--mask-annotations)")
    p.add_argument("--positive", default=None, metavar="CLASS", help="operating point class (as thyrofast train)")
    p.add_argument("--target-sensitivity", type=float, default=None, metavar="S",
                   help="operating point: sensitivity >= S on each fold's validation patients (default: Youden)")
    opt.add_denoise(p)
    opt.add_normalize(p)
    p.add_argument("--pretrained", default=None, help="checkpoint every fold starts from")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="fine-tune every fold from any pretrained file (as thyrofast train --init)")
    p.add_argument("--aux-weight", type=float, default=DEFAULTS.aux_weight, help="default: %(default)s")
    p.add_argument("--backbone-lr-scale", type=float, default=DEFAULTS.backbone_lr_scale)
    opt.add_threads(p, help="CPU threads (default: all cores)")
    opt.add_device(p, default="cpu")
    opt.add_bootstrap(p, help="bootstrap replicates of the pooled out-of-fold CIs (default: %(default)s)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="run although pixel-identical images sit under different patients")
    p.add_argument("--no-check", action="store_true", help="skip the data check before the folds")
    p.add_argument("--remove-bundles", action="store_true", help="delete each fold's bundle once it has predicted")
    opt.add_no_progress(p)


def _ms(d) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    sd = d.get("sd")
    return f"{d['mean']:.3f} ± {sd:.3f}" if sd is not None and math.isfinite(sd) else f"{d['mean']:.3f}"


def summary_lines(summary: dict) -> list[str]:
    """The per-fold table and the mean ± SD / pooled CI lines."""
    keys = [k for k in ("macro_auc", "auc", "balanced_accuracy", "sensitivity", "specificity")
            if k in summary["over_folds"]]
    if "balanced_accuracy" not in keys:  # no operating point (3+ classes): the argmax's
        keys.append("balanced_accuracy_argmax")
    names = {"macro_auc": "macro-AUC", "auc": "AUC", "balanced_accuracy": "bal. acc. (op)",
             "balanced_accuracy_argmax": "bal. acc. (argmax)", "sensitivity": "sensitivity (op)",
             "specificity": "specificity (op)"}
    head = f"{'fold':<8}{'patients':>9}" + "".join(f"{names[k]:>19}" for k in keys)
    lines = [head, "-" * len(head)]
    for f in summary["folds"]:
        cells = ["n/a" if f.get(k) is None else f"{f[k]:.3f}" for k in keys]
        lines.append(f"{'r%d-f%d' % (f['repeat'], f['fold']):<8}{f['n_patients']:>9}" + "".join(f"{c:>19}" for c in cells))
    lines.append(f"{'mean±SD':<8}{'':>9}" + "".join(f"{_ms(summary['over_folds'][k]):>19}" for k in keys))
    for key, name in (("pooled_macro_auc", "macro-AUC"), ("pooled_auc", "AUC")):
        p = summary.get(key)
        if p:
            lines.append(f"pooled out-of-fold {name}: {p['value']:.3f} (95% CI {p['ci'][0]:.3f}–{p['ci'][1]:.3f}; "
                         f"{p['ci_method']})")
    for name, e in (summary.get("endpoints_over_folds") or {}).items():
        lines.append(f"endpoint {name}: AUC {_ms(e['auc'])}, sensitivity {_ms(e['sensitivity'])}, "
                     f"specificity {_ms(e['specificity'])} (mean ± SD over folds)")
    return lines


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.train.cv import cross_validate

    require("torch", "torchvision", needed_for="cross-validation")
    kw = {k: getattr(args, k) for k in _TRAIN_OPTS}
    kw["preprocess"] = opt.preprocess_overrides(args)
    if args.mask_annotations:  # only when asked: the plan (cv.json) of a run without it stays as it was
        kw["mask_annotations"] = True
    with reported(InputError, ValueError, OSError):
        summary = cross_validate(args.data, args.out, folds=args.folds, repeats=args.repeats, seed=args.seed,
                                 device=args.device, endpoints=args.endpoint, n_boot=args.bootstrap,
                                 check=not args.no_check, allow_duplicates=args.allow_duplicates,
                                 keep_bundles=not args.remove_bundles, progress=not args.no_progress, **kw)
    print("\n".join(summary_lines(summary)))
    print(f"out-of-fold predictions: {', '.join(summary['out_of_fold'])} in {args.out} "
          f"(thyrofast evaluate --predictions {args.out}/{summary['out_of_fold'][0]} --labels {args.out}/labels.csv)")
    return 0
