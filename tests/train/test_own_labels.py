"""Your own label set: a benign/malignant cohort trains, exports, predicts and evaluates.

The cohort is the tiny phantom of ``_train_fixture`` relabelled as a user's data
would be: ``benign`` (the BTN look) and ``malignant`` (the NMTN and MMTN looks).
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thyrofast import InputError  # noqa: E402
from thyrofast.bundle import Bundle  # noqa: E402
from thyrofast.io import read_dataset, read_manifest, scan_folder  # noqa: E402
from thyrofast.io.schema import DEFAULT_CLASSES, classes_from_names  # noqa: E402

_CACHE: dict = {}


def _fixture():
    import _train_fixture

    return _train_fixture


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """(bundle path, manifest) of a benign/malignant bundle trained and exported on the tiny cohort."""
    if "binary" not in _CACHE:
        from thyrofast.train import train

        fx = _fixture()
        manifest = fx.write_binary_cohort(tmp_path_factory.mktemp("own") / "data")
        out = manifest.parent.parent / "bundle"
        train(manifest.parent, out, export=True, int8=True, log=lambda m: None, **fx.TRAIN_KW)
        _CACHE["binary"] = (out, manifest)
    return _CACHE["binary"]


def test_classes_come_from_the_data():
    assert classes_from_names(["malignant", "benign", "Benign"]) == ("benign", "malignant")
    assert classes_from_names(["mmtn", "BTN", "NMTN"]) == DEFAULT_CLASSES  # the preset keeps its order
    assert classes_from_names(["NMTN", "BTN"]) == ("BTN", "NMTN")  # a part of it too
    assert classes_from_names(["c", "a", "b"]) == ("a", "b", "c")
    with pytest.raises(ValueError, match="2 or more"):
        classes_from_names(["benign", "BENIGN"])


def test_manifest_and_class_folders_with_own_names(tmp_path):
    from PIL import Image

    rows = ["path,patient_id,label"]
    for cls in ("malignant", "benign"):
        for pid in ("p1", "p2"):
            f = tmp_path / cls / pid / "a.png"
            f.parent.mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(f)
            rows.append(f"{cls}/{pid}/a.png,{cls}-{pid},{cls}")
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match="malignant"):  # the preset is still the default of read_manifest
        read_manifest(tmp_path / "own.csv")
    recs = read_manifest(tmp_path / "own.csv", classes=None)
    assert recs[0].classes == ("benign", "malignant")
    assert {(r.label_name, r.label) for r in recs} == {("benign", 0), ("malignant", 1)}
    folder = read_dataset(tmp_path, classes=None)  # no manifest.csv: the sub-folders are the classes
    assert sorted((r.patient_id, r.label_name) for r in folder) == [
        ("p1", "benign"), ("p1", "malignant"), ("p2", "benign"), ("p2", "malignant")]
    # a layout error names the folders found and the rule
    lone = tmp_path / "lone"
    (lone / "benign").mkdir(parents=True)
    with pytest.raises(InputError) as e:
        scan_folder(lone, classes=None)
    assert "benign/" in str(e.value) and "2 or more" in str(e.value)
    with pytest.raises(InputError) as e:
        scan_folder(tmp_path)  # the preset's folders are looked for by default
    assert "benign/" in str(e.value) and "malignant/" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as e:
        read_dataset(empty, classes=None)
    assert "one sub-folder per class" in str(e.value)


def test_train_records_the_data_classes(binary):
    path, _ = binary
    b = Bundle.load(path)
    assert b.classes == ("benign", "malignant")
    assert b.model_config["num_classes"] == 2
    assert set(b.manifest["training"]["data"]["class_counts_train"]) == {"benign", "malignant"}
    model = b.build_model()
    with torch.no_grad():
        out = model(torch.zeros(2, *b.manifest["input_shape"]))
    assert out.shape == (2, 2)
    assert {"onnx_fp32", "onnx_fp16"} <= set(b.artifacts)


def test_export_fp32_fp16_int8_two_outputs(binary, tmp_path):
    from thyrofast.export import onnx_logits, quantize_int8
    from thyrofast.train.data import load_frames
    from thyrofast.train.data import read_manifest as train_rows

    path, manifest = binary
    b = Bundle.load(path)
    recs = train_rows(manifest, classes=b.classes)
    frames, _ = load_frames(recs, list(range(16)), b.preprocess_params, progress=False,
                            read=b.read_options)
    frames = frames.astype(np.float32)
    with torch.no_grad():
        ref = b.build_model()(torch.from_numpy(frames)).numpy()
    fp32 = onnx_logits(b.read_artifact("onnx_fp32"), frames)
    fp16 = onnx_logits(b.read_artifact("onnx_fp16"), frames)
    assert fp32.shape == fp16.shape == (16, 2)
    np.testing.assert_allclose(fp32, ref, atol=1e-3)
    assert np.mean(fp16.argmax(1) == ref.argmax(1)) >= 0.9
    src = tmp_path / "fp32.onnx"
    src.write_bytes(b.read_artifact("onnx_fp32"))
    quantize_int8(src, tmp_path / "int8.onnx", frames, mode="u8s8")
    assert onnx_logits(str(tmp_path / "int8.onnx"), frames).shape == (16, 2)


def test_predict_and_evaluate_two_classes(binary, tmp_path):
    from thyrofast.cli import main

    path, manifest = binary
    out_csv, out_jsonl = tmp_path / "p.csv", tmp_path / "p.jsonl"
    assert main(["predict", str(path), str(manifest), "--out", str(out_csv), "--no-progress"]) == 0
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert "prob_benign" in rows[0] and "prob_malignant" in rows[0] and "prob_BTN" not in rows[0]
    assert {r["pred"] for r in rows} <= {"benign", "malignant"}
    assert main(["predict", str(path), str(manifest), "--out", str(out_jsonl), "--no-progress"]) == 0
    recs = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert all(list(r["probs"]) == ["benign", "malignant"] for r in recs if r["status"] == "ok")

    from thyrofast.evaluate import evaluate_predictions
    from thyrofast.evaluate.core import evaluate_bundle

    for preds in (out_csv, out_jsonl):
        res = evaluate_predictions(str(preds), str(manifest), split="test", n_boot=200)
        assert res["classes"] == ["benign", "malignant"]
        assert res["binary"]["positive"] == "malignant"
        auc = res["binary"]["auc"]
        assert 0.5 <= auc["value"] <= 1.0 and "ci_delong" in auc
    res = evaluate_bundle(str(path), str(manifest), split="test", n_boot=200, progress=False,
                          report=str(tmp_path / "report"))
    assert res["classes"] == ["benign", "malignant"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "AUC malignant" in report and "AUC BTN" not in report


def test_resuming_a_csv_of_other_classes_is_refused(tmp_path):
    from thyrofast.predict import OutputError, RecordWriter, csv_fields

    out = tmp_path / "r.csv"
    with RecordWriter(out):  # a preset (BTN/NMTN/MMTN) results file
        pass
    with pytest.raises(OutputError, match="classes BTN, NMTN, MMTN, this bundle's are benign, malignant"):
        RecordWriter(out, classes=("benign", "malignant"))
    with RecordWriter(tmp_path / "b.csv", classes=("benign", "malignant")) as w:
        assert w.fields == csv_fields(("benign", "malignant"))
    assert (tmp_path / "b.csv").read_text().splitlines()[0].split(",") == list(csv_fields(("benign", "malignant")))
    assert os.path.getsize(out) > 0


def test_check_reports_the_data_classes(binary):
    from thyrofast.check import check_dataset

    _, manifest = binary
    rep = check_dataset(str(manifest.parent), progress=False)
    assert rep.classes == ["benign", "malignant"]
    assert set(rep.balance["train"]) == {"benign", "malignant"}
