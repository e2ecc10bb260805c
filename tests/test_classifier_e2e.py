"""Classifier: frames -> calibrated probabilities with provenance, patient aggregation, backends."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from thyrofast.classifier import Classifier, Prediction, aggregate_patients, softmax

import _bundle_fixture as fx  # noqa: E402  (tests/ is on pythonpath)


@pytest.fixture(scope="module")
def clf(bundle_dir):
    return Classifier.load(bundle_dir, backend="onnxruntime", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def data():
    return fx.phantom(120, seed=33)


def test_predict_shape_probabilities_and_accuracy(clf, data):
    frames, labels, _ = data
    p = clf.predict(frames)
    assert isinstance(p, Prediction) and p.shape == (120, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert (np.asarray(p).argmax(1) == labels).mean() >= 0.95
    assert p.pred[:5] == [("BTN", "NMTN", "MMTN")[i] for i in np.asarray(p).argmax(1)[:5]]
    assert p.classes == ("BTN", "NMTN", "MMTN")


def test_temperature_is_applied(clf, data, bundle_dir):
    frames = data[0][:8]
    t = json.loads((bundle_dir / "thyrofast.json").read_text())["temperature"]
    assert t == fx.TEMPERATURE != 1.0
    logits = clf.logits(frames)
    np.testing.assert_allclose(clf.predict(frames), softmax(logits, t), rtol=1e-12)
    assert not np.allclose(clf.predict(frames), softmax(logits, 1.0))
    # the logits are the engine's on the bundle's own preprocessing
    np.testing.assert_allclose(logits, clf.engine.run(fx.reference_preprocess(frames)), rtol=1e-5, atol=1e-5)


def test_provenance(clf, bundle_dir):
    import thyrofast

    p = clf.predict(fx.phantom(2, seed=1)[0])
    want_sha = hashlib.sha256((bundle_dir / "thyrofast.json").read_bytes()).hexdigest()
    assert p.provenance == {"thyrofast": thyrofast.__version__, "bundle_sha256": want_sha,
                            "backend": "onnxruntime", "precision": "fp32", "device": "cpu"}
    assert p[:1].provenance == p.provenance  # slices keep it


def test_frame_layouts_and_sizes(clf, data):
    frames = data[0][:4]
    batch = clf.predict(frames)
    np.testing.assert_allclose(clf.predict(frames[0]), batch[:1], rtol=1e-6)  # (H, W)
    rgb = np.repeat(frames[1][..., None], 3, axis=2)
    np.testing.assert_allclose(clf.predict(rgb), batch[1:2], atol=1e-3)  # (H, W, 3)
    # a list of different sizes: each with its own preprocessing
    big = np.kron(frames[2], np.ones((2, 2), np.uint8))
    mixed = clf.predict([frames[0], big, frames[3]])
    np.testing.assert_allclose(mixed[[0, 2]], batch[[0, 3]], rtol=1e-5, atol=1e-7)
    assert mixed.pred[1] == batch.pred[2]
    # more frames than the engine's max batch are chunked
    many = np.concatenate([frames] * 12)  # 48 > max_batch 32
    np.testing.assert_allclose(clf.predict(many)[-4:], batch, rtol=1e-5, atol=1e-7)
    u16 = frames.astype(np.uint16) * 257
    np.testing.assert_allclose(clf.predict(u16), batch, atol=1e-4)
    with pytest.raises(TypeError):
        clf.predict(frames.astype(np.float32))


def test_predict_patient_mean_log_probability(clf, data):
    frames = data[0][:6]
    ids = ["p1", "p1", "p2", "p2", "p2", "p3"]
    per = np.asarray(clf.predict(frames))
    out = clf.predict_patient(frames, ids)
    assert list(out) == ["p1", "p2", "p3"]
    for pid, idx in (("p1", [0, 1]), ("p2", [2, 3, 4]), ("p3", [5])):
        g = np.exp(np.log(per[idx]).mean(0))
        want = g / g.sum()
        got = np.array([out[pid].probs[c] for c in ("BTN", "NMTN", "MMTN")])
        np.testing.assert_allclose(got, want, rtol=1e-9)
        assert out[pid].n_images == len(idx)
        assert out[pid].pred == ("BTN", "NMTN", "MMTN")[int(want.argmax())]
        assert out[pid].provenance["backend"] == "onnxruntime"
    single = clf.predict_patient(frames[:2])
    assert single.n_images == 2 and single.probs == out["p1"].probs


def test_predict_patient_and_predict_refuse_what_is_not_frames(clf, data):
    with pytest.raises(ValueError, match="at least one frame"):
        clf.predict_patient([])
    with pytest.raises(ValueError, match="2 patient ids for 3 frames"):
        clf.predict_patient(data[0][:3], ["a", "b"])
    with pytest.raises(TypeError, match="read files with thyrofast.read"):
        clf.predict("frame.png")


def test_aggregate_patients_rejects_mismatch():
    with pytest.raises(ValueError):
        aggregate_patients(np.ones((3, 3)) / 3, ["a", "b"])


def test_geometric_mean_is_not_outvoted_like_arithmetic():
    p = np.array([[0.98, 0.01, 0.01], [0.2, 0.4, 0.4], [0.2, 0.4, 0.4]])
    (agg, n), = aggregate_patients(p, ["x"] * 3).values()
    assert n == 3 and np.isclose(agg.sum(), 1)
    assert agg.argmax() == 0  # the arithmetic mean would say class 0 too but by less
    assert agg[0] > p[:, 0].mean()


@pytest.mark.parametrize("backend,precision", [("openvino", "int8"), ("onnxruntime", "int8"), ("torch", "fp32"),
                                               ("openvino", "fp32")])
def test_backends_agree_end_to_end(bundle_dir, clf, data, backend, precision):
    frames = data[0]
    ref = np.asarray(clf.predict(frames))
    other = Classifier.load(bundle_dir, backend=backend, precision=precision, threads=1)
    p = np.asarray(other.predict(frames))
    agree = (p.argmax(1) == ref.argmax(1)).mean()
    assert agree >= (0.98 if precision == "int8" else 0.995)
    if precision == "fp32":
        assert np.abs(p - ref).max() < 1e-4
    assert other.provenance["backend"] == backend and other.provenance["precision"] == precision


def test_auto_on_this_cpu_picks_int8(bundle_dir):
    c = Classifier.load(bundle_dir)  # no GPU here: fastest CPU INT8 backend
    assert (c.device, c.precision) == ("cpu", "int8")
    assert repr(c).startswith("Classifier(backend=")


def test_tampered_bundle_is_refused(bundle_dir, tmp_path):
    from thyrofast.errors import InputError

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    p = copy / "model.int8.qdq-u8s8.onnx"
    data = bytearray(p.read_bytes())
    data[100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        Classifier.load(copy)
