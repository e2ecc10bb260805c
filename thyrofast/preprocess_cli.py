"""``thyrofast preprocess INPUTS... --out DIR``: run the core on image/DICOM files.

Writes one ``.npy`` (N, C, H, W) per input and, with ``--png``, an 8-bit
preview of each frame, so the effect of the parameters can be looked at.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="image or DICOM files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--denoise", default="srad", choices=["srad", "median3", "median5", "none"])
    p.add_argument("--normalize", default="percentile", choices=["percentile", "minmax", "zscore", "none"])
    p.add_argument("--srad-iterations", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
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

    from . import InputError, Preprocessor, read

    try:
        pre = Preprocessor(size=tuple(args.size), denoise=args.denoise, normalize=args.normalize,
                           srad_iterations=args.srad_iterations, dtype=args.dtype)
    except (TypeError, ValueError) as exc:
        print(f"thyrofast preprocess: error: {exc}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"thyrofast preprocess: error: cannot make the output folder {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    failed = 0
    for path, name in zip(args.inputs, _output_names(args.inputs)):
        try:
            frames = read(path)
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
