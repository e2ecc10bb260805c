"""A manifest row without ``frame_index`` means *every* frame of its file -- in train, predict and evaluate.

docs/contracts.md and :mod:`thyrofast.io.manifest` define it so; ``train`` used
to read such a row as frame 0 only.  One manifest with a 3-frame cine and a
still image, read by each of the three.
"""
from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
PIL_Image = pytest.importorskip("PIL.Image")

from thyrofast.io import Record, expand_frames, read_manifest  # noqa: E402

N = 3
LEVELS = [40, 110, 200]  # frame i is a flat field of LEVELS[i] with a bright square, so frames differ


def _frames() -> list[np.ndarray]:
    out = []
    for level in LEVELS:
        f = np.full((48, 64), level, np.uint8)
        f[10:20, 10:20] = 250
        out.append(f)
    return out


@pytest.fixture()
def cohort(tmp_path):
    from thyrofast.synth.dicom import write_us_dicom

    frames = _frames()
    cine = write_us_dicom(tmp_path / "cine.dcm", frames[0], patient_id="p1", region=(0, 0, 64, 48),
                          spacing_cm=0.01, hash_patient_id=False)
    ds = pydicom.dcmread(cine)
    ds.NumberOfFrames = N
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(cine, enforce_file_format=True)
    PIL_Image.fromarray(frames[1]).save(tmp_path / "still.png")
    PIL_Image.fromarray(frames[2]).save(tmp_path / "second.png")
    man = tmp_path / "manifest.csv"
    # cine: no frame_index (every frame); still: empty frame_index (every frame = its one);
    # a second row of the cine naming frame 2 explicitly stays one row
    man.write_text("path,patient_id,label,split,frame_index\n"
                   "cine.dcm,p1,BTN,train,\n"
                   "still.png,p2,MMTN,train,\n"
                   "second.png,p3,NMTN,train,0\n")
    return tmp_path, man


def test_the_manifest_keeps_a_missing_frame_index_as_none(cohort):
    _, man = cohort
    recs = read_manifest(man)
    assert [r.frame_index for r in recs] == [None, None, 0]
    assert [r.rel for r in recs] == ["cine.dcm", "still.png", "second.png"]


def test_expand_frames_makes_one_record_per_frame(cohort):
    _, man = cohort
    recs = expand_frames(read_manifest(man))
    assert [(r.rel, r.frame_index) for r in recs] == [("cine.dcm", 0), ("cine.dcm", 1), ("cine.dcm", 2),
                                                      ("still.png", 0), ("second.png", 0)]
    # a record naming its frame is kept as it is
    one = Record(recs[0].path, "p1", 0, frame_index=2)
    assert expand_frames([one]) == [one]


def test_train_reads_every_frame_of_a_row_without_frame_index(cohort):
    from thyrofast.train.data import decode_image
    from thyrofast.train.data import read_manifest as train_read_manifest

    _, man = cohort
    recs = train_read_manifest(man)
    assert [(r.rel, r.frame_index, r.label) for r in recs] == [
        ("cine.dcm", 0, 0), ("cine.dcm", 1, 0), ("cine.dcm", 2, 0), ("still.png", 0, 2), ("second.png", 0, 1)]
    means = [float(decode_image(r, read="none").mean()) for r in recs[:N]]
    want = [float(f.mean()) for f in _frames()]
    assert means == pytest.approx(want, abs=0.5)  # three different frames, not frame 0 three times


def test_predict_reads_every_frame_of_a_row_without_frame_index(cohort):
    from thyrofast.predict import expand_inputs, read_frames

    _, man = cohort
    items = expand_inputs([str(man)])
    assert [i.frame_index for i in items] == [None, None, 0]
    pairs, _, _ = read_frames(items[0].path, items[0].frame_index, read="none")
    assert [fi for fi, _ in pairs] == list(range(N))


def test_evaluate_predicts_every_frame_of_a_row_without_frame_index(cohort):
    from thyrofast.evaluate.core import predict_manifest
    from thyrofast.evaluate.inputs import load_labels
    from thyrofast.io import read

    _, man = cohort
    labels = load_labels(man)
    assert labels.frame_index == [None, None, 0]

    class Uniform:
        def predict(self, batch):
            return np.full((len(batch), 3), 1 / 3)

    recs = predict_manifest(Uniform(), labels, reader=read, progress=False)
    got = sorted((r["input"].rsplit("/", 1)[-1], r["frame_index"]) for r in recs if r["status"] == "ok")
    assert got == [("cine.dcm", 0), ("cine.dcm", 1), ("cine.dcm", 2), ("second.png", 0), ("still.png", 0)]
