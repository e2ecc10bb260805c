"""Manifests, folder-per-class layouts, patient-level splits, k-fold, and the dataset object."""
from __future__ import annotations

import csv
import logging
import os

import numpy as np
import pytest
from PIL import Image

from thyrofast import InputError
from thyrofast.io import (
    Record,
    check_split,
    hash_patient_id,
    kfold_patients,
    read_manifest,
    scan_folder,
    split_patients,
    write_manifest,
)
from thyrofast.io.splits import assign_splits, patient_labels


def _write_csv(path, rows, header=("path", "patient_id", "label", "split")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _png(path, seed=0, shape=(40, 50)):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)


def _records(n_pat=60, per=3, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_pat):
        lab = int(rng.choice(3, p=[0.3, 0.1, 0.6]))
        for k in range(per):
            recs.append(Record(f"/data/P{p:03d}_{k}.png", f"P{p:03d}", lab))
    return recs


def test_read_manifest_resolves_paths_and_keeps_extra_columns(tmp_path):
    m = _write_csv(tmp_path / "m.csv", [["a/1.png", "P1", "BTN", "train", "0.9"],
                                         ["/abs/2.png", "P2", "mmtn", "", "0.1"]],
                   header=("path", "patient_id", "label", "split", "bayes_BTN"))
    recs = read_manifest(m)
    assert recs[0].path == str(tmp_path / "a" / "1.png") and recs[1].path == "/abs/2.png"
    assert [r.label for r in recs] == [0, 2] and recs[0].split == "train" and recs[1].split is None
    assert recs[0].extra["bayes_BTN"] == "0.9"
    assert "P1" not in repr(recs[0])  # raw ids never printed


@pytest.mark.parametrize("rows,header,fragment", [
    ([["a.png", "P1", "XYZ", ""]], None, "label"),
    ([["", "P1", "BTN", ""]], None, "empty path"),
    ([["a.png", "", "BTN", ""]], None, "empty patient_id"),
    ([["a.png", "P1", "BTN", "holdout"]], None, "split"),
    ([["a.png", "P1"]], ("path", "patient_id"), "missing column"),
    ([["a.png", "P1", "BTN", "x"]], ("path", "patient_id", "label", "frame_index"), "frame_index"),
    ([["a.png", "P1", "BTN", ""], ["a.png", "P2", "BTN", ""]], None, "two patients"),
])
def test_bad_manifests(tmp_path, rows, header, fragment):
    m = _write_csv(tmp_path / "m.csv", rows, header=header or ("path", "patient_id", "label", "split"))
    with pytest.raises(InputError) as e:
        read_manifest(m)
    assert e.value.code == "bad_manifest" and fragment in str(e.value)
    assert "P1" not in str(e.value) and "P2" not in str(e.value)


def test_manifest_with_patient_in_two_splits_is_refused(tmp_path):
    m = _write_csv(tmp_path / "m.csv", [["a.png", "P1", "BTN", "train"], ["b.png", "P1", "BTN", "test"]])
    with pytest.raises(InputError) as e:
        read_manifest(m)
    assert e.value.code == "bad_split" and hash_patient_id("P1") in str(e.value) and "P1 " not in str(e.value)


def test_write_manifest_hashes_ids_and_reads_back(tmp_path):
    recs = [Record(str(tmp_path / "img" / "a.png"), "MRN-0042", 1, "train", None, "transverse", {"foo": "1"})]
    path = write_manifest(recs, tmp_path / "out.csv")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert "MRN-0042" not in text and hash_patient_id("MRN-0042") in text and "img/a.png" in text
    back = read_manifest(path)
    assert back[0].path == recs[0].path and back[0].patient_id == hash_patient_id("MRN-0042")
    assert back[0].label == 1 and back[0].view == "transverse" and back[0].extra["foo"] == "1"
    assert hash_patient_id(back[0].patient_id) == back[0].patient_id  # hashing is idempotent


def test_hash_uses_salt(monkeypatch):
    a = hash_patient_id("P1")
    monkeypatch.setenv("THYROFAST_ID_SALT", "site-secret")
    assert hash_patient_id("P1") != a and hash_patient_id("P1", salt="") == a
    assert hash_patient_id("") is None and hash_patient_id(None) is None


def test_scan_folder_per_class(tmp_path, caplog):
    _png(str(tmp_path / "BTN" / "pat1" / "a.png"))
    _png(str(tmp_path / "BTN" / "pat1" / "b.png"))
    _png(str(tmp_path / "mmtn" / "pat2" / "c.png"))
    _png(str(tmp_path / "NMTN" / "lone.png"))
    (tmp_path / "NMTN" / "notes.txt").write_text("skip me")
    with caplog.at_level(logging.WARNING, logger="thyrofast.io"):
        recs = scan_folder(tmp_path)
    assert sorted((os.path.basename(r.path), r.patient_id, r.label_name) for r in recs) == [
        ("a.png", "pat1", "BTN"), ("b.png", "pat1", "BTN"), ("c.png", "pat2", "MMTN"), ("lone.png", "lone", "NMTN")]
    assert "own patient" in caplog.text
    with pytest.raises(InputError) as e:
        scan_folder(tmp_path, patient_from="folder")  # lone.png has no patient folder
    assert e.value.code == "bad_manifest"
    with pytest.raises(InputError) as e:
        scan_folder(tmp_path / "BTN")
    assert e.value.code == "bad_manifest"


def test_scan_folder_dicom_patient_ids(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    src = get_testdata_file("OBXXXX1A.dcm", download=False)
    if src is None:
        pytest.skip("pydicom-data is not installed")
    os.makedirs(tmp_path / "BTN")
    with open(src, "rb") as fh:
        (tmp_path / "BTN" / "x.dcm").write_bytes(fh.read())
    recs = scan_folder(tmp_path)
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    assert recs[0].patient_id == hash_patient_id(ds.PatientID)


def test_split_is_patient_level_stratified_seeded_and_order_free():
    recs = _records()
    train, val, test = split_patients(recs, seed=7)
    assert len(train) + len(val) + len(test) == len(recs)
    sets = [set(r.patient_id for r in part) for part in (train, val, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    check_split(train + val + test)  # does not raise
    # stratified: each class's patients split ~70/15/15
    labels = patient_labels(recs)
    for c in range(3):
        n = sum(1 for v in labels.values() if v == c)
        counts = [sum(1 for p in s if labels[p] == c) for s in sets]
        assert abs(counts[0] - 0.7 * n) <= 1 and abs(counts[2] - 0.15 * n) <= 1
    # seeded and independent of record order
    again = split_patients(list(reversed(recs)), seed=7)
    assert [set(r.patient_id for r in part) for part in again] == sets
    other = split_patients(recs, seed=8)
    assert [set(r.patient_id for r in part) for part in other] != sets
    two = split_patients(recs, (0.8, 0.2), seed=0)
    assert len(two) == 2 and {r.split for r in two[1]} == {"test"}


def test_split_refuses_leaks_and_too_few_patients():
    recs = _records(n_pat=5)
    bad = [recs[0].replace(split="train"), recs[1].replace(split="val")]  # same patient, two sets
    with pytest.raises(InputError) as e:
        check_split(bad)
    assert e.value.code == "bad_split"
    with pytest.raises(InputError) as e:
        assign_splits(_records(n_pat=2), (0.7, 0.15, 0.15))
    assert e.value.code == "bad_split"
    with pytest.raises(ValueError):
        split_patients(recs, (0.5, 0.2, 0.2, 0.1))


def test_kfold_by_patient():
    recs = _records(n_pat=23)
    folds = kfold_patients(recs, k=5, seed=1)
    assert len(folds) == 5
    val_sets = [set(r.patient_id for r in val) for _, val in folds]
    all_p = set(r.patient_id for r in recs)
    assert set().union(*val_sets) == all_p and sum(len(s) for s in val_sets) == len(all_p)
    for train, val in folds:
        assert not set(r.patient_id for r in train) & set(r.patient_id for r in val)
        assert len(train) + len(val) == len(recs)
    sizes = sorted(len(s) for s in val_sets)
    assert sizes[-1] - sizes[0] <= 1
    assert [set(r.patient_id for r in v) for _, v in kfold_patients(recs, k=5, seed=1)] == val_sets
    with pytest.raises(InputError):
        kfold_patients(_records(n_pat=3), k=5)


# ---------------------------------------------------------------- dataset --
def _cohort_dir(tmp_path):
    rows = []
    for p in range(6):
        lab = ["BTN", "NMTN", "MMTN"][p % 3]
        for k in range(2):
            rel = f"img/p{p}_{k}.png"
            _png(str(tmp_path / rel), seed=10 * p + k, shape=(60 + 4 * k, 80))
            rows.append([rel, f"P{p}", lab, "train" if p < 4 else "test"])
    return _write_csv(tmp_path / "manifest.csv", rows)


def test_frame_dataset_yields_preprocessed_frames(tmp_path):
    pytest.importorskip("thyrofast._core", reason="the compiled preprocessing core is not built")
    from thyrofast import PreprocessParams, preprocess
    from thyrofast.io import FrameDataset

    m = _cohort_dir(tmp_path)
    params = PreprocessParams(size=(32, 32), denoise="median3")
    ds = FrameDataset(m, params, split="train", threads=1)
    assert len(ds) == 8 and ds.class_counts() == {"BTN": 4, "NMTN": 2, "MMTN": 2}
    x, y, pid = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == np.float32 and y == 0 and pid == "P0"
    ref = preprocess(read_png(tmp_path / "img" / "p0_0.png"), size=(32, 32), denoise="median3", threads=1)[0]
    np.testing.assert_allclose(x, ref, rtol=0, atol=0)
    batches = list(ds.batches(3, shuffle=True, seed=0))
    assert [b[0].shape[0] for b in batches] == [3, 3, 2] and batches[0][1].dtype == np.int64
    assert sorted(sum((b[2] for b in batches), [])) == sorted(ds.patient_ids)
    assert list(ds.batches(3, drop_last=True))[-1][0].shape[0] == 3
    test = FrameDataset(m, params, split="test", threads=1)
    assert set(test.patient_ids) == {"P4", "P5"}
    assert "P0" not in repr(ds)


def read_png(path):
    with Image.open(path) as im:
        return np.asarray(im).copy()


def test_frame_dataset_cache_and_cine(tmp_path):
    pytest.importorskip("thyrofast._core", reason="the compiled preprocessing core is not built")
    from thyrofast import PreprocessParams
    from thyrofast.io import FrameDataset

    pages = [Image.fromarray(np.random.default_rng(s).integers(0, 256, (30, 30), dtype=np.uint8)) for s in range(4)]
    pages[0].save(tmp_path / "cine.tif", save_all=True, append_images=pages[1:])
    _png(str(tmp_path / "one.png"))
    recs = [Record(str(tmp_path / "cine.tif"), "A", 2), Record(str(tmp_path / "one.png"), "B", 0),
            Record(str(tmp_path / "cine.tif"), "A", 2, frame_index=3)]
    params = PreprocessParams(size=(16, 16), denoise="none")
    ds = FrameDataset(recs, params, cache=tmp_path / "cache", read_options={"stride": 2}, threads=1)
    assert len(ds) == 2 + 1 + 1 and [ds.item_record(i)[1] for i in range(len(ds))] == [0, 2, 0, 3]
    first = [ds[i][0] for i in range(len(ds))]
    assert len(os.listdir(tmp_path / "cache")) == 4
    ds2 = FrameDataset(recs, params, cache=tmp_path / "cache", read_options={"stride": 2}, threads=1)
    for i in range(len(ds2)):
        np.testing.assert_array_equal(ds2[i][0], first[i])
    mem = FrameDataset(recs, params, cache="memory", read_options={"stride": 2}, threads=1)
    assert mem[1][0] is mem[1][0]
    with pytest.raises(IndexError):
        ds[len(ds)]
    bad = [Record(str(tmp_path / "missing.png"), "C", 0)]
    assert len(FrameDataset(bad + recs[:1], params, on_error="skip", threads=1).skipped) == 1
    with pytest.raises(InputError):
        FrameDataset(bad, params, threads=1)


def test_frame_dataset_refuses_leaky_records(tmp_path):
    pytest.importorskip("thyrofast._core", reason="the compiled preprocessing core is not built")
    from thyrofast.io import FrameDataset

    recs = [Record("/x/a.png", "P", 0, "train"), Record("/x/b.png", "P", 0, "test")]
    with pytest.raises(InputError) as e:
        FrameDataset(recs, None, split="train")
    assert e.value.code == "bad_split"


def test_predict_reads_manifests_with_the_same_reader(tmp_path):
    # one CSV reader (io.manifest.manifest_rows): a BOM and padded header names, as spreadsheets write
    # them, read the same in train and predict; predict needs only the path column
    from thyrofast.errors import InputError
    from thyrofast.predict import expand_inputs

    m = tmp_path / "m.csv"
    m.write_text("\ufeff path , patient_id ,frame_index\na.png,P1,2\nb.png,,\n", encoding="utf-8")
    items = expand_inputs([m])
    assert [(os.path.basename(i.path), i.frame_index) for i in items] == [("a.png", 2), ("b.png", None)]
    assert items[0].patient_id is not None and items[0].patient_id != "P1" and items[1].patient_id is None
    (tmp_path / "nopath.csv").write_text("file,patient_id\na.png,P1\n")
    with pytest.raises(InputError, match="missing column") as e:
        expand_inputs([tmp_path / "nopath.csv"])
    assert e.value.code == "bad_manifest"
    (tmp_path / "empty.csv").write_text("path,patient_id\n")
    with pytest.raises(InputError) as e:
        expand_inputs([tmp_path / "empty.csv"])
    assert e.value.code == "empty"
