"""DICOM SR output (thyrofast.sr, ``predict --sr``): one SR per study of a ``thyrofast synth --dicom`` phantom
cohort, valid for dciodvfy (0 errors), and read back with the values of the prediction records."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _env(hide: str | None = None) -> dict:
    import thyrofast

    env = dict(os.environ)
    path = [str(Path(thyrofast.__file__).resolve().parents[1])]
    if hide:
        path.insert(0, str(HERE / "_hide_optional"))
        env["THYROFAST_HIDE"] = hide
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _cli(args, cwd, hide=None):
    return subprocess.run([sys.executable, "-m", "thyrofast.cli", *args], cwd=cwd, env=_env(hide),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("highdicom")
    import _train_fixture as TF

    bundle, _ = TF.load().trained_bundle(tmp_path_factory)
    work = tmp_path_factory.mktemp("sr")
    r = _cli(["synth", str(work / "syn"), "--patients", "3", "--dicom", "--no-progress"], work)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli(["predict", str(bundle), str(work / "syn" / "dicom"), "--out", str(work / "r.jsonl"),
              "--sr", str(work / "sr"), "--backend", "onnxruntime", "--no-progress"], work)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in (work / "r.jsonl").read_text().splitlines()]
    return work, bundle, records


def test_one_sr_per_study_round_trip(run):
    import pydicom

    from thyrofast.bundle import Bundle
    from thyrofast.sr import read_sr

    work, bundle, records = run
    images = [r for r in records if r["kind"] == "image"]
    studies = {}
    for r in images:
        ds = pydicom.dcmread(r["input"], stop_before_pixels=True)
        studies.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
        pid = r["patient_id"]
    srs = sorted((work / "sr").glob("*.dcm"))
    assert len(srs) == len(studies) == 3
    patient = {r["patient_id"]: r for r in records if r["kind"] == "patient"}
    by_study = {}
    for r in images:
        by_study.setdefault(str(pydicom.dcmread(r["input"], stop_before_pixels=True).StudyInstanceUID), r["patient_id"])
    sha = Bundle.load(bundle).sha256
    for path in srs:
        got = read_sr(path)
        uid = got["study_instance_uid"]
        assert uid in studies and path.name == f"{uid}.dcm"  # the SR's StudyInstanceUID is the source study's
        assert set(got["source_sop_instance_uids"]) == studies[uid]  # every source instance referenced
        pid = by_study[uid]
        want = patient[pid]  # one study per patient in the phantom cohort: the same images, the same rule
        assert got["class"] == want["decision"]
        assert got["prediction_set"] == want["prediction_set"] and got["set_level"] == "patient"
        assert got["refer"] == want["refer"]
        assert got["probs"].keys() == want["probs"].keys()
        assert all(abs(got["probs"][c] - want["probs"][c]) < 1e-9 for c in want["probs"])
        assert got["bundle_sha256"] == sha == want["provenance"]["bundle_sha256"]
        assert got["algorithm_name"] == "thyrofast" and got["algorithm_version"] == want["provenance"]["thyrofast"]


def test_dciodvfy_reports_no_errors(run):
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    work, _, _ = run
    for path in sorted((work / "sr").glob("*.dcm")):
        r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], "\n".join(errors)


def test_missing_extra_is_one_line_exit_2(tmp_path):
    import _train_fixture as TF  # noqa: F401  (no bundle needed: the extra is checked first)

    r = _cli(["predict", str(tmp_path / "no-bundle"), str(tmp_path), "--out", str(tmp_path / "r.jsonl"),
              "--sr", str(tmp_path / "sr")], tmp_path, hide="highdicom")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "highdicom" in lines[0] and "thyrofast[sr]" in lines[0], r.stderr
