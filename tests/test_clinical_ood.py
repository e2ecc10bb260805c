"""The OOD gate (thyrofast.ood) on the fixture model: refers out-of-distribution inputs of every listed kind
while referring few in-distribution validation frames.  Numbers are printed (-s) for the report."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from thyrofast.ood import OODGate, pre_gate

US_FILES = ("US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm", "color-pl.dcm",
            "JPGLosslessP14SV1_1s_1f_8b.dcm", "examples_rgb_color.dcm", "examples_palette.dcm",
            "examples_ybr_color.dcm", "examples_jpeg2k.dcm", "color3d_jpeg_baseline.dcm")


def _gray(f):
    return f if f.ndim == 2 else np.round(f[..., :3] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from thyrofast import read
    from thyrofast.bundle import Bundle

    import _train_fixture as TF

    path, manifest = TF.load().trained_bundle(tmp_path_factory)
    bundle = Bundle.load(path)
    crop = bundle.read_options["crop"]
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    val = [read(manifest.parent / r["path"], crop=crop)[0].pixels for r in rows if r["split"] == "val"]
    test = [read(manifest.parent / r["path"], crop=crop)[0].pixels for r in rows if r["split"] == "test"]
    return bundle, val, test, crop


def _ood_sets(val, crop):
    from PIL import Image
    from pydicom.data import get_testdata_file

    from thyrofast import read

    rng = np.random.default_rng(7)
    us = []
    for name in US_FILES:
        p = get_testdata_file(name, download=False)
        if p is None:
            continue
        us.append(read(p, crop=crop, frames=[0])[0].pixels)
    photos = []
    sk = pytest.importorskip("sklearn.datasets")
    folder = Path(sk.__file__).parent / "images"
    for name in ("china.jpg", "flower.jpg"):
        im = np.asarray(Image.open(folder / name).convert("RGB"))
        h, w, _ = im.shape
        for _ in range(10):
            hh, ww = rng.integers(100, h), rng.integers(100, w)
            y0, x0 = rng.integers(0, h - hh + 1), rng.integers(0, w - ww + 1)
            photos.append(im[y0:y0 + hh, x0:x0 + ww])
    doppler = []
    for f in val:  # a colour-flow blob (red or blue) over the B-mode frame
        rgb = np.repeat(f[..., None], 3, -1).copy()
        h, w = f.shape
        yy, xx = np.mgrid[:h, :w]
        m = (yy - rng.integers(15, h - 15)) ** 2 + (xx - rng.integers(15, w - 15)) ** 2 < rng.integers(8, 15) ** 2
        rgb[m] = (255, 0, 0) if rng.random() < 0.5 else (0, 0, 255)
        doppler.append(rgb)
    sector = []
    for f in val:  # a curvilinear / phased-array fan instead of the linear field
        h, w = f.shape
        yy, xx = np.mgrid[:h, :w]
        ang = np.degrees(np.arctan2(xx - w / 2, yy + 0.3 * h))
        r = np.hypot(xx - w / 2, yy + 0.3 * h)
        g = f.copy()
        g[~((np.abs(ang) < 35) & (r > 0.3 * h + 5) & (r < 1.3 * h))] = 0
        sector.append(g)
    return {
        "non-thyroid ultrasound (pydicom-data)": us,
        "  non-thyroid ultrasound converted to gray (model score only)": [_gray(f) for f in us],
        "Doppler / colour overlay": doppler,
        "  Doppler converted to gray (model score only)": [_gray(f) for f in doppler],
        "natural photographs": photos,
        "  natural photographs converted to gray (model score only)": [_gray(f) for f in photos],
        "blank": [np.full(val[0].shape, v, np.uint8) for v in (0, 5, 17, 40, 128)],
        "saturated": [np.full(val[0].shape, 255, np.uint8), np.full((300, 400), 65535, np.uint16),
                      np.where(np.arange(96)[None, :] < 70, 255, 90).repeat(72, 0).astype(np.uint8)],
        "sector probe geometry": sector,
    }


def test_gate_refers_ood_and_keeps_in_distribution(setup):
    bundle, val, test, crop = setup
    assert bundle.ood is not None and bundle.ood["val_refer_rate"] <= 0.05
    gate = OODGate(bundle, bundle.ood)
    false_refer = float(np.mean([r["refer"] for r in gate.check(val)]))
    test_refer = float(np.mean([r["refer"] for r in gate.check(test)]))
    lines = [f"in-distribution validation frames: {len(val)}, false refer {100 * false_refer:.1f}%; "
             f"test-split frames: {len(test)}, false refer {100 * test_refer:.1f}%"]
    low = []
    listed, caught = 0, 0
    for name, frames in _ood_sets(val, crop).items():
        res = gate.check(frames)
        rate = float(np.mean([r["refer"] for r in res]))
        by_model = float(np.mean([r["refer"] and r["model_checked"] for r in res]))
        lines.append(f"{name}: {len(frames)} inputs, referred {100 * rate:.1f}% (by the model score "
                     f"{100 * by_model:.1f}%)")
        if not name.startswith("  "):  # the listed categories (gray copies are diagnostics)
            listed += len(frames)
            caught += sum(r["refer"] for r in res)
            assert all(r["reason"] for r in res if r["refer"])
            if rate < 0.95:
                low.append(name)
    lines.append(f"all listed OOD inputs: {listed}, referred {100 * caught / listed:.1f}%")
    print("\n" + "\n".join(lines))
    assert false_refer <= 0.05 and test_refer <= 0.05
    assert caught / listed >= 0.95
    assert low == []  # every listed kind, not just the total


def test_pre_gate_rules():
    rng = np.random.default_rng(0)
    speckle = np.clip(110 + 28 * rng.standard_normal((64, 64)), 0, 255).astype(np.uint8)
    assert pre_gate(speckle) is None
    assert pre_gate(np.repeat(speckle[..., None], 3, -1)) is None  # gray stored as RGB is not colour
    assert "blank" in pre_gate(np.full((64, 64), 3, np.uint8))
    assert "saturated" in pre_gate(np.full((64, 64), 255, np.uint8))
    rgb = np.repeat(speckle[..., None], 3, -1)
    rgb[:8, :8] = (200, 30, 30)  # 1.6% coloured
    assert "colour" in pre_gate(rgb)
