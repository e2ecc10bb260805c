"""``thyrofast preprocess --bundle/--crop`` previews what a bundle's network sees (issue 21)."""
from __future__ import annotations

import argparse
import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from thyrofast import Preprocessor, cli, read
from thyrofast.bundle import Bundle


@pytest.fixture
def framed_png(tmp_path):
    """A 200x300 frame: speckle in a 130x190 field, black around it (what `--crop detect` finds)."""
    rng = np.random.default_rng(0)
    img = np.zeros((200, 300), np.uint8)
    img[40:170, 60:250] = rng.integers(40, 220, (130, 190))
    path = tmp_path / "framed.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def detect_bundle(bundle_dir, tmp_path):
    """The test bundle, trained (as `train` does by default) on files read with crop detect."""
    path = tmp_path / "detect-bundle"
    shutil.copytree(bundle_dir, path)
    Bundle.load(path).update(read={"crop": "detect"})
    return path


def _expected(params, path, crop):
    return Preprocessor(params)(read(path, crop=crop)[0].pixels)


def test_bundle_gives_its_preprocessing_and_crop(detect_bundle, framed_png, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(framed_png), "--out", str(out), "--bundle", str(detect_bundle), "--png"]) == 0
    b = Bundle.load(detect_bundle)
    x = np.load(out / "framed.npy")
    assert x.shape == (1, *b.input_shape) == (1, 1, 64, 64)  # the bundle's size, not the 224 default
    np.testing.assert_array_equal(x, _expected(b.preprocess_params, framed_png, "detect"))
    assert not np.array_equal(x, _expected(b.preprocess_params, framed_png, "none"))  # the crop mattered
    assert (out / "framed_000.png").exists()
    err = capsys.readouterr().err
    assert f"preprocessing of {detect_bundle}: crop detect, size 64x64" in err


def test_crop_and_options_beside_a_bundle_override_it(detect_bundle, framed_png, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(framed_png), "--out", str(out), "--bundle", str(detect_bundle),
                     "--crop", "none", "--size", "32", "40"]) == 0
    b = Bundle.load(detect_bundle)
    params = b.preprocess_params
    x = np.load(out / "framed.npy")
    assert x.shape == (1, 1, 32, 40)
    np.testing.assert_array_equal(x, _expected(dataclasses.replace(params, size=(32, 40)), framed_png, "none"))
    assert "(overriding the bundle's size): crop none, size 32x40" in capsys.readouterr().err


def test_bundle_without_a_read_field_reads_with_auto(bundle_dir, framed_png, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(framed_png), "--out", str(out), "--bundle", str(bundle_dir)]) == 0
    b = Bundle.load(bundle_dir)
    np.testing.assert_array_equal(np.load(out / "framed.npy"), _expected(b.preprocess_params, framed_png, "auto"))


def test_bundle_that_masks_annotations_reads_files_masked(detect_bundle, tmp_path, capsys):
    """Issue 24: a bundle trained with mask_annotations previews files read that way;
    --no-mask-annotations beside it (and a bundle without the key) reads them unmasked."""
    from PIL import ImageDraw

    rng = np.random.default_rng(1)
    img = np.zeros((200, 300), np.uint8)
    img[40:170, 60:250] = rng.integers(60, 140, (130, 190))
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    for cx, cy in ((100, 100), (200, 100)):  # white calipers and text burned into the field
        d.line([cx - 6, cy, cx + 6, cy], fill=255)
        d.line([cx, cy - 6, cx, cy + 6], fill=255)
    d.text((80, 140), "L 1.23cm", fill=255)
    png = tmp_path / "marked.png"
    im.save(png)
    b = Bundle.load(detect_bundle)
    params = b.preprocess_params
    masked = Preprocessor(params)(read(png, crop="detect", mask_annotations=True)[0].pixels)
    plain = _expected(params, png, "detect")
    assert not np.array_equal(masked, plain)
    cmd = ["preprocess", str(png), "--bundle", str(detect_bundle)]
    assert cli.main([*cmd, "--out", str(tmp_path / "o0")]) == 0  # the bundle does not mask (no key)
    np.testing.assert_array_equal(np.load(tmp_path / "o0" / "marked.npy"), plain)
    b.update(read={"crop": "detect", "mask_annotations": True})
    capsys.readouterr()
    assert cli.main([*cmd, "--out", str(tmp_path / "o1")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o1" / "marked.npy"), masked)
    assert "crop detect, annotations masked, size" in capsys.readouterr().err
    assert cli.main([*cmd, "--out", str(tmp_path / "o2"), "--no-mask-annotations"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o2" / "marked.npy"), plain)
    # and without a bundle, --mask-annotations asks for it
    assert cli.main(["preprocess", str(png), "--out", str(tmp_path / "o3"), "--crop", "detect",
                     "--mask-annotations", "--size", "48", "48"]) == 0
    pre = Preprocessor(size=(48, 48), denoise="srad", normalize="percentile", srad_iterations=10)
    np.testing.assert_array_equal(np.load(tmp_path / "o3" / "marked.npy"),
                                  pre(read(png, crop="detect", mask_annotations=True)[0].pixels))


@pytest.mark.parametrize("crop", ["auto", "detect", "none"])
def test_crop_without_a_bundle(crop, framed_png, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(framed_png), "--out", str(out), "--crop", crop, "--size", "48", "48"]) == 0
    pre = Preprocessor(size=(48, 48), denoise="srad", normalize="percentile", srad_iterations=10)
    np.testing.assert_array_equal(np.load(out / "framed.npy"), pre(read(framed_png, crop=crop)[0].pixels))


def test_crop_choices_are_train_ones():
    from thyrofast.cli import preprocess as preprocess_cli
    from thyrofast.cli import train as train_cli

    def choices(mod, flag):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        return next(a.choices for a in p._actions if flag in a.option_strings)

    assert tuple(choices(preprocess_cli, "--crop")) == tuple(choices(train_cli, "--crop"))
    with pytest.raises(SystemExit) as e:
        cli.main(["preprocess", "x.png", "--out", "o", "--crop", "sideways"])
    assert e.value.code == 2


def test_a_bad_bundle_is_one_line(framed_png, tmp_path, capsys):
    rc = cli.main(["preprocess", str(framed_png), "--out", str(tmp_path / "out"), "--bundle", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("thyrofast preprocess: cannot use the bundle:")
