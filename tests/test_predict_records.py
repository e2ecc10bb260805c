"""Batch prediction: one record per input, atomic appends, resume, errors, full disk."""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyrofast import predict as pr
from thyrofast.errors import InputError
from thyrofast.io import hash_patient_id
from thyrofast.predict import OutputError, RecordWriter, expand_inputs, predict_files

CLASSES = ("BTN", "NMTN", "MMTN")


class FakeClassifier:
    """Deterministic stand-in: probabilities from the frame's mean gray level."""

    classes = CLASSES
    provenance = {"thyrofast": "test", "bundle_sha256": "0" * 64, "backend": "fake", "precision": "fp32",
                  "device": "cpu"}

    def __init__(self, fail_after: int | None = None, refuse_wider_than: int | None = None):
        self.refuse_wider_than = refuse_wider_than
        self.calls = 0
        self.frames_seen = 0
        self.fail_after = fail_after

    def predict(self, frames):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.refuse_wider_than and any(f.shape[1] > self.refuse_wider_than for f in frames):
            raise ValueError("frame too wide for this model")
        self.frames_seen += len(frames)
        m = np.array([float(np.mean(f)) / 255 for f in frames])
        logits = np.stack([1 - m, m, 0.5 * np.ones_like(m)], 1) * 4
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def save_saliency(self, frames, directory, names):
        Path(directory).mkdir(parents=True, exist_ok=True)
        out = []
        for f, n in zip(frames, names):
            p = Path(directory) / f"{n}.png"
            Image.fromarray(np.asarray(f, np.uint8)).save(p)
            out.append(p)
        return out


def make_inputs(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        a = np.full((12, 16), (20 + 37 * i) % 256, np.uint8)
        a[0, 0] = i  # distinct content for every input
        if i % 2:
            p = folder / f"img{i:02d}.png"
            Image.fromarray(a).save(p)
        else:
            p = folder / f"img{i:02d}.npy"
            np.save(p, a)
        paths.append(p)
    return paths


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def image_records(path: Path) -> list[dict]:
    return [r for r in read_jsonl(path) if r["kind"] == "image"]


def test_one_ok_record_per_input_with_contract_fields(tmp_path):
    make_inputs(tmp_path / "in")
    out = tmp_path / "res.jsonl"
    s = predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    recs = image_records(out)
    assert (s.n_ok, s.n_error, s.n_frames) == (6, 0, 6) and len(recs) == 6
    assert len({r["sha256"] for r in recs}) == 6
    r = recs[0]
    assert list(r) == ["kind", "input", "sha256", "frame_index", "pane", "patient_id", "status", "probs", "pred",
                       "decision", "provenance"]
    assert r["status"] == "ok" and r["frame_index"] == 0 and r["pane"] is None and r["patient_id"] is None
    assert set(r["probs"]) == set(CLASSES) and abs(sum(r["probs"].values()) - 1) < 1e-9
    assert r["pred"] == max(r["probs"], key=r["probs"].get)
    assert r["provenance"] == FakeClassifier.provenance


def test_errors_get_one_record_each_with_input_error_codes(tmp_path):
    make_inputs(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    np.save(tmp_path / "in" / "float.npy", np.zeros((4, 4), np.float32))
    np.save(tmp_path / "in" / "empty.npy", np.zeros((0, 4, 4), np.uint8))
    missing = tmp_path / "nope.png"
    out = tmp_path / "res.jsonl"
    s = predict_files(FakeClassifier(), [tmp_path / "in", missing], out, progress=False)
    recs = {Path(r["input"]).name: r for r in image_records(out)}
    assert len(recs) == 6 and (s.n_ok, s.n_error) == (2, 4)
    assert recs["broken.png"]["error"]["code"] == "unreadable"
    assert recs["float.npy"]["error"]["code"] == "unsupported_format"
    assert recs["empty.npy"]["error"]["code"] == "empty"
    assert recs["nope.png"]["error"]["code"] == "unreadable" and recs["nope.png"]["sha256"] is None
    for r in recs.values():
        if r["status"] == "error":
            assert "probs" not in r and r["error"]["message"]
    # a second run records nothing new and still reports the earlier failures
    s2 = predict_files(FakeClassifier(), [tmp_path / "in", missing], out, progress=False)
    assert len(image_records(out)) == 6 and s2.n_skipped == 6 and s2.n_error_recorded == 4


def test_a_frame_the_pipeline_refuses_fails_alone(tmp_path):
    make_inputs(tmp_path / "in", 5)
    np.save(tmp_path / "in" / "img02.npy", np.zeros((12, 99), np.uint8))  # replaces one input
    out = tmp_path / "res.jsonl"
    s = predict_files(FakeClassifier(refuse_wider_than=50), [tmp_path / "in"], out, batch_frames=8,
                      progress=False)
    recs = {Path(r["input"]).name: r for r in image_records(out)}
    assert len(recs) == 5 and (s.n_ok, s.n_error) == (4, 1)
    assert recs["img02.npy"]["error"]["code"] == "unsupported_format"
    assert "too wide" in recs["img02.npy"]["error"]["message"]


def test_resume_after_a_crash_skips_recorded_inputs(tmp_path):
    make_inputs(tmp_path / "in", 10)
    out = tmp_path / "res.jsonl"
    with pytest.raises(RuntimeError, match="simulated"):
        predict_files(FakeClassifier(fail_after=2), [tmp_path / "in"], out, batch_frames=2, progress=False)
    assert len(image_records(out)) == 4  # two batches of two made it
    clf = FakeClassifier()
    s = predict_files(clf, [tmp_path / "in"], out, batch_frames=2, progress=False)
    assert s.n_skipped == 4 and s.n_ok == 6 and clf.frames_seen == 6
    recs = image_records(out)
    assert len(recs) == 10 and len({r["sha256"] for r in recs}) == 10
    # the result equals an uninterrupted run's
    ref = tmp_path / "ref.jsonl"
    predict_files(FakeClassifier(), [tmp_path / "in"], ref, batch_frames=2, progress=False)
    assert sorted(map(json.dumps, image_records(ref))) == sorted(map(json.dumps, recs))


def test_trailing_partial_line_is_truncated_on_resume(tmp_path):
    make_inputs(tmp_path / "in", 3)
    out = tmp_path / "res.jsonl"
    predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    w = RecordWriter(out)
    assert w.truncated_bytes == len(lines[2]) // 2 and len(w.records) == 2
    assert out.read_text() == "".join(lines[:2])  # cut on open, before anything is appended
    w.close()
    predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    recs = image_records(out)
    assert len(recs) == 3 and len({r["sha256"] for r in recs}) == 3


def test_garbage_in_the_middle_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "res.jsonl"
    out.write_text('{"kind": "image"}\nnot json\n')
    with pytest.raises(OutputError, match="not a JSON record"):
        RecordWriter(out)


def test_identical_files_at_different_paths_each_get_a_record(tmp_path):
    # two patients' images may be byte-identical: neither may go missing
    p = make_inputs(tmp_path / "in", 1)[0]
    dup = tmp_path / "in" / "copy.npy"
    dup.write_bytes(p.read_bytes())
    out = tmp_path / "res.jsonl"
    s = predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    recs = image_records(out)
    assert len(recs) == 2 and s.n_skipped == 0 and s.n_ok == 2
    assert {r["input"] for r in recs} == {str(p), str(dup)} and len({r["sha256"] for r in recs}) == 1
    # the same path given twice is still one input
    s = predict_files(FakeClassifier(), [p, p], tmp_path / "twice.jsonl", progress=False)
    assert s.n_ok == 1 and s.n_skipped == 1
    # and a resume skips both
    s = predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    assert s.n_skipped == 2 and len(image_records(out)) == 2


def test_manifest_patients_and_csv_output(tmp_path):
    paths = make_inputs(tmp_path / "in", 4)
    man = tmp_path / "in" / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient_id", "label"])
        for i, p in enumerate(paths):
            w.writerow([p.name, "A" if i < 3 else "B", "BTN"])
    out = tmp_path / "res.csv"
    s = predict_files(FakeClassifier(), [man], out, progress=False)
    rows = read_csv(out)
    assert tuple(rows[0]) == pr.CSV_FIELDS
    imgs = [r for r in rows if r["kind"] == "image"]
    pats = {r["patient_id"]: r for r in rows if r["kind"] == "patient"}
    a, b = hash_patient_id("A"), hash_patient_id("B")  # records carry pseudonyms only
    assert len(imgs) == 4 and set(pats) == {a, b} and s.n_patients == 2
    assert pats[a]["n_images"] == "3"
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in imgs if r["patient_id"] == a])
    g = np.exp(np.log(probs).mean(0))
    np.testing.assert_allclose([float(pats[a][f"prob_{c}"]) for c in CLASSES], g / g.sum(), rtol=1e-9)
    # resuming a CSV reads it back: nothing new, no duplicate patient records
    predict_files(FakeClassifier(), [man], out, progress=False)
    assert len(read_csv(out)) == len(rows)


def test_adding_images_appends_a_newer_patient_record(tmp_path):
    paths = make_inputs(tmp_path / "in", 3)
    man = tmp_path / "m.csv"
    man.write_text("path,patient_id\n" + "".join(f"{p},P\n" for p in paths[:2]))
    out = tmp_path / "r.jsonl"
    predict_files(FakeClassifier(), [man], out, progress=False)
    man.write_text("path,patient_id\n" + "".join(f"{p},P\n" for p in paths))
    predict_files(FakeClassifier(), [man], out, progress=False)
    pats = [r for r in read_jsonl(out) if r["kind"] == "patient"]
    assert [p["n_images"] for p in pats] == [2, 3]  # the last one wins


def test_bad_manifest(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("file,patient\nx.png,1\n")
    with pytest.raises(pr.InputError) as e:
        expand_inputs([man])
    assert e.value.code == "bad_manifest"


def test_full_disk_rolls_back_and_says_so(tmp_path, monkeypatch):
    make_inputs(tmp_path / "in", 5)
    out = tmp_path / "res.jsonl"
    real_write = os.write
    budget = {"left": 3}

    def flaky_write(fd, data):
        if fd == writer_fd["fd"]:
            budget["left"] -= 1
            if budget["left"] < 0:
                real_write(fd, bytes(data)[:17])  # a partial record hits the disk, then ENOSPC
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    writer_fd = {"fd": None}
    real_init = RecordWriter.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        writer_fd["fd"] = self._fd

    monkeypatch.setattr(RecordWriter, "__init__", init)
    monkeypatch.setattr(pr.os, "write", flaky_write)
    with pytest.raises(OutputError, match="no space left on the device.*consistent.*resume"):
        predict_files(FakeClassifier(), [tmp_path / "in"], out, batch_frames=1, progress=False)
    monkeypatch.undo()
    text = out.read_text()
    assert text.endswith("\n") and len(image_records(out)) == 3  # whole records only
    predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)
    assert len(image_records(out)) == 5


def test_saliency_files_are_referenced(tmp_path):
    make_inputs(tmp_path / "in", 2)
    out = tmp_path / "res.jsonl"
    predict_files(FakeClassifier(), [tmp_path / "in"], out, saliency_dir=tmp_path / "sal", progress=False)
    for r in image_records(out):
        assert Path(r["saliency"]).is_file() and Path(r["saliency"]).name.startswith(r["sha256"][:16])
    assert not [p for p in (tmp_path / "sal").iterdir() if p.name.startswith(".")]


def test_folder_walk_skips_hidden_and_unknown_files_but_finds_dicom(tmp_path):
    d = tmp_path / "in"
    make_inputs(d, 2)
    (d / ".hidden.png").write_bytes(b"x")
    (d / "notes.txt").write_text("hi")
    (d / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    names = [Path(i.path).name for i in expand_inputs([d])]
    assert names == ["IM0001", "img00.npy", "img01.png"]


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    sys.path.insert(0, {root!r})
    from thyrofast.predict import predict_files
    class Slow:
        classes = ("BTN", "NMTN", "MMTN")
        provenance = {{"thyrofast": "t", "bundle_sha256": "0", "backend": "fake", "precision": "fp32", "device": "cpu"}}
        def predict(self, frames):
            time.sleep(0.01)
            return np.full((len(frames), 3), 1 / 3)
    predict_files(Slow(), [sys.argv[1]], sys.argv[2], batch_frames=1, progress=False)
""")


def test_sigkill_at_random_points_then_resume(tmp_path):
    d = tmp_path / "in"
    make_inputs(d, 40)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    out = tmp_path / "res.jsonl"
    rng = np.random.default_rng(7)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(d), str(out)])
        time.sleep(float(rng.uniform(0.3, 1.2)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, str(script), str(d), str(out)], check=True)
    recs = image_records(out)
    assert len(recs) == 40 and len({r["sha256"] for r in recs}) == 40


class _Card:
    def __init__(self, crop, aggregation="mean_log_prob"):
        self.read_options = {"crop": crop}
        self.aggregation = aggregation


def test_files_are_read_with_the_bundles_crop_and_patients_get_its_rule(tmp_path):
    """A bundle trained on detected fields gets detected fields at prediction time too."""
    from thyrofast import aggregation as A

    rng = np.random.default_rng(0)
    frame = np.zeros((120, 160), np.uint8)                  # black margins around a bright field
    frame[20:100, 40:140] = rng.integers(150, 250, (80, 100))
    Image.fromarray(frame).save(tmp_path / "a.png")
    seen = {}
    for crop in ("none", "detect"):
        clf = FakeClassifier()
        clf.bundle = _Card(crop)
        predict_files(clf, [tmp_path / "a.png"], tmp_path / f"{crop}.jsonl", progress=False)
        seen[crop] = image_records(tmp_path / f"{crop}.jsonl")[0]["probs"]["NMTN"]
    field = FakeClassifier().predict([frame[20:100, 40:140]])[0, 1]
    whole = FakeClassifier().predict([frame])[0, 1]
    assert seen["detect"] == pytest.approx(field) and seen["none"] == pytest.approx(whole)
    assert field != pytest.approx(whole)
    # patient records follow the bundle's aggregation rule
    paths = make_inputs(tmp_path / "in", 6)
    ids = ["p1", "p1", "p1", "p2", "p2", "p2"]
    probs = FakeClassifier().predict([np.load(p) if p.suffix == ".npy" else np.asarray(Image.open(p))
                                      for p in paths])
    spec = A.fit_pooled_logistic(np.log(np.vstack([probs, probs[::-1]])), ids + ["q1", "q1", "q1", "q2", "q2", "q2"],
                                 [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0], l2=1.0)
    clf = FakeClassifier()
    clf.bundle = _Card("auto", spec)
    items = [pr.InputItem(str(p), patient_id=i) for p, i in zip(paths, ids)]
    predict_files(clf, items, tmp_path / "pat.jsonl", progress=False)
    pats = {r["patient_id"]: r for r in read_jsonl(tmp_path / "pat.jsonl") if r["kind"] == "patient"}
    want = A.aggregate(probs, ids, spec)
    for pid, (p, n) in want.items():
        assert pats[pid]["n_images"] == n
        assert [pats[pid]["probs"][c] for c in CLASSES] == pytest.approx(list(p), abs=1e-9)


def test_an_empty_folder_or_a_folder_as_output_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("not an image")
    for folder in ("empty", "text"):
        with pytest.raises(InputError, match="no image or DICOM files"):
            predict_files(FakeClassifier(), [tmp_path / folder], tmp_path / "r.jsonl", progress=False)
    make_inputs(tmp_path / "in", 1)
    with pytest.raises(OutputError, match="is a folder"):
        predict_files(FakeClassifier(), [tmp_path / "in"], tmp_path / "in", progress=False)


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_resume_refuses_another_model_and_reports_other_settings(tmp_path, ext):
    make_inputs(tmp_path / "in", 3)
    out = tmp_path / f"r.{ext}"
    predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False)

    class OtherPrecision(FakeClassifier):
        provenance = {**FakeClassifier.provenance, "precision": "fp16"}

    class OtherModel(FakeClassifier):
        provenance = {**FakeClassifier.provenance, "bundle_sha256": "1" * 64}

    make_inputs(tmp_path / "in2", 2)
    s = predict_files(OtherPrecision(), [tmp_path / "in", tmp_path / "in2"], out, progress=False)
    assert s.mixed_settings == {"precision": ["fp32"]} and s.n_skipped == 3
    before = out.read_bytes()
    with pytest.raises(OutputError, match="predictions of another model"):
        predict_files(OtherModel(), [tmp_path / "in"], out, progress=False)
    assert out.read_bytes() == before  # nothing written
    assert predict_files(FakeClassifier(), [tmp_path / "in"], out, progress=False).mixed_settings == {
        "precision": ["fp16"]}


def test_dicom_of_another_modality_is_an_error_record(tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    ct = pydicom_data.get_testdata_file("CT_small.dcm", download=False)
    us = pydicom_data.get_testdata_file("US1_UNCR.dcm", download=False)
    if not (ct and us):
        pytest.skip("pydicom's test files are not installed")
    out = tmp_path / "r.jsonl"
    s = predict_files(FakeClassifier(), [ct, us], out, progress=False)
    assert (s.n_ok, s.n_error) == (1, 1)
    err = next(r for r in image_records(out) if r["status"] == "error")
    assert err["input"] == ct and err["error"]["code"] == "unsupported_format"
    assert "Modality CT is not ultrasound" in err["error"]["message"]
