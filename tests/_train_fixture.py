"""A tiny phantom cohort on disk and a bundle trained on it (shared by the
train / bundle / export tests; built once per session).

Each patient has one round lesion whose look depends on the class (BTN: dark
and smooth; NMTN: bright; MMTN: coarse texture) at a patient-specific place,
with speckle.  Small enough that a quarter-width ResNet-18 at 48x48 learns it
in seconds on two cores.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

CLASSES = ("BTN", "NMTN", "MMTN")
FRAME_HW = (72, 96)
IMAGE_SIZE = 48
WIDTH = 0.25

_CACHE: dict = {}


def lesion_frame(rng: np.random.Generator, label: int, cy: float, cx: float, r: float,
                 hw=FRAME_HW) -> np.ndarray:
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    img = 110 + 28 * rng.standard_normal((h, w))
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if label == 0:
        img[m] = 45 + 12 * rng.standard_normal(m.sum())
    elif label == 1:
        img[m] = 200 + 15 * rng.standard_normal(m.sum())
    else:
        checker = (((yy // 3) + (xx // 3)) % 2) * 130 + 50
        img[m] = checker[m] + 12 * rng.standard_normal(m.sum())
    return np.clip(img, 0, 255).astype(np.uint8)


def write_cohort(root: Path, *, patients_per_class=(12, 12, 12), images_per_patient: int = 5,
                 seed: int = 0, splits=("train", "val", "train", "val", "train", "test")) -> Path:
    """Write PNGs + manifest.csv; returns the manifest path.

    ``splits`` is cycled over each class's patients (so every split has every class).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, n in enumerate(patients_per_class):
        for j in range(n):
            pid = f"{CLASSES[label]}-{j:03d}"
            split = splits[j % len(splits)] if splits else None
            r = rng.uniform(9, 13)
            cy, cx = rng.uniform(r + 3, FRAME_HW[0] - r - 3), rng.uniform(r + 3, FRAME_HW[1] - r - 3)
            for k in range(images_per_patient):
                frame = lesion_frame(rng, label, cy + rng.normal(0, 2), cx + rng.normal(0, 2), r)
                rel = f"img/{pid}_{k}.png"
                (root / "img").mkdir(exist_ok=True)
                Image.fromarray(frame).save(root / rel)
                row = {"path": rel, "patient_id": pid, "label": CLASSES[label]}
                if split:
                    row["split"] = split
                rows.append(row)
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return manifest


def write_binary_cohort(root: Path, *, n_benign: int = 12, n_malignant: int = 12, images_per_patient: int = 4,
                        seed: int = 1, splits=("train", "val", "train", "val", "train", "test"),
                        benign_looking: float = 0.0) -> Path:
    """A 2-class cohort labelled ``benign`` / ``malignant`` (as a user's own data would be):
    benign patients look like BTN, malignant ones alternately like NMTN and MMTN, except a
    fraction ``benign_looking`` of them (every k-th patient) that look benign (the classes
    overlap, as real ones do).  Writes PNGs + manifest.csv; returns the manifest path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, n in (("benign", n_benign), ("malignant", n_malignant)):
        for j in range(n):
            look = 0 if name == "benign" else 1 + j % 2
            if name == "malignant" and int((j + 1) * benign_looking) != int(j * benign_looking):
                look = 0
            pid = f"{name}-{j:03d}"
            r = rng.uniform(9, 13)
            cy, cx = rng.uniform(r + 3, FRAME_HW[0] - r - 3), rng.uniform(r + 3, FRAME_HW[1] - r - 3)
            for k in range(images_per_patient):
                frame = lesion_frame(rng, look, cy + rng.normal(0, 2), cx + rng.normal(0, 2), r)
                rel = f"img/{pid}_{k}.png"
                Image.fromarray(frame).save(root / rel)
                rows.append({"path": rel, "patient_id": pid, "label": name, "split": splits[j % len(splits)]})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return manifest


TRAIN_KW = dict(arch="resnet18", width=WIDTH, image_size=IMAGE_SIZE, epochs=6, batch_size=16,
                lr=3e-3, patience=10, seed=0, progress=False, threads=1,
                preprocess={"denoise": "median3", "normalize": "percentile"})


def cohort(tmp_path_factory) -> Path:
    if "cohort" not in _CACHE:
        _CACHE["cohort"] = write_cohort(tmp_path_factory.mktemp("cohort") / "phantom")
    return _CACHE["cohort"]


def trained_bundle(tmp_path_factory):
    """(bundle path, cohort manifest) of the session's trained and exported bundle."""
    if "bundle" not in _CACHE:
        from thyrofast.train import train

        out = tmp_path_factory.mktemp("bundle") / "b"
        train(cohort(tmp_path_factory), out, export=True, int8=True, log=lambda m: None, **TRAIN_KW)
        _CACHE["bundle"] = out
    return _CACHE["bundle"], cohort(tmp_path_factory)


def tiny_pretrain(out, **kw):
    """``thyrofast.train.pretrain`` at test size (32 px, 1 epoch, one thread and worker, quiet); ``kw`` overrides."""
    from thyrofast.train.pretrain import pretrain

    args = dict(epochs=1, image_size=32, progress=False, threads=1, workers=1, log=lambda m: None)
    args.update(kw)
    return pretrain(out, **args)


def load():
    """This module, registered once so every test module shares its cache."""
    return sys.modules[__name__]
