"""Measure the dHash near-duplicate threshold of ``thyrofast check`` on a synthetic cohort.

    python tools/near_duplicate_threshold.py COHORT_DIR   # made by `thyrofast synth`

Prints, for thresholds 4..12, how many pairs of distinct images (different
patients / same patient) fall within the threshold (false positives) and how
many edited copies (JPEG, resize, brightness, gamma) fall outside (misses).
"""
from __future__ import annotations

import csv
import io
import os
import sys

import numpy as np
from PIL import Image

from thyrofast.check import pane_hashes
from thyrofast.io import read


def _jpeg(a, q):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf))


def _resize(a, f):
    return np.asarray(Image.fromarray(a).resize((int(a.shape[1] * f), int(a.shape[0] * f)), Image.BILINEAR))


def _bright(a, d):
    return np.clip(a.astype(int) + d, 0, 255).astype(np.uint8)


EDITS = {"jpeg q60": lambda a: _jpeg(a, 60), "jpeg q30": lambda a: _jpeg(a, 30),
         "resize x0.5": lambda a: _resize(a, .5), "resize x0.75": lambda a: _resize(a, .75),
         "resize x1.5": lambda a: _resize(a, 1.5), "brightness +10": lambda a: _bright(a, 10),
         "brightness +25": lambda a: _bright(a, 25), "brightness -25": lambda a: _bright(a, -25),
         "gamma 0.8": lambda a: (255 * (a / 255.0) ** 0.8).astype(np.uint8),
         "x0.6 + -15 + jpeg q70": lambda a: _jpeg(_bright(_resize(a, .6), -15), 70)}


def main(root: str) -> None:
    rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"), newline="")))
    base, pid, dist = [], [], {k: [] for k in EDITS}
    for i, r in enumerate(rows):
        a = read(os.path.join(root, r["path"]), crop="none")[0].pixels
        h = pane_hashes(a)[0][0]
        base.append(h)
        pid.append(r["patient_id"])
        if i % 4 == 0:
            for k, edit in EDITS.items():
                dist[k].append((pane_hashes(edit(a))[0][0] ^ h).bit_count())
    hs = np.array(base, dtype=np.uint64)
    d = np.bitwise_count(hs[:, None] ^ hs[None, :])
    iu = np.triu_indices(len(hs), 1)
    dd = d[iu]
    pid = np.array(pid)
    same = pid[iu[0]] == pid[iu[1]]
    print(f"{len(rows)} images, {len(set(pid))} patients; {int((~same).sum())} cross-patient pairs, "
          f"{int(same.sum())} within-patient pairs; closest cross-patient pair: {int(dd[~same].min())} bits")
    for t in range(4, 13, 2):
        caught = {k: float(np.mean(np.array(v) <= t)) for k, v in dist.items()}
        print(f"T={t:2d}: false positives {int((dd[~same] <= t).sum())} cross-patient, "
              f"{int((dd[same] <= t).sum())} within-patient; copies caught: "
              + ", ".join(f"{k} {c:.0%}" for k, c in caught.items()))


if __name__ == "__main__":
    main(sys.argv[1])
