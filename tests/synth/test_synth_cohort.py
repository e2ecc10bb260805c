"""Cohort generation on disk: contract columns, determinism across workers, atomic resume,
DICOM, CLI."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyrofast.synth import cohort as C

PATIENTS = 4


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort1(tmp_path_factory):
    out = tmp_path_factory.mktemp("c1") / "cohort"
    c = C.generate_cohort(out, seed=3, patients=PATIENTS, workers=1, progress=False)
    return c


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_manifest_contract(cohort1):
    rows = _rows(cohort1.manifest)
    assert len(rows) == cohort1.n_images == round(3537 * PATIENTS / 195)
    required = {"path", "patient_id", "label", "split", "view", "frame_index", "composition", "echogenicity",
                "shape", "margin", "foci", "size_mm", "tirads_points", "tirads_level", "bayes_BTN", "bayes_NMTN",
                "bayes_MMTN", "region_x0", "region_y0", "region_x1", "region_y1", "spacing_x_cm", "spacing_y_cm"}
    assert required <= set(rows[0])
    for r in rows:
        assert r["label"] in ("BTN", "NMTN", "MMTN") and r["split"] in ("train", "test")
        assert r["view"] in ("transverse", "longitudinal", "lymph_node")
        img = np.asarray(Image.open(cohort1.root / r["path"]))
        assert img.shape == (600, 800) and img.dtype == np.uint8
        x0, y0, x1, y1 = (int(r[k]) for k in ("region_x0", "region_y0", "region_x1", "region_y1"))
        assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 600
        assert img[y0:y1, x0:x1].mean() > 20  # tissue inside the region
        assert float(r["spacing_x_cm"]) == float(r["spacing_y_cm"]) > 0
        # the region's physical size is the scan depth
        assert abs((y1 - y0) * float(r["spacing_y_cm"]) - float(r["depth_cm"])) < 0.02
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add((r["label"], r["split"], r["bayes_MMTN"]))
    assert all(len(v) == 1 for v in by_patient.values())  # patient-level values constant
    readers = _rows(cohort1.readers)
    assert len(readers) == 2 * PATIENTS
    assert {r["patient_id"] for r in readers} == set(by_patient)


def test_manifest_matches_plan(cohort1):
    plan = {p.patient_id: p for p in C.plan_cohort("paper", 3, PATIENTS)}
    for r in _rows(cohort1.manifest):
        p = plan[r["patient_id"]]
        assert r["label"] == p.label
        nd = p.patient.index_nodule
        assert r["composition"] == nd.composition and int(r["tirads_points"]) == nd.tirads_points
        assert abs(float(r["bayes_MMTN"]) - p.bayes["MMTN"]) < 1e-5


def test_same_bytes_for_any_worker_count(cohort1, tmp_path):
    c2 = C.generate_cohort(tmp_path / "c2", seed=3, patients=PATIENTS, workers=2, progress=False)
    assert _digest(cohort1.root) == _digest(c2.root)


def test_interrupted_run_leaves_no_cohort_and_resumes(cohort1, tmp_path, monkeypatch):
    out = tmp_path / "c3"
    real = C._render_patient
    calls = {"n": 0}

    def flaky(args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(C, "_render_patient", flaky)
    with pytest.raises(KeyboardInterrupt):
        C.generate_cohort(out, seed=3, patients=PATIENTS, workers=1, progress=False)
    assert not out.exists()
    partial = tmp_path / "c3.partial"
    assert len(list((partial / "meta").glob("*.json"))) == 2
    monkeypatch.setattr(C, "_render_patient", real)
    done = []

    def counting(args):
        done.append(args[2].index)
        return real(args)

    monkeypatch.setattr(C, "_render_patient", counting)
    c = C.generate_cohort(out, seed=3, patients=PATIENTS, workers=1, progress=False)
    assert len(done) == PATIENTS - 2  # finished patients were not redone
    assert not partial.exists()
    assert _digest(c.root) == _digest(cohort1.root)
    # a complete cohort with the same settings is returned as is; other settings are refused
    done.clear()
    C.generate_cohort(out, seed=3, patients=PATIENTS, workers=1, progress=False)
    assert done == []
    with pytest.raises(FileExistsError):
        C.generate_cohort(out, seed=4, patients=PATIENTS, workers=1, progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        C.generate_cohort(tmp_path / "x", patients=PATIENTS, workers=0, progress=False)
    with pytest.raises(ValueError):
        C.generate_cohort(tmp_path / "x", preset="nope", progress=False)
    with pytest.raises(ValueError, match="patients must be <= 100,000"):  # refused before any work or memory
        C.generate_cohort(tmp_path / "x", patients=10**9, progress=False)
    assert not (tmp_path / "x").exists()
    assert C.scaled_counts(C.PRESETS["paper"], C.MAX_PATIENTS)[2] > 10**6  # the bound itself is allowed


def test_cli_with_dicom(tmp_path, capsys):
    import pydicom

    from thyrofast.cli import main
    from thyrofast.synth.dicom import US_IMAGE_STORAGE

    out = tmp_path / "cli"
    rc = main(["synth", str(out), "--patients", "3", "--seed", "1", "--workers", "1", "--dicom", "--no-progress"])
    assert rc == 0
    assert "patients" in capsys.readouterr().out
    rows = _rows(out / "manifest.csv")
    assert len(rows) == round(3537 * 3 / 195)
    r = rows[0]
    ds = pydicom.dcmread(out / r["dicom_path"])
    assert ds.SOPClassUID == US_IMAGE_STORAGE
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    assert ds.PatientID == r["patient_id"]
    reg = ds.SequenceOfUltrasoundRegions[0]
    assert (reg.RegionSpatialFormat, reg.RegionDataType, reg.PhysicalUnitsXDirection) == (1, 1, 3)
    assert (reg.RegionLocationMinX0, reg.RegionLocationMinY0) == (int(r["region_x0"]), int(r["region_y0"]))
    assert (reg.RegionLocationMaxX1, reg.RegionLocationMaxY1) == (int(r["region_x1"]) - 1, int(r["region_y1"]) - 1)
    assert reg.PhysicalDeltaX == pytest.approx(float(r["spacing_x_cm"]), rel=1e-5)
    png = np.asarray(Image.open(out / r["path"]))
    assert np.array_equal(ds.pixel_array, png)
    assert main(["synth", str(tmp_path / "bad"), "--patients", "2", "--no-progress"]) == 2


def test_write_us_dicom_round_trip(tmp_path):
    import pydicom

    from thyrofast.synth.dicom import hashed_patient_id, write_us_dicom

    px = (np.arange(60 * 80) % 251).astype(np.uint8).reshape(60, 80)
    p = write_us_dicom(tmp_path / "a.dcm", px, patient_id="patient-7", region=(5, 6, 70, 50),
                       spacing_cm=(0.01, 0.012), instance_number=3)
    ds = pydicom.dcmread(p)
    assert ds.PatientID == hashed_patient_id("patient-7") != "patient-7"
    assert ds.InstanceNumber == 3
    assert np.array_equal(ds.pixel_array, px)
    reg = ds.SequenceOfUltrasoundRegions[0]
    assert (reg.PhysicalDeltaX, reg.PhysicalDeltaY) == (0.01, 0.012)
    q = write_us_dicom(tmp_path / "b.dcm", px, patient_id="patient-7", region=(5, 6, 70, 50),
                       spacing_cm=(0.01, 0.012), instance_number=3)
    assert p.read_bytes() == q.read_bytes()  # deterministic UIDs, no timestamps
    with pytest.raises(ValueError):
        write_us_dicom(tmp_path / "c.dcm", px.astype(np.uint16), patient_id="x", region=(0, 0, 10, 10),
                       spacing_cm=0.01)
    with pytest.raises(ValueError):
        write_us_dicom(tmp_path / "c.dcm", px, patient_id="x", region=(0, 0, 100, 10), spacing_cm=0.01)


def test_png_encoder_round_trip():
    import io

    from thyrofast.synth.pngio import encode_png_gray8

    a = np.random.default_rng(0).integers(0, 256, size=(37, 53), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png_gray8(a)))), a)
    with pytest.raises(ValueError):
        encode_png_gray8(a.astype(np.float32))
