"""Split-screen screenshots: every B-mode pane is found, and read() never drops one.

The panes are synthetic B-mode fields (thyrofast.synth) placed side by side on
a dark screen with burned-in text, as dual-mode device exports show them.
"""
from __future__ import annotations

import os

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


# -- crop="panes": one frame per pane ----------------------------------------------------------

TOUCHING = {  # panes that touch (no black gap): one bright component, cut at the seams in panes mode
    "two touching, equal": ([(1, 1.0), (2, 1.0)], 0, None),
    "two touching, unequal tops": ([(12, 1.0), (13, 0.7)], 0, [60, 140]),
    "two touching, unequal sizes": ([(5, 1.0), (6, 0.6)], 0, [60, 120]),
    "three touching": ([(9, 0.55), (10, 0.55), (11, 0.55)], 0, None),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(TOUCHING))
def test_panes_mode_gives_one_frame_per_pane(tmp_path, name):
    spec, gap, tops = {**CASES, **TOUCHING}[name]
    img, true = _screen([_pane(s, f) for s, f in spec], gap, tops=tops)
    Image.fromarray(img).save(tmp_path / "dual.png")
    frames = read(tmp_path / "dual.png", crop="panes")
    assert len(frames) == len(true), [f.region for f in frames]  # none dropped, none merged
    for k, (f, t) in enumerate(zip(frames, true)):
        assert f.pane == k and f.frame_index == 0 and f.region_source == "detected"
        assert _iou(f.region, t) > 0.97, (f.region, t)
        x0, y0, x1, y1 = f.region
        np.testing.assert_array_equal(f.pixels, img[y0:y1, x0:x1])
        assert any(n.startswith(f"split screen: {len(true)} panes") and "one frame per pane" in n for n in f.notes)
    # the detect crop of the same file is unchanged: touching panes stay one crop there
    if gap == 0:
        assert len(detect_panes(img)) == 1 and len(read(tmp_path / "dual.png", crop="detect")) == 1


def test_a_single_pane_reads_in_panes_mode_exactly_as_detect(tmp_path):
    """A one-pane screenshot: the one frame detect gives, bit for bit, marked pane 0."""
    for seed in (7, 101, 104, 109, 110, 118):  # 110 has a vertical dotted caliper across the field
        rng = np.random.default_rng(seed)
        r = synth.render(synth.sample_patient(rng, ("BTN", "NMTN", "MMTN")[seed % 3]), seed=seed,
                         view=("transverse", "longitudinal")[seed % 2])
        for name, arr in (("gray.png", r.image), ("rgb.png", np.repeat(r.image[:, :, None], 3, axis=2))):
            Image.fromarray(arr).save(tmp_path / name)
            d, = read(tmp_path / name, crop="detect")
            p, = read(tmp_path / name, crop="panes")
            assert p.pane == 0 and d.pane is None
            assert p.region == d.region and p.notes == d.notes and p.region_source == d.region_source
            assert p.pixels.dtype == d.pixels.dtype and p.pixels.shape == d.pixels.shape
            np.testing.assert_array_equal(p.pixels, d.pixels)


def test_a_wide_single_field_is_flagged_not_split(tmp_path):
    """A single field twice as wide as high (shallow depth) stays one frame; the note flags it."""
    p = _pane(4)[:230]  # 460 x 230: one image, no seam in it
    img = np.zeros((400, 620), np.uint8)
    img[60:60 + p.shape[0], 60:60 + p.shape[1]] = p
    Image.fromarray(img).save(tmp_path / "wide.png")
    f, = read(tmp_path / "wide.png", crop="panes")
    assert f.pane == 0 and _iou(f.region, (60, 60, 60 + p.shape[1], 60 + p.shape[0])) > 0.97
    assert any(n.startswith("wide field:") for n in f.notes)


def test_panes_of_every_frame_of_a_cine(tmp_path):
    """A multi-frame split screen: frame-major, every pane of every frame."""
    img, true = _screen([_pane(3), _pane(4)], 30)
    Image.fromarray(img).save(tmp_path / "cine.tif", save_all=True,
                              append_images=[Image.fromarray(img[:, ::-1].copy()), Image.fromarray(img)])
    frames = read(tmp_path / "cine.tif", crop="panes")
    assert [(f.frame_index, f.pane) for f in frames] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def _pane_files(root):
    """dual.png (2 panes, gap), three.png (3 touching panes), one.png (a single pane); their true boxes."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (spec, gap, tops) in (("dual.png", ([(21, 1.0), (22, 0.8)], 24, [60, 90])),
                                    ("three.png", TOUCHING["three touching"]),
                                    ("one.png", ([(23, 1.0)], 0, None))):
        img, true = _screen([_pane(s, f) for s, f in spec], gap, tops=tops)
        Image.fromarray(img).save(root / name)
        out[name] = true
    return out


class _PanesBundle:
    read_options = {"crop": "panes"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_predict_gives_one_record_per_pane(tmp_path, fmt):
    import csv
    import json

    from thyrofast.predict import predict_files

    from test_predict_records import FakeClassifier

    true = _pane_files(tmp_path / "in")
    clf = FakeClassifier()
    clf.bundle = _PanesBundle()
    out = tmp_path / f"res.{fmt}"
    s = predict_files(clf, [tmp_path / "in"], out, progress=False)
    assert (s.n_ok, s.n_error, s.n_frames) == (3, 0, 6)
    if fmt == "csv":
        with open(out, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["kind"] == "image"]
        got = sorted((os.path.basename(r["input"]), r["frame_index"], r["pane"]) for r in rows)
        assert got == [("dual.png", "0", "0"), ("dual.png", "0", "1"), ("one.png", "0", "0"),
                       ("three.png", "0", "0"), ("three.png", "0", "1"), ("three.png", "0", "2")]
    else:
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        recs = [r for r in recs if r["kind"] == "image"]
        assert sorted((os.path.basename(r["input"]), r["frame_index"], r["pane"]) for r in recs) == [
            ("dual.png", 0, 0), ("dual.png", 0, 1), ("one.png", 0, 0),
            ("three.png", 0, 0), ("three.png", 0, 1), ("three.png", 0, 2)]
        for r in recs:
            assert _iou(r["region"], true[os.path.basename(r["input"])][r["pane"]]) > 0.97
    # resuming records nothing new
    s2 = predict_files(clf, [tmp_path / "in"], out, progress=False)
    assert s2.n_skipped == 3 and s2.n_ok == 0


def test_predict_without_panes_leaves_the_pane_empty_and_a_manifest_may_name_one(tmp_path):
    import csv

    from thyrofast.predict import predict_files

    from test_predict_records import FakeClassifier

    _pane_files(tmp_path / "in")
    out = tmp_path / "res.csv"
    predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)  # no bundle: crop auto
    with open(out, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "image"]
    assert len(rows) == 3 and all(r["pane"] == "" for r in rows)
    # a manifest row naming a pane: that pane only
    (tmp_path / "m.csv").write_text("path,patient_id,pane\nin/three.png,p1,2\nin/dual.png,p2,\n")
    clf = FakeClassifier()
    clf.bundle = _PanesBundle()
    out2 = tmp_path / "res2.csv"
    s = predict_files(clf, [tmp_path / "m.csv"], out2, progress=False)
    with open(out2, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "image"]
    assert s.n_frames == 3
    assert sorted((os.path.basename(r["input"]), r["pane"]) for r in rows) == [
        ("dual.png", "0"), ("dual.png", "1"), ("three.png", "2")]


def test_evaluate_joins_each_pane_as_its_own_image(tmp_path):
    from thyrofast.evaluate.inputs import image_table, load_labels

    _pane_files(tmp_path)
    (tmp_path / "m.csv").write_text("path,patient_id,label\ndual.png,p1,BTN\none.png,p2,MMTN\n")
    labels = load_labels(tmp_path / "m.csv")
    probs = {"BTN": 0.5, "NMTN": 0.3, "MMTN": 0.2}
    recs = [{"kind": "image", "input": str(tmp_path / "dual.png"), "frame_index": 0, "pane": k, "status": "ok",
             "probs": probs} for k in (0, 1)]
    recs.append({"kind": "image", "input": str(tmp_path / "one.png"), "frame_index": 0, "pane": 0,
                 "status": "ok", "probs": probs})
    table, stats = image_table(recs, labels)
    assert len(table.ids) == 3 and stats["duplicates"] == 0
    assert sorted(table.keys) == sorted([f"{tmp_path / 'dual.png'}#0/0", f"{tmp_path / 'dual.png'}#0/1",
                                         f"{tmp_path / 'one.png'}#0/0"])


def test_training_data_reads_every_pane(tmp_path):
    """io.FrameDataset and train.data with crop="panes": one item / record per pane, none dropped."""
    from thyrofast import PreprocessParams
    from thyrofast.errors import InputError
    from thyrofast.io import FrameDataset, Record, expand_frames, read_manifest, write_manifest
    from thyrofast.train import data as tdata

    true = _pane_files(tmp_path)
    (tmp_path / "m.csv").write_text("path,patient_id,label\ndual.png,p1,BTN\nthree.png,p2,MMTN\none.png,p3,NMTN\n")
    params = PreprocessParams(size=(16, 16), denoise="none")
    ds = FrameDataset(tmp_path / "m.csv", params, read_options={"crop": "panes"}, threads=1)
    assert len(ds) == 6
    got = [(os.path.basename(r.path), fi, r.pane) for r, fi in (ds.item_record(i) for i in range(len(ds)))]
    assert got == [("dual.png", 0, 0), ("dual.png", 0, 1), ("three.png", 0, 0), ("three.png", 0, 1),
                   ("three.png", 0, 2), ("one.png", 0, 0)]
    assert list(ds.labels) == [0, 0, 2, 2, 2, 1] and ds.patient_ids == ["p1", "p1", "p2", "p2", "p2", "p3"]
    pre = ds._pre
    for i, (name, _, k) in enumerate(got):
        x, _, _ = ds[i]
        x0, y0, x1, y1 = read(tmp_path / name, crop="panes")[k].region
        assert _iou((x0, y0, x1, y1), true[name][k]) > 0.97
        np.testing.assert_array_equal(x, pre(read(tmp_path / name, crop="panes")[k].pixels)[0])
    # without panes: one item per file, as before
    assert len(FrameDataset(tmp_path / "m.csv", params, read_options={"crop": "detect"}, threads=1)) == 3

    # the records: expanded per pane, written and read back with the pane column
    recs = expand_frames(read_manifest(tmp_path / "m.csv"), crop="panes")
    assert [(os.path.basename(r.path), r.frame_index, r.pane) for r in recs] == got
    write_manifest(recs, tmp_path / "panes.csv", hash_ids=False)
    assert "pane" in (tmp_path / "panes.csv").read_text().splitlines()[0].split(",")
    assert [(r.frame_index, r.pane) for r in read_manifest(tmp_path / "panes.csv")] == [(0, k) for *_, k in got]
    write_manifest(read_manifest(tmp_path / "m.csv"), tmp_path / "plain.csv", hash_ids=False)
    assert "pane" not in (tmp_path / "plain.csv").read_text().splitlines()[0].split(",")
    # a manifest naming panes: those items only
    ds2 = FrameDataset(tmp_path / "panes.csv", params, read_options={"crop": "panes"}, threads=1)
    assert len(ds2) == 6 and [ds2.item_record(i)[0].pane for i in range(6)] == [0, 1, 0, 1, 2, 0]

    # train.data: read_manifest(crop="panes") expands per pane; decode_image reads the record's pane
    trecs = tdata.read_manifest(tmp_path / "m.csv", crop="panes")
    assert [(os.path.basename(r.path), r.pane) for r in trecs] == [(n, k) for n, _, k in got]
    for r in trecs:
        np.testing.assert_array_equal(tdata.decode_image(r, "panes"),
                                      read(r.path, crop="panes")[r.pane].pixels)
    # a split-screen record without a pane is an error in panes mode, never its first pane
    whole = Record(str(tmp_path / "dual.png"), "p1", 0, frame_index=0)
    with pytest.raises(InputError, match="2 panes"):
        tdata.decode_image(whole, "panes")
    one = Record(str(tmp_path / "one.png"), "p3", 1, frame_index=0)
    np.testing.assert_array_equal(tdata.decode_image(one, "panes"), tdata.decode_image(one, "detect"))


# -- mask_annotations=True: burned-in calipers and text inside the field ------------------------------

def _marked(seed: int, rgb: bool):
    """A caliper-free synthetic pane on a black screen, and the same with white calipers, a dotted
    measuring line and text drawn into the field (and, in RGB, two yellow calipers)."""
    p = _pane(seed)
    img = np.zeros((p.shape[0] + 120, p.shape[1] + 120), np.uint8)
    img[60:60 + p.shape[0], 60:60 + p.shape[1]] = p
    clean = np.repeat(img[:, :, None], 3, axis=2) if rgb else img
    im = Image.fromarray(clean.copy())
    d = ImageDraw.Draw(im)
    white = (255, 255, 255) if rgb else 255
    for cx, cy in [(160, 210), (360, 210), (260, 140), (260, 360)]:
        d.line([cx - 6, cy, cx + 6, cy], fill=white)
        d.line([cx, cy - 6, cx, cy + 6], fill=white)
    for x in range(166, 356, 4):
        d.point((x, 210), fill=white)
    d.text((90, 90), "L 1.23cm", fill=white)
    d.text((330, 460), "D2 0.81cm", fill=white)
    if rgb:
        for cx, cy in [(150, 300), (380, 300)]:
            d.line([cx - 6, cy, cx + 6, cy], fill=(255, 230, 0), width=2)
            d.line([cx, cy - 6, cx, cy + 6], fill=(255, 230, 0), width=2)
    return clean, np.asarray(im)


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
@pytest.mark.parametrize("seed", [3, 5, 6])
def test_mask_annotations_removes_marks_and_keeps_the_tissue(tmp_path, seed, rgb):
    from scipy import ndimage

    clean, marked = _marked(seed, rgb)
    Image.fromarray(clean).save(tmp_path / "clean.png")
    Image.fromarray(marked).save(tmp_path / "marked.png")
    c, = read(tmp_path / "clean.png", crop="detect")
    m, = read(tmp_path / "marked.png", crop="detect")
    f, = read(tmp_path / "marked.png", crop="detect", mask_annotations=True)
    assert f.region == m.region == c.region
    assert not any(n.startswith("annotations masked") for n in m.notes)  # off by default
    assert any(n.startswith("annotations masked") for n in f.notes)

    def gray(a):
        a = a.astype(np.int32)
        return a.max(axis=2) if a.ndim == 3 else a

    tissue, before, after = gray(c.pixels), gray(m.pixels), gray(f.pixels)
    drawn = before != tissue
    strokes = (before >= 230) & (tissue < 180)  # the saturated strokes of the marks
    visible = np.abs(before - tissue) > 40
    assert strokes.sum() > 200 and (after != before)[strokes].all()  # every stroke pixel is replaced
    # ... by tissue-like values: the error at the visible marks drops from ~150 to ~speckle
    assert np.abs(after - tissue)[visible].mean() < 0.3 * np.abs(before - tissue)[visible].mean()
    # every pixel more than 1 px from a drawn one is untouched, bit for bit
    far = ~ndimage.binary_dilation(drawn, structure=np.ones((3, 3), bool))
    np.testing.assert_array_equal(after[far], before[far])
    if rgb:  # the yellow calipers are gone: no colored pixel left (color="auto" then gives gray)
        px = f.pixels.astype(np.int32)
        assert f.pixels.ndim == 2 or (px.max(axis=2) - px.min(axis=2)).max() <= 40


def test_mask_annotations_leaves_caliper_free_fields_alone(tmp_path):
    """Bright tissue (capsules, clipped reflectors) is not a mark: frames without calipers are unchanged,
    and in those with the generator's calipers only the marks change."""
    n_clean = 0
    for seed in range(100, 130):
        rng = np.random.default_rng(seed)
        r = synth.render(synth.sample_patient(rng, ("BTN", "NMTN", "MMTN")[seed % 3]), seed=seed,
                         view=("transverse", "longitudinal")[seed % 2])
        Image.fromarray(r.image).save(tmp_path / "f.png")
        a, = read(tmp_path / "f.png", crop="detect")
        b, = read(tmp_path / "f.png", crop="detect", mask_annotations=True)
        if not r.params["calipers"]:
            n_clean += 1
            np.testing.assert_array_equal(a.pixels, b.pixels, err_msg=str(seed))
            assert a.notes == b.notes
        else:
            assert 0 < np.count_nonzero(a.pixels != b.pixels) < 0.01 * a.pixels.size, seed
    assert n_clean >= 15


def test_mask_annotations_is_validated_and_reaches_every_pane(tmp_path):
    with pytest.raises(ValueError, match="mask_annotations"):
        read(tmp_path / "x.png", mask_annotations="yes")
    clean, marked = _marked(3, False)
    img, _ = _screen([marked[60:-60, 60:-60], _pane(4)], 20)
    Image.fromarray(img).save(tmp_path / "dual.png")
    plain = read(tmp_path / "dual.png", crop="panes")
    masked = read(tmp_path / "dual.png", crop="panes", mask_annotations=True)
    assert [f.region for f in masked] == [f.region for f in plain]
    assert any(n.startswith("annotations masked") for n in masked[0].notes)
    assert np.count_nonzero(masked[0].pixels != plain[0].pixels) > 200


def test_a_results_csv_from_before_the_pane_column_still_resumes(tmp_path):
    from thyrofast.predict import OutputError, csv_fields, predict_files

    from test_predict_records import FakeClassifier

    _pane_files(tmp_path / "in")
    out = tmp_path / "old.csv"
    old = [c for c in csv_fields() if c != "pane"]
    out.write_text(",".join(old) + "\n")
    s = predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    assert s.n_ok == 3 and out.read_text().splitlines()[0] == ",".join(old)
    clf = FakeClassifier()
    clf.bundle = _PanesBundle()
    (tmp_path / "in" / "more.png").write_bytes((tmp_path / "in" / "dual.png").read_bytes() + b"\0")
    with pytest.raises(OutputError, match="pane column"):
        predict_files(clf, [tmp_path / "in" / "more.png"], out, progress=False)


@pytest.mark.parametrize("name", sorted(TOUCHING))
def test_touching_panes_are_split_in_a_jpeg_screenshot_too(tmp_path, name):
    spec, gap, tops = TOUCHING[name]
    img, true = _screen([_pane(s, f) for s, f in spec], gap, tops=tops)
    Image.fromarray(img).save(tmp_path / "dual.jpg", quality=75)
    frames = read(tmp_path / "dual.jpg", crop="panes")
    assert len(frames) == len(true) and all(_iou(f.region, t) > 0.95 for f, t in zip(frames, true))


def test_a_wide_single_field_is_never_cut():
    """Controls for the seam search: wide crops (2-3x wider than high) of 12 single rendered fields,
    some with a vertical dotted caliper line across them (seed 110), each stay one pane."""
    from thyrofast.io import split_at_seams

    for seed in range(100, 112):
        rng = np.random.default_rng(seed)
        r = synth.render(synth.sample_patient(rng, ("BTN", "NMTN", "MMTN")[seed % 3]), seed=seed,
                         view=("transverse", "longitudinal")[seed % 2])
        g = r.region
        for frac in (0.6, 0.45):
            hh = int((g.y1 - g.y0) * frac)
            img = np.zeros_like(r.image)
            img[g.y0:g.y0 + hh, g.x0:g.x1] = r.image[g.y0:g.y0 + hh, g.x0:g.x1]
            assert len(detect_panes(img, split_touching=True)) == 1, (seed, frac)
            assert split_at_seams(img, (g.x0, g.y0, g.x1, g.y0 + hh)) == [(g.x0, g.y0, g.x1, g.y0 + hh)]


def test_train_with_crop_panes_trains_on_every_pane(tmp_path):
    """train(crop="panes"): each pane of a split-screen screenshot is one training image, recorded in the bundle."""
    pytest.importorskip("torch")
    import csv

    from thyrofast.train import train

    rows = []
    for i in range(12):  # 12 patients, one dual-pane screenshot each (2 panes, a gap between them)
        img, _ = _screen([_pane(40 + 2 * i, 0.6), _pane(41 + 2 * i, 0.6)], 24)
        Image.fromarray(img).save(tmp_path / f"s{i}.png")
        rows.append({"path": f"s{i}.png", "patient_id": f"p{i}", "label": ("benign", "malignant")[i % 2],
                     "split": ("train", "train", "val", "val", "train", "train")[i % 6]})
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    b = train(tmp_path / "manifest.csv", tmp_path / "bundle", crop="panes", arch="resnet18", width=0.25, epochs=1,
              image_size=48, batch_size=8, progress=False, threads=1, log=lambda m: None)
    assert b.manifest["read"] == {"crop": "panes"}
    data = b.manifest["training"]["data"]
    assert data["n_images"] == {"train": 16, "val": 8}  # 8 + 4 patients, 2 panes each
    assert data["n_patients"] == {"train": 8, "val": 4}


def test_evaluate_reads_files_with_the_bundles_mask_annotations(tmp_path):
    """Issue 24: evaluate reads each file with the bundle's read options, mask_annotations included."""
    from thyrofast.evaluate.core import predict_manifest
    from thyrofast.evaluate.inputs import load_labels

    _, marked = _marked(3, False)
    Image.fromarray(marked).save(tmp_path / "m.png")
    (tmp_path / "labels.csv").write_text("path,patient_id,label\nm.png,p1,BTN\n")
    labels = load_labels(tmp_path / "labels.csv")

    class Card:
        def __init__(self, read_options):
            self.read_options = read_options

    class Recording:
        def __init__(self, read_options):
            self.bundle, self.seen = Card(read_options), []

        def predict(self, batch):
            self.seen.extend(list(batch))
            return np.full((len(batch), 3), 1 / 3)

    got = {}
    for masked in (True, False):
        clf = Recording({"crop": "detect", **({"mask_annotations": True} if masked else {})})
        predict_manifest(clf, labels, progress=False)
        want, = read(tmp_path / "m.png", crop="detect", mask_annotations=masked)
        assert len(clf.seen) == 1 and np.array_equal(np.asarray(clf.seen[0]), want.pixels)
        got[masked] = np.asarray(clf.seen[0])
    assert not np.array_equal(got[True], got[False])
