"""``thyrofast predict`` end to end on a trained bundle and real image files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyrofast.cli import main

import _bundle_fixture as fx  # noqa: E402  (tests/ is on pythonpath)


@pytest.fixture
def images(tmp_path):
    frames, labels, _ = fx.phantom(8, seed=44)
    d = tmp_path / "images"
    d.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / f"f{i}.png")
    return d, labels


def test_cli_predicts_folder_with_saliency(bundle_dir, images, tmp_path, capsys):
    d, labels = images
    out = tmp_path / "r.jsonl"
    rc = main(["predict", str(bundle_dir), str(d), "--out", str(out), "--backend", "onnxruntime",
               "--precision", "fp32", "--threads", "1", "--saliency", str(tmp_path / "sal"), "--no-progress"])
    assert rc == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs)
    pred = [("BTN", "NMTN", "MMTN").index(r["pred"]) for r in sorted(recs, key=lambda r: r["input"])]
    assert (np.array(pred) == labels).mean() >= 0.85
    p = recs[0]["provenance"]
    assert (p["backend"], p["precision"], p["device"]) == ("onnxruntime", "fp32", "cpu")
    assert len(p["bundle_sha256"]) == 64
    assert all(Path(r["saliency"]).is_file() for r in recs)
    err = capsys.readouterr().err
    assert "8 inputs: 8 ok, 0 failed" in err and "frames/s" in err


def test_cli_exit_status_and_resume(bundle_dir, images, tmp_path, capsys):
    d, _ = images
    (d / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "r.csv"
    args = ["predict", str(bundle_dir), str(d), "--out", str(out), "--backend", "openvino", "--no-progress"]
    assert main(args) == 1  # one input failed
    capsys.readouterr()
    assert main(args) == 1  # still failed (recorded earlier), nothing new written
    err = capsys.readouterr().err
    assert "0 ok, 0 failed" in err and "9 already recorded" in err
    assert len(out.read_text().splitlines()) == 1 + 9  # header + one row per input


def test_cli_refuses_a_bad_bundle(tmp_path, images, capsys):
    d, _ = images
    rc = main(["predict", str(tmp_path), str(d), "--out", str(tmp_path / "r.jsonl"), "--no-progress"])
    assert rc == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_cli_usage_errors_are_one_line(bundle_dir, images, tmp_path, capsys):
    d, _ = images
    (tmp_path / "empty").mkdir()
    base = ["predict", str(bundle_dir), "--no-progress", "--backend", "onnxruntime"]
    assert main(base + [str(tmp_path / "empty"), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "no image or DICOM files in this folder" in capsys.readouterr().err
    assert main(base + [str(d), "--out", str(tmp_path)]) == 3  # a folder, not a results file
    assert "is a folder" in capsys.readouterr().err
    assert main(base + [str(d), "--out", str(tmp_path / "r.jsonl"), "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads must be >= 1" in err and "cannot load the model" not in err
