"""One place for the data layer's vocabulary (class preset, crop modes) and one split assignment."""
from __future__ import annotations

import pytest

import thyrofast
from thyrofast.errors import InputError
from thyrofast.io import Record, assign_splits
from thyrofast.io.schema import CROP_MODES, DEFAULT_CLASSES, RENDER_CROPS, crop_mode, label_index


def test_every_class_list_is_the_preset():
    from thyrofast.bundle import READ_CROPS
    from thyrofast.evaluate import inputs
    from thyrofast.synth import features

    assert DEFAULT_CLASSES == ("BTN", "NMTN", "MMTN")
    for other in (thyrofast.CLASSES, inputs.CLASSES, features.CLASSES):
        assert other is DEFAULT_CLASSES
    assert READ_CROPS is CROP_MODES and set(RENDER_CROPS) <= set(CROP_MODES)


def test_label_index_takes_the_class_list():
    assert label_index("nmtn") == 1 and label_index(" MMTN ") == 2 and label_index("0") == 0
    assert label_index("cat", ("dog", "cat")) == 1
    with pytest.raises(ValueError, match="label must be one of"):
        label_index("MMTN", ("dog", "cat"))
    with pytest.raises(ValueError):
        label_index("3")


def test_crop_mode_normalizes_the_older_lexicon_spelling():
    assert crop_mode("region", RENDER_CROPS) == "regions"
    assert crop_mode("auto") == "auto"
    with pytest.raises(ValueError, match="crop must be one of"):
        crop_mode("auto", RENDER_CROPS)


def _records(n_per_class=6, split=None):
    return [Record(f"/d/{k}_{i}.png", f"p{k}{i}", k, split) for k in range(3) for i in range(n_per_class)]


def test_assign_splits_keeps_given_splits_and_carves_val():
    recs = _records(split="train") + [Record("/d/t.png", "pt", 0, "test")]
    out = assign_splits(recs, seed=1, keep=True, val_fraction=0.34)
    assert out[-1].split == "test"  # kept
    val = {r.patient_id for r in out if r.split == "val"}
    assert len(val) == 3 * 2 and {r.label for r in out if r.split == "val"} == {0, 1, 2}
    assert out == assign_splits(list(reversed(recs)), seed=1, keep=True, val_fraction=0.34)[::-1]
    # without keep, the given splits are dealt anew by the fractions
    fresh = assign_splits(recs, (0.5, 0.5), seed=1)
    assert {r.split for r in fresh} == {"train", "test"}
    # a patient in two given splits is refused when they are kept
    with pytest.raises(InputError) as e:
        assign_splits(recs + [Record("/d/x.png", "pt", 0, "train")], keep=True)
    assert e.value.code == "bad_split"


def test_every_folder_walk_takes_the_same_image_files(tmp_path):
    # one extension list (io.schema): predict's walk once skipped .dic/.ima DICOM files that train and check read
    from thyrofast import check
    from thyrofast.io import manifest
    from thyrofast.io.schema import DICOM_EXTENSIONS, IMAGE_EXTENSIONS
    from thyrofast.predict import IMAGE_EXTENSIONS as PREDICT_EXTENSIONS
    from thyrofast.predict import expand_inputs

    assert {".dic", ".ima", ".dcm"} <= DICOM_EXTENSIONS <= IMAGE_EXTENSIONS
    assert IMAGE_EXTENSIONS <= PREDICT_EXTENSIONS and IMAGE_EXTENSIONS <= manifest.IMAGE_EXTS
    assert check.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    for ext in sorted(IMAGE_EXTENSIONS):
        (tmp_path / f"a{ext}").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    got = sorted(p.path.rsplit(".", 1)[1] for p in expand_inputs([tmp_path]))
    assert got == sorted(e[1:] for e in IMAGE_EXTENSIONS)
