"""Held-out check of the OOD gate (thyrofast.ood), scored once with the gate frozen as issue 27 left it.

tests/test_clinical_ood.py measures the gate on the inputs its author looked at while choosing the score
family and the quantile (11 pydicom ultrasound files at frame 0, crops of sklearn's china/flower photos,
round red/blue blobs on validation frames, one +-35 degree sector mask, five blank levels, three saturated
frames): those figures are development figures.  This module builds inputs none of which were used then:

- other DICOM modalities from pydicom's test files and matplotlib's sample MR (CT, MR, CR, NM), scaled to 8 bit;
- ultrasound not used before: pydicom's ExplVR_BigEnd.dcm and unseen frames of the two multi-frame clips
  whose frame 0 only was used (stated apart: same clips, other frames);
- natural images from scikit-image's and matplotlib's bundled samples (shipped in the wheels, no download),
  whole and cropped, colour and gray;
- generated images (PIL gradients / Mandelbrot, gratings, uniform and salt-and-pepper noise, rendered text);
- colour / power Doppler synthesised with other parameters (velocity colour maps, single-hue power Doppler,
  rectangular colour boxes with or without an outline, vessel-like shapes, blending) on fresh frames;
- blank and saturated variants (other levels, noise, low-gain frames, partly saturated) ;
- other probe geometries: a scan-converted convex (curvilinear) fan and a trapezoid field;

and a fresh in-distribution cohort (tests/_train_fixture.write_cohort with a seed never used by the fixture)
for the false-refer rate.  Each category is scored three ways: the whole gate, the pre-gate alone, and the
model score alone (every input, the pre-gate bypassed).  Numbers are printed (-s) for the README.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from thyrofast.ood import OODGate, feature_stats, gate_scores, pre_gate

pytestmark = pytest.mark.slow

FRESH_SEED = 2727  # the fixture's cohort is seed 0; no other test writes a phantom cohort with this seed
NON_US_DICOM = (("CT_small.dcm", [0]), ("693_UNCR.dcm", [0]), ("eCT_Supplemental.dcm", [0, 1]),
                ("MR_small.dcm", [0]), ("MR2_UNCR.dcm", [0]), ("MR-SIEMENS-DICOM-WithOverlays.dcm", [0]),
                ("examples_overlay.dcm", [0]), ("emri_small.dcm", [0, 3, 6, 9]), ("RG1_UNCR.dcm", [0]),
                ("RG3_UNCR.dcm", [0]), ("JPEG2000_UNC.dcm", [0]))
NEW_US = (("ExplVR_BigEnd.dcm", [0]),)
UNSEEN_US_FRAMES = (("color3d_jpeg_baseline.dcm", [20, 40, 60, 80, 100, 119]),
                    ("examples_ybr_color.dcm", [10, 20, 29]))
SKIMAGE = ("camera", "astronaut", "coffee", "rocket", "chelsea", "coins", "moon", "page", "text", "brick",
           "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "clock", "cell",
           "colorwheel", "microaneurysms", "logo")
READ_AGAIN = ("generated images (gradients, gratings, noise, text)", "blank variants", "saturated variants",
              "convex probe (scan-converted)", "trapezoid field", "Doppler, new parameters")
MPL = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def _to8(a: np.ndarray, invert: bool = False) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    g = np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.round(255 * (1 - g if invert else g)).astype(np.uint8)


def _non_us_dicom() -> list[np.ndarray]:
    import pydicom
    from pydicom.data import get_testdata_file

    out = []
    for name, frames in NON_US_DICOM:
        ds = pydicom.dcmread(get_testdata_file(name, download=False))
        px = ds.pixel_array
        px = px[None] if px.ndim == 2 else px
        inv = ds.PhotometricInterpretation == "MONOCHROME1"
        out += [_to8(px[k], inv) for k in frames]
    import matplotlib.cbook

    raw = gzip.decompress(Path(matplotlib.cbook.get_sample_data("s1045.ima.gz", asfileobj=False)).read_bytes())
    out.append(_to8(np.frombuffer(raw, np.uint16).reshape(256, 256)))  # matplotlib's sample MR slice
    return out


def _dicom_us(spec, crop) -> list[np.ndarray]:
    from pydicom.data import get_testdata_file

    from thyrofast import read

    out = []
    for name, frames in spec:
        p = get_testdata_file(name, download=False)
        out += [fr.pixels for fr in read(p, crop=crop, frames=frames)]
    return out


def _natural(rng) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(whole images, random crops) from scikit-image's and matplotlib's bundled samples."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    ims = [np.asarray(getattr(skimage.data, n)()) for n in SKIMAGE]
    ims += [np.asarray(Image.open(matplotlib.cbook.get_sample_data(n, asfileobj=False)).convert("RGB")) for n in MPL]
    ims = [np.ascontiguousarray(i) for i in ims]
    crops = []
    for im in ims:
        h, w = im.shape[:2]
        for _ in range(2):
            hh, ww = rng.integers(min(60, h), h + 1), rng.integers(min(80, w), w + 1)
            y0, x0 = rng.integers(0, h - hh + 1), rng.integers(0, w - ww + 1)
            crops.append(np.ascontiguousarray(im[y0:y0 + hh, x0:x0 + ww]))
    return ims, crops


def _generated(rng) -> list[np.ndarray]:
    from PIL import Image, ImageDraw

    out = [np.asarray(Image.linear_gradient("L").resize((96, 72))), np.asarray(Image.radial_gradient("L")),
           np.asarray(Image.effect_mandelbrot((160, 120), (-2.0, -1.2, 1.0, 1.2), 100)),
           np.asarray(Image.effect_mandelbrot((96, 72), (-0.8, 0.0, -0.6, 0.2), 60))]
    yy, xx = np.mgrid[:120, :160]
    for period, angle in ((6, 0.3), (17, 1.2), (40, 2.0)):
        u = xx * np.cos(angle) + yy * np.sin(angle)
        out.append(np.round(127.5 + 127.5 * np.sin(2 * np.pi * u / period)).astype(np.uint8))
    out.append(rng.integers(0, 256, (120, 160)).astype(np.uint8))  # uniform white noise
    sp = np.full((120, 160), 128, np.uint8)
    sp[rng.random((120, 160)) < 0.1] = 0
    sp[rng.random((120, 160)) < 0.1] = 255
    out.append(sp)
    out.append(np.kron(rng.integers(0, 2, (12, 16)) * 255, np.ones((10, 10))).astype(np.uint8))  # blocks
    for bg, fg in ((255, 0), (0, 230)):
        im = Image.new("L", (200, 120), bg)
        d = ImageDraw.Draw(im)
        for k in range(8):
            d.text((4, 4 + 14 * k), "THYROID US  L12-5  38Hz  DR 60  G 52%"[k:], fill=fg)
        out.append(np.asarray(im))
    im = Image.new("RGB", (160, 120), (30, 60, 200))  # a colour UI screen: bars and boxes
    d = ImageDraw.Draw(im)
    for k in range(6):
        d.rectangle((10 + 24 * k, 20, 28 + 24 * k, 100), fill=(40 * k, 255 - 40 * k, 90))
    out.append(np.asarray(im))
    return [np.ascontiguousarray(o) for o in out]


def _velocity_map(v: np.ndarray) -> np.ndarray:
    """Colour-flow map: v in [-1, 1] -> towards red..yellow, away blue..cyan (RGB uint8)."""
    a = np.abs(v)[..., None]
    towards = np.stack([120 + 135 * a[..., 0], 200 * np.clip(a[..., 0] - 0.5, 0, 1) * 2, 0 * a[..., 0]], -1)
    away = np.stack([0 * a[..., 0], 200 * np.clip(a[..., 0] - 0.5, 0, 1) * 2, 120 + 135 * a[..., 0]], -1)
    return np.clip(np.where((v >= 0)[..., None], towards, away), 0, 255)


def _doppler(base: list[np.ndarray], rng) -> list[np.ndarray]:
    """Colour / power Doppler unlike the development blobs: a rectangular colour box (random place and size)
    holding vessel-like flow (tilted bands / ellipses), coloured by a velocity map or one hue (power
    Doppler), opaque or blended, with the box outline drawn on half the frames."""
    out = []
    for i, f in enumerate(base):
        h, w = f.shape
        rgb = np.repeat(f[..., None], 3, -1).astype(np.float64)
        bh, bw = rng.integers(14, h // 2 + 1), rng.integers(18, w // 2 + 1)
        y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
        yy, xx = np.mgrid[:h, :w]
        inbox = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
        cy, cx = y0 + bh / 2, x0 + bw / 2
        if i % 2:  # a vessel: a tilted band
            t = rng.uniform(0, np.pi)
            d = (xx - cx) * np.sin(t) - (yy - cy) * np.cos(t)
            flow = inbox & (np.abs(d) < rng.uniform(1.5, 5))
            v = np.clip(1 - np.abs(d) / 5, 0.2, 1) * (1 if rng.random() < 0.5 else -1)
        else:  # a nodule's peripheral flow: an elliptical ring
            ry, rx = rng.uniform(3, bh / 2), rng.uniform(3, bw / 2)
            e = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            flow = inbox & (np.abs(e - 1) < rng.uniform(0.2, 0.6))
            v = np.where(xx > cx, 1.0, -1.0) * rng.uniform(0.3, 1.0, (h, w))
        kind = i % 3
        if kind == 0:
            col = _velocity_map(v)
        elif kind == 1:  # power Doppler: one hue (orange) whose brightness follows the power
            p = np.abs(v)[..., None]
            col = np.concatenate([180 + 75 * p, 60 + 120 * p, 20 * p], -1)
        else:
            col = _velocity_map(-v)
        alpha = 1.0 if i % 4 < 2 else 0.6
        rgb[flow] = (1 - alpha) * rgb[flow] + alpha * col[flow]
        if i % 2 == 0:  # the colour box outline (a thin green or yellow rectangle)
            edge = inbox & ~((yy > y0) & (yy < y0 + bh - 1) & (xx > x0) & (xx < x0 + bw - 1))
            rgb[edge] = (0, 200, 0) if i % 4 == 0 else (220, 220, 0)
        out.append(np.round(rgb).astype(np.uint8))
    return out


def _blank_saturated(base: list[np.ndarray], rng) -> tuple[list[np.ndarray], list[np.ndarray]]:
    blank = []
    for level in (2, 25, 60, 90, 160, 200, 235):
        blank.append(np.clip(level + rng.normal(0, 1.0, (72, 96)), 0, 255).astype(np.uint8))  # flat + noise
    blank.append(np.full((480, 640, 3), 12, np.uint8))  # a dark RGB screen
    blank.append(np.full((300, 400), 900, np.uint16))  # a flat 16-bit frame
    for f in base[:8]:  # gain turned almost to zero: a faint trace of the scan
        blank.append(np.round(f * rng.uniform(0.02, 0.06)).astype(np.uint8))
    sat = []
    for f in base[:6]:  # gain at maximum: the frame clipped at full scale
        sat.append(np.clip(f.astype(np.float64) * rng.uniform(3, 6), 0, 255).astype(np.uint8))
    sat.append(np.clip(250 + rng.normal(0, 2, (72, 96)), 0, 255).astype(np.uint8))
    sat.append(np.clip(65000 + rng.normal(0, 400, (200, 260)), 0, 65535).astype(np.uint16))
    top = np.full((72, 96), 255, np.uint8)
    top[50:] = base[0][50:]  # saturated except the deepest rows
    sat.append(top)
    sat.append(np.full((90, 120, 3), 254, np.uint8))  # a white RGB screen
    return blank, sat


def _geometry(base: list[np.ndarray], rng) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(convex fans scan-converted from the frames, trapezoid fields)."""
    convex, trap = [], []
    for f in base:
        h, w = f.shape
        yy, xx = np.mgrid[:h, :w].astype(np.float64)
        apex = rng.uniform(0.6, 1.4) * h  # virtual apex above the top edge: a convex array's curvature
        half = np.radians(rng.uniform(25, 40))
        r = np.hypot(xx - w / 2, yy + apex)
        th = np.arctan2(xx - w / 2, yy + apex)
        r0, r1 = apex + rng.uniform(1, 6), apex + h * rng.uniform(0.9, 1.2)
        inside = (np.abs(th) < half) & (r >= r0) & (r < r1)
        sr = np.clip(((r - r0) / (r1 - r0) * h).astype(int), 0, h - 1)  # depth -> source row
        sc = np.clip(((th + half) / (2 * half) * w).astype(int), 0, w - 1)  # angle -> source column
        g = np.zeros_like(f)
        g[inside] = f[sr[inside], sc[inside]]
        convex.append(g)
        top = rng.uniform(0.35, 0.7) * w  # trapezoid: narrow at the skin line, full width at depth
        half_w = top / 2 + (w - top) / 2 * yy / (h - 1)
        t = f.copy()
        t[np.abs(xx - w / 2) > half_w] = 0
        trap.append(t)
    return convex, trap


def _fresh_cohort(tmp_path_factory, crop) -> list[np.ndarray]:
    import csv

    from thyrofast import read

    import _train_fixture as TF

    manifest = TF.write_cohort(tmp_path_factory.mktemp("fresh") / "phantom", seed=FRESH_SEED)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [read(manifest.parent / r["path"], crop=crop)[0].pixels for r in rows]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    from thyrofast.bundle import Bundle

    import _train_fixture as TF

    path, _ = TF.load().trained_bundle(tmp_path_factory)
    bundle = Bundle.load(path)
    crop = bundle.read_options["crop"]
    fresh = _fresh_cohort(tmp_path_factory, crop)
    rng = np.random.default_rng(FRESH_SEED)
    base = fresh[::3]  # 60 fresh frames to perturb (the false-refer rate uses all 180 unperturbed)
    natural, crops = _natural(rng)
    blank, sat = _blank_saturated(base, rng)
    convex, trap = _geometry(base, rng)
    sets = {
        "non-US DICOM (CT/MR/CR/NM, 8 bit)": _non_us_dicom(),
        "ultrasound not used before (ExplVR_BigEnd)": _dicom_us(NEW_US, crop),
        "unseen frames of development US clips": _dicom_us(UNSEEN_US_FRAMES, crop),
        "natural images, whole (skimage/matplotlib)": natural,
        "natural images, crops": crops,
        "generated images (gradients, gratings, noise, text)": _generated(rng),
        "Doppler, new parameters": _doppler(base, rng),
        "blank variants": blank,
        "saturated variants": sat,
        "convex probe (scan-converted)": convex,
        "trapezoid field": trap,
    }
    return bundle, fresh, sets, crop, tmp_path_factory.mktemp("as_read")


def _through_reader(frames, crop, folder: Path) -> tuple[list[np.ndarray], int]:
    """What ``predict`` would hand the gate: each array saved as PNG and read back with the bundle's crop
    (``detect`` crops to the ultrasound field).  Returns (frames read, number the reader refused)."""
    from PIL import Image

    from thyrofast import read

    folder.mkdir(parents=True, exist_ok=True)
    out, refused = [], 0
    for i, f in enumerate(frames):
        p = folder / f"{i}.png"
        Image.fromarray(f).save(p)
        try:
            out.append(read(p, crop=crop)[0].pixels)
        except Exception:  # noqa: BLE001 - any refusal by the reader (e.g. no ultrasound field found)
            refused += 1
    return out, refused


def _model_scores(gate: OODGate, frames) -> np.ndarray:
    """The model score of every frame, the pre-gate bypassed (what the score alone would do)."""
    x = np.zeros((len(frames), *gate._shape), np.float32)
    for j, f in enumerate(frames):
        f = np.asarray(f)
        f = f[..., :3] if f.ndim == 3 and f.shape[-1] == 4 else f
        gate._pre(np.ascontiguousarray(f), out=x[j:j + 1])
    return gate_scores(feature_stats(gate._model, x, layer=gate.entry.get("layer")), gate.entry)


@pytest.fixture(scope="module")
def scored(heldout):
    """Scores every held-out input once: {category: (gate rate, model-alone rate, pre-gate rate)}."""
    bundle, fresh, sets, crop, tmp = heldout
    gate = OODGate(bundle, bundle.ood)
    assert gate.model_unavailable is None
    thr = gate.entry["threshold"]
    in_res = gate.check(fresh)
    false_refer = float(np.mean([r["refer"] for r in in_res]))
    lines = [f"fresh in-distribution frames (seed {FRESH_SEED}): {len(fresh)}, false refer "
             f"{sum(r['refer'] for r in in_res)}/{len(fresh)} = {100 * false_refer:.1f}%"]
    total, caught, caught_model = 0, 0, 0
    rates = {}
    for name, frames in sets.items():
        res = gate.check(frames)
        pre = [pre_gate(f) is not None for f in frames]
        model = _model_scores(gate, frames) > thr
        n, k = len(frames), sum(r["refer"] for r in res)
        assert all(r["reason"] for r in res if r["refer"])
        rates[name] = (k / n, float(np.mean(model)), float(np.mean(pre)))
        total, caught, caught_model = total + n, caught + k, caught_model + int(model.sum())
        line = (f"{name}: {n} inputs, gate refers {k}/{n} = {100 * k / n:.1f}% "
                f"(pre-gate alone {sum(pre)}/{n}; model score alone {int(model.sum())}/{n} "
                f"= {100 * model.mean():.1f}%)")
        if name in READ_AGAIN:  # arrays built here: also as predict would see them after the reader
            got, refused = _through_reader(frames, crop, tmp / str(len(lines)))
            kr = sum(r["refer"] for r in gate.check(got)) if got else 0
            line += f"; via PNG + read(crop={crop!r}): reader refuses {refused}, gate refers {kr}/{len(got)}"
        lines.append(line)
    lines.append(f"all held-out OOD inputs: {total}, gate refers {caught}/{total} = {100 * caught / total:.1f}%; "
                 f"model score alone {caught_model}/{total} = {100 * caught_model / total:.1f}%")
    print("\n" + "\n".join(lines))
    return {"false_refer": false_refer, "total": caught / total, "model_total": caught_model / total,
            "rates": rates}


# Scored once (commit 3811d17 holds these inputs as built before any score was seen), fixture model, CPU:
# fresh in-distribution 1/180 referred (0.6%); all 315 held-out OOD inputs: gate 307 (97.5%), model score
# alone 261 (82.9%).  Below 95%: whole natural images 21/23 (grass, gravel: texture close to speckle),
# generated images 11/13 (uniform and salt-and-pepper noise), blank variants 14/17 (three low-gain frames:
# the percentile normalisation undoes the gain, so the model sees a normal frame, and their faint trace
# has more than the pre-gate's blank contrast).  Convex 59/60; the model alone refers 21/60 Doppler
# frames (the pre-gate's colour rule refers all 60).


def test_heldout_meets_the_issue_targets_in_total(scored):
    """Issue 27's targets, on inputs not used to choose the gate: >= 95% of OOD inputs referred, <= 5% of
    in-distribution frames."""
    assert scored["false_refer"] <= 0.05
    assert scored["total"] >= 0.95


def test_heldout_categories_that_reach_95_percent(scored):
    """What holds per category (measured once): every category but the three named below is >= 95%, and
    the three are still referred mostly (>= 80%)."""
    weak = {"natural images, whole (skimage/matplotlib)", "generated images (gradients, gratings, noise, text)",
            "blank variants"}
    for name, (gate_rate, _, _) in scored["rates"].items():
        assert gate_rate >= (0.80 if name in weak else 0.95), name


@pytest.mark.xfail(strict=True, reason="held-out, scored once: whole natural images 21/23 (91.3%), generated "
                   "images 11/13 (84.6%), blank variants 14/17 (82.4%) are referred less than 95%; "
                   "the development test asks for >= 95% in every listed kind")
def test_heldout_every_category_at_least_95_percent(scored):
    low = [name for name, (gate_rate, _, _) in scored["rates"].items() if gate_rate < 0.95]
    assert low == []
