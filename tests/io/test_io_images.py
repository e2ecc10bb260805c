"""Image files (PNG/JPEG/BMP/TIFF), field detection, and the synthetic cohort round trip."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from thyrofast import InputError
from thyrofast.io import detect_field, read


def _speckle(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.rayleigh(60, size=(h, w)) + 10, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")])
def test_lossless_gray_and_rgb_round_trip(tmp_path, fmt, ext):
    g = _speckle(40, 50)
    rgb = np.stack([g, 255 - g, g // 2], axis=2)
    Image.fromarray(g).save(tmp_path / f"g.{ext}", format=fmt)
    Image.fromarray(rgb).save(tmp_path / f"c.{ext}", format=fmt)
    fg, fc = read(tmp_path / f"g.{ext}")[0], read(tmp_path / f"c.{ext}")[0]
    np.testing.assert_array_equal(fg.pixels, g)
    np.testing.assert_array_equal(fc.pixels, rgb)
    assert fg.format == fmt.lower() and fg.region == (0, 0, 50, 40) and fg.spacing_cm is None
    assert fg.patient_hash is None


def test_16bit_png_and_tiff(tmp_path):
    a = (np.arange(30 * 40, dtype=np.uint32).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(a).save(tmp_path / "a.tif")
    for name in ("a.png", "a.tif"):
        f = read(tmp_path / name)[0]
        assert f.pixels.dtype == np.uint16
        np.testing.assert_array_equal(f.pixels, a)


def test_palette_rgba_1bit_and_gray_rgb(tmp_path):
    g = _speckle(20, 30)
    Image.fromarray(g).convert("P").save(tmp_path / "p.png")
    f = read(tmp_path / "p.png", color="rgb")[0]
    assert f.pixels.shape == (20, 30, 3) and f.photometric == "P"
    Image.fromarray(np.dstack([g, g, g, np.full_like(g, 128)])).save(tmp_path / "rgba.png")
    f = read(tmp_path / "rgba.png")[0]
    np.testing.assert_array_equal(f.pixels, g)  # equal channels: gray (auto), alpha dropped
    Image.fromarray(g > 100).save(tmp_path / "b.png")
    assert set(np.unique(read(tmp_path / "b.png")[0].pixels)) <= {0, 255}


def test_jpeg_reads_close_to_source(tmp_path):
    g = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    Image.fromarray(g).save(tmp_path / "a.jpg", quality=95)
    f = read(tmp_path / "a.jpg")[0]
    assert f.pixels.shape == (48, 64) and np.abs(f.pixels.astype(int) - g).max() <= 8


def test_multipage_tiff_gives_frames(tmp_path):
    pages = [Image.fromarray(_speckle(16, 16, s)) for s in range(3)]
    pages[0].save(tmp_path / "cine.tif", save_all=True, append_images=pages[1:])
    frames = read(tmp_path / "cine.tif")
    assert [f.frame_index for f in frames] == [0, 1, 2]
    np.testing.assert_array_equal(frames[2].pixels, np.asarray(pages[2]))
    assert [f.frame_index for f in read(tmp_path / "cine.tif", stride=2)] == [0, 2]


def test_only_listed_formats_are_opened(tmp_path):
    Image.fromarray(_speckle(8, 8)).save(tmp_path / "a.gif")
    with pytest.raises(InputError) as e:
        read(tmp_path / "a.gif")
    assert e.value.code == "unsupported_format"
    # a PNG named .dcm is sniffed by content
    Image.fromarray(_speckle(8, 8)).save(tmp_path / "x.dcm", format="PNG")
    assert read(tmp_path / "x.dcm")[0].format == "png"


def test_decompression_bomb_and_memory_guard(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 px > 2x: Pillow's bomb error
    with pytest.raises(InputError) as e:
        read(tmp_path / "big.png")
    assert e.value.code == "too_large"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # 40,000 px > 1x: the warning, made an error
    with pytest.raises(InputError) as e:
        read(tmp_path / "big.png")
    assert e.value.code == "too_large"
    monkeypatch.undo()
    with pytest.raises(InputError) as e:
        read(tmp_path / "big.png", max_bytes=1000)
    assert e.value.code == "too_large"


def test_corrupt_images_raise_input_error(tmp_path):
    Image.fromarray(_speckle(64, 64)).save(tmp_path / "a.png")
    Image.fromarray(_speckle(64, 64)).save(tmp_path / "a.jpg")
    rng = np.random.default_rng(0)
    for name in ("a.png", "a.jpg"):
        data = (tmp_path / name).read_bytes()
        for k in range(40):
            b = bytearray(data[: int(rng.integers(8, len(data)))] if k % 2 else data)
            for _ in range(8):
                b[int(rng.integers(8, len(b)))] = int(rng.integers(0, 256))
            (tmp_path / "m.bin").write_bytes(bytes(b))
            os.replace(tmp_path / "m.bin", tmp_path / f"m{os.path.splitext(name)[1]}")
            try:
                read(tmp_path / f"m{os.path.splitext(name)[1]}")
            except InputError:
                pass  # anything else propagates and fails the test


def _framed(seed: int):
    """A device-screenshot look-alike: speckle field, black margins, burned-in text, a grey bar, a ruler."""
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    fh, fw = int(rng.integers(300, 380)), int(rng.integers(360, 460))
    x0, y0 = int(rng.integers(90, w - fw - 40)), int(rng.integers(40, h - fh - 30))
    img = np.zeros((h, w), np.uint8)
    field = _speckle(fh, fw, seed)
    field[int(fh * 0.8):] //= 6  # dark deep tissue
    img[y0:y0 + fh, x0:x0 + fw] = field
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.text((10, 8), "THYROID L TRANS  12MHz  G 55", fill=230)
    d.text((w - 120, 8), "D 4.0 cm", fill=200)
    d.text((10, h - 16), "PATIENT 123", fill=210)
    d.rectangle([12, 100, 20, 260], fill=180)  # grey bar
    for k in range(0, fh, 20):
        d.line([(x0 + fw + 5, y0 + k), (x0 + fw + 10, y0 + k)], fill=220)
    return np.asarray(im), (x0, y0, x0 + fw, y0 + fh)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("seed", range(4))
def test_detect_field_on_framed_screenshots(tmp_path, seed):
    img, true = _framed(seed)
    assert _iou(detect_field(img), true) > 0.97
    Image.fromarray(img).save(tmp_path / "s.png")
    f = read(tmp_path / "s.png", crop="detect")[0]
    assert f.region_source == "detected" and _iou(f.region, true) > 0.97
    x0, y0, x1, y1 = f.region
    np.testing.assert_array_equal(f.pixels, img[y0:y1, x0:x1])
    assert read(tmp_path / "s.png")[0].region == (0, 0, 640, 480)  # auto: no regions, no crop


def _detect_field_reference(pixels, threshold=0.05):
    """detect_field as first written: a literal 5x5 median on the float image (the spec of
    the faster box-count form)."""
    from scipy import ndimage

    from thyrofast.io.regions import _grow

    a = pixels.max(axis=2) if pixels.ndim == 3 else pixels
    af = a.astype(np.float32)
    top = 255.0 if a.dtype == np.uint8 else float(np.percentile(af, 99.5)) or 1.0
    g = np.clip(af / top, 0.0, 1.0)
    step = max(1, int(np.ceil(max(g.shape) / 320)))
    small = g[::step, ::step]
    med = ndimage.median_filter((small * 255).astype(np.uint8), size=5, mode="nearest")
    mask = (med > threshold * 255).astype(np.uint8)
    k = max(7, int(round(min(small.shape) / 24))) | 1
    mask = ndimage.maximum_filter(ndimage.minimum_filter(mask, size=k), size=k).astype(bool)
    labels, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    sl = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    h, w = g.shape
    box = (sl[1].start * step, sl[0].start * step, min(w, sl[1].stop * step), min(h, sl[0].stop * step))
    x0, y0, x1, y1 = _grow(g > 0.008, box)
    return (int(x0), int(y0), int(x1), int(y1)) if (x1 - x0) * (y1 - y0) >= 0.05 * h * w else "too small"


@pytest.mark.parametrize("seed", range(6))
def test_detect_field_equals_the_median_filter_reference(seed):
    rng = np.random.default_rng(seed)
    img, _ = _framed(seed)
    # speckle-like noise near the threshold, so the 5x5 median decides pixel by pixel
    noisy = np.clip(img.astype(np.int16) + rng.integers(-14, 15, img.shape), 0, 255).astype(np.uint8)
    cases = [img, noisy, np.stack([noisy, img, img // 2], axis=2),
             noisy.astype(np.uint16) * int(rng.integers(3, 257)),
             noisy[: int(rng.integers(60, 300)), : int(rng.integers(60, 640))]]
    for a in cases:
        try:
            got = detect_field(a)
        except InputError as e:
            assert "too small" in str(e)
            got = "too small"
        assert got == _detect_field_reference(a)


def test_detect_field_refuses_a_dark_image():
    with pytest.raises(InputError) as e:
        detect_field(np.zeros((100, 100), np.uint8))
    assert e.value.code == "no_tissue_region"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    synth = pytest.importorskip("thyrofast.synth", reason="thyrofast.synth (the cohort generator) is not available")
    pytest.importorskip("thyrofast.synth.dicom", reason="thyrofast.synth.dicom (write_us_dicom) is not available")
    root = tmp_path_factory.mktemp("cohort") / "c"
    c = synth.generate_cohort(root, preset="paper", seed=3, patients=3, dicom=True, progress=False)
    with open(c.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return c.root, rows


def test_cohort_dicom_round_trip_equals_png_inside_region(cohort):
    root, rows = cohort
    assert rows and all(r.get("dicom_path") for r in rows)
    for r in rows:
        true = tuple(int(r[k]) for k in ("region_x0", "region_y0", "region_x1", "region_y1"))
        d = read(os.path.join(root, r["dicom_path"]))[0]
        png = read(os.path.join(root, r["path"]), crop="none")[0].pixels
        assert d.region == true and d.region_source == "dicom" and d.pixels.dtype == np.uint8
        x0, y0, x1, y1 = true
        np.testing.assert_array_equal(d.pixels, png[y0:y1, x0:x1])
        assert d.spacing_cm == pytest.approx((float(r["spacing_x_cm"]), float(r["spacing_y_cm"])), rel=1e-4)
        assert d.patient_hash is not None and r["patient_id"] not in d.patient_hash


def test_detect_field_on_the_synthetic_cohort_frames(cohort):
    root, rows = cohort
    ious = []
    for r in rows[::3]:  # every third frame: detection is ~0.2 s a frame
        true = tuple(int(r[k]) for k in ("region_x0", "region_y0", "region_x1", "region_y1"))
        ious.append(_iou(read(os.path.join(root, r["path"]), crop="detect")[0].region, true))
    assert min(ious) > 0.95 and float(np.mean(ious)) > 0.98
