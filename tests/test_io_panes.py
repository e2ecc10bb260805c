"""Split-screen screenshots: every B-mode pane is found, and read() never drops one.

The panes are synthetic B-mode fields (thyrofast.synth) placed side by side on
a dark screen with burned-in text, as dual-mode device exports show them.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from thyrofast.io import detect_field, detect_panes, read

synth = pytest.importorskip("thyrofast.synth", reason="thyrofast.synth (the B-mode generator) is not available")


def _pane(seed: int, scale: float = 1.0, max_w: int = 460) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = synth.render(synth.sample_patient(rng, ("BTN", "NMTN", "MMTN")[seed % 3]), seed=seed,
                     view=("transverse", "longitudinal")[seed % 2])
    g = r.region
    p = r.image[g.y0:g.y1, g.x0:g.x1][:, :max_w]
    if scale != 1.0:
        p = np.asarray(Image.fromarray(p).resize((int(p.shape[1] * scale), int(p.shape[0] * scale)),
                                                 Image.BILINEAR))
    return p


def _screen(panes, gap: int, *, h: int = 620, tops=None):
    """Panes left to right, ``gap`` black px apart, on a dark screen with text; returns (img, true boxes)."""
    w = 60 + sum(p.shape[1] for p in panes) + gap * (len(panes) - 1) + 60
    img = np.zeros((h, w), np.uint8)
    boxes, x = [], 40
    for i, p in enumerate(panes):
        top = 60 if tops is None else tops[i]
        ph, pw = p.shape
        img[top:top + ph, x:x + pw] = p
        boxes.append((x, top, x + pw, top + ph))
        x += pw + gap
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.text((10, 10), "THYROID DUAL  L12-5  G 55", fill=230)
    d.text((10, h - 20), "PATIENT 0042", fill=210)
    d.rectangle([w - 30, 120, w - 22, 280], fill=180)  # grey bar
    return np.asarray(im), boxes


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


CASES = {  # name -> (pane seeds and scales, gap px, pane tops)
    "equal, gap 12": ([(1, 1.0), (2, 1.0)], 12, None),
    "equal, gap 40": ([(3, 1.0), (4, 1.0)], 40, None),
    "unequal sizes, gap 16": ([(5, 1.0), (6, 0.6)], 16, [60, 120]),
    "unequal sizes, gap 8": ([(7, 0.7), (8, 1.0)], 8, [80, 60]),
    "three panes, gap 20": ([(9, 0.55), (10, 0.55), (11, 0.55)], 20, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_pane_of_a_split_screen_is_found(tmp_path, name):
    spec, gap, tops = CASES[name]
    img, true = _screen([_pane(s, f) for s, f in spec], gap, tops=tops)
    got = detect_panes(img)
    assert len(got) == len(true), (got, true)
    for g, t in zip(got, true):
        assert _iou(g, t) > 0.97, (g, t)
    # read(): no pane is dropped -- the crop holds every pane, and a note names them
    Image.fromarray(img).save(tmp_path / "dual.png")
    f, = read(tmp_path / "dual.png", crop="detect")
    assert f.region_source == "detected"
    x0, y0, x1, y1 = f.region
    for t in true:
        assert x0 <= t[0] + 2 and y0 <= t[1] + 2 and x1 >= t[2] - 2 and y1 >= t[3] - 2, (f.region, t)
    note = [n for n in f.notes if n.startswith("split screen")]
    assert note and f"{len(true)} panes" in note[0]
    np.testing.assert_array_equal(f.pixels, img[y0:y1, x0:x1])


@pytest.mark.parametrize("tops", [None, [60, 140]])
def test_touching_panes_stay_one_crop(tmp_path, tops):
    a, b = _pane(12), _pane(13, 0.7 if tops else 1.0)
    img, true = _screen([a, b], 0, tops=tops)
    got = detect_panes(img)
    assert len(got) == 1  # one component: kept whole, never cut in the middle of a pane
    union = (true[0][0], min(t[1] for t in true), true[1][2], max(t[3] for t in true))
    assert _iou(got[0], union) > 0.97
    Image.fromarray(img).save(tmp_path / "touch.png")
    f, = read(tmp_path / "touch.png", crop="detect")
    assert _iou(f.region, union) > 0.97


def test_single_pane_screenshots_are_not_split():
    """Controls: 30 rendered device frames (one field, text, depth scale, grey bar, calipers
    in ~1/3) each stay one pane, exactly detect_field's box."""
    for seed in range(100, 130):
        rng = np.random.default_rng(seed)
        r = synth.render(synth.sample_patient(rng, ("BTN", "NMTN", "MMTN")[seed % 3]), seed=seed,
                         view=("transverse", "longitudinal")[seed % 2])
        panes = detect_panes(r.image)
        assert panes == [detect_field(r.image)], seed
        g = r.region
        assert _iou(panes[0], (g.x0, g.y0, g.x1, g.y1)) > 0.95, seed


def test_single_pane_read_is_unchanged(tmp_path):
    rng = np.random.default_rng(7)
    r = synth.render(synth.sample_patient(rng, "MMTN"), seed=7)
    Image.fromarray(r.image).save(tmp_path / "one.png")
    f, = read(tmp_path / "one.png", crop="detect")
    assert f.region == detect_field(r.image)
    assert not any(n.startswith("split screen") for n in f.notes)


def test_predict_records_the_split_screen(tmp_path):
    """predict reads files as training did (crop=detect): the one frame holds both panes, and
    its record's notes say it is a split screen."""
    from thyrofast.predict import read_frames

    img, true = _screen([_pane(21), _pane(22, 0.8)], 24, tops=[60, 90])
    Image.fromarray(img).save(tmp_path / "dual.png")
    pairs, _, regions = read_frames(str(tmp_path / "dual.png"), None, "detect")
    assert len(pairs) == 1 and pairs[0][1].shape[1] >= true[1][2] - true[0][0] - 4
    assert any(n.startswith("split screen: 2 panes") for n in regions[0]["notes"])


def test_a_strip_below_the_field_is_not_a_pane():
    """A spectral-Doppler-like strip under the B-mode field (stacked, not side by side) stays out."""
    p = _pane(31, 0.7)
    img = np.zeros((640, 700), np.uint8)
    ph, pw = p.shape
    img[30:30 + ph, 100:100 + pw] = p
    rng = np.random.default_rng(0)
    img[ph + 60:ph + 60 + 150, 60:640] = rng.integers(40, 160, (150, 580), dtype=np.uint8)  # the strip
    assert detect_panes(img) == [detect_field(img)]
