"""``thyrofast preprocess INPUTS... --out DIR [--bundle BUNDLE] [--crop ...] [--mask-annotations]``: run
the core on image/DICOM files.

Writes one ``.npy`` (N, C, H, W) per input and, with ``--png``, an 8-bit
preview of each frame, so the effect of the parameters can be looked at.
With ``--bundle`` the files are read (cropped, annotations masked when the
bundle says so) and preprocessed exactly as ``predict`` does for that bundle:
what its network sees.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from thyrofast.cli._errors import reported
from thyrofast.cli._options import add_crop, add_denoise, add_mask_annotations, add_normalize

#: the preprocessing options and their defaults without a bundle
_DEFAULTS = {"size": (224, 224), "denoise": "srad", "normalize": "percentile", "srad_iterations": 10,
             "dtype": "float32"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="image or DICOM files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--bundle", type=Path, help="use this model bundle's preprocessing parameters and read "
                   "options (crop, annotation masking: what its network sees); options given beside it override "
                   "the bundle's")
    add_crop(p, help="how files are cropped before preprocessing, as in train/predict "
                     "(default: the bundle's, else auto)")
    add_mask_annotations(p, negatable=True,
                         help="fill burned-in annotations (calipers, text) inside the field from the tissue "
                              "around, as thyrofast.read(mask_annotations=True) (default: the bundle's, else off)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size (default 224 224)")
    add_denoise(p, help="(default srad)")
    add_normalize(p, help="(default percentile)")
    p.add_argument("--srad-iterations", type=int, help="(default 10)")
    p.add_argument("--dtype", choices=["float32", "float16"], help="(default float32)")
    p.add_argument("--png", action="store_true", help="also write 8-bit PNG previews")


def _output_names(paths: list[Path]) -> list[str]:
    """One name per input: its stem, with -2, -3, ... for later inputs whose stem repeats."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        n = seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return names


def main(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from thyrofast import InputError, Preprocessor, PreprocessParams, read

    given = {k: getattr(args, k) for k in _DEFAULTS if getattr(args, k) is not None}
    if "size" in given:
        given["size"] = tuple(given["size"])
    from thyrofast.io.schema import file_read_options

    base, read_opts = PreprocessParams(**_DEFAULTS), file_read_options()
    if args.bundle is not None:
        from thyrofast.bundle import Bundle

        with reported(InputError, TypeError, ValueError, OSError, prefix="cannot use the bundle: "):
            bundle = Bundle.load(args.bundle, verify=False)  # only its manifest is used
            base, read_opts = bundle.preprocess_params, file_read_options(bundle.read_options)
    # --crop / --mask-annotations given beside the bundle override its read options
    read_opts.update({k: v for k, v in (("crop", args.crop), ("mask_annotations", args.mask_annotations))
                      if v is not None})
    crop = read_opts["crop"]
    with reported(TypeError, ValueError):
        pre = Preprocessor(dataclasses.replace(base, **given))
    if args.bundle is not None:
        p = pre.params
        note = f" (overriding the bundle's {', '.join(sorted(given))})" if given else ""
        masked = ", annotations masked" if read_opts["mask_annotations"] else ""
        print(f"preprocessing of {args.bundle}{note}: crop {crop}{masked}, size {p.size[0]}x{p.size[1]}, "
              f"denoise {p.denoise}, normalize {p.normalize}, {p.channels} channel(s)", file=sys.stderr)
    with reported(OSError, prefix=f"error: cannot make the output folder {args.out}: ", strerror=True):
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path, name in zip(args.inputs, _output_names(args.inputs)):
        try:
            frames = read(path, **read_opts)
            x = np.concatenate([pre(f.pixels) for f in frames])
        except (InputError, TypeError, ValueError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        np.save(args.out / f"{name}.npy", x)
        if args.png:
            for i, img in enumerate(x[:, 0].astype(np.float32)):
                lo, hi = float(img.min()), float(img.max())
                u8 = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).astype(np.uint8)
                Image.fromarray(u8).save(args.out / f"{name}_{i:03d}.png")
        print(f"{path} -> {args.out / (name + '.npy')} {tuple(x.shape)}")
    return 1 if failed else 0
