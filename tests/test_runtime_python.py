"""Python on the C++ runtime (issue 26): ``Classifier.load(backend="openvino")`` runs frames
through ``thyrofast._runtime`` when the build has it, with the Python engine's numbers, and
``thyrofast.runtime.Stream`` keeps its queue bounded.  Skipped where this install has no
runtime (``thyrofast.build_info()["runtime"]`` says why); tests/test_runtime.py checks the
C++ library itself on every machine with cmake and the openvino wheel."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

import thyrofast
from thyrofast import runtime as rt

pytestmark = pytest.mark.skipif(not rt.available(), reason=f"no C++ runtime: {rt.status()['runtime_reason']}")


@pytest.fixture(scope="module")
def frames():
    import _bundle_fixture

    return np.ascontiguousarray(_bundle_fixture.phantom(40, seed=5)[0])


def test_openvino_backend_runs_on_the_runtime_with_the_python_engines_numbers(bundle_dir, frames):
    with thyrofast.Classifier.load(bundle_dir, backend="openvino", precision="fp32") as c, \
            thyrofast.Classifier.load(bundle_dir, backend="openvino", precision="fp32", runtime=False) as py:
        assert isinstance(c.engine, rt.RuntimeEngine) and not isinstance(py.engine, rt.RuntimeEngine)
        p, q = c.predict(frames), py.predict(frames)
        assert np.abs(np.asarray(p) - np.asarray(q)).max() <= 1e-5
        assert p.pred == q.pred and p.provenance == q.provenance
        # one frame, a list of frames of different sizes, a strided view, RGB
        assert np.abs(np.asarray(c.predict(frames[0])) - np.asarray(py.predict(frames[0]))).max() <= 1e-5
        mixed = [frames[1], frames[2][:100, :120], frames[3][::-1, ::2]]
        assert np.abs(np.asarray(c.predict(mixed)) - np.asarray(py.predict(mixed))).max() <= 1e-5
        rgb = np.repeat(frames[:4, ..., None], 3, axis=-1)
        assert np.abs(np.asarray(c.predict(rgb)) - np.asarray(py.predict(rgb))).max() <= 1e-5
        a, b = c.predict_patient(frames), py.predict_patient(frames)
        assert a.pred == b.pred and all(abs(a.probs[k] - b.probs[k]) <= 1e-5 for k in a.probs)
        with pytest.raises(TypeError):
            c.predict(frames.astype(np.float32))


def test_runtime_false_and_true(bundle_dir):
    with thyrofast.Classifier.load(bundle_dir, backend="openvino", runtime=True) as c:
        assert c.engine.runs_frames
    with pytest.raises(ValueError, match="runtime=True"):
        thyrofast.Classifier.load(bundle_dir, backend="onnxruntime", runtime=True)


def test_a_tampered_bundle_is_refused_by_the_runtime_with_the_python_code(bundle_dir, tmp_path):
    """The runtime re-reads and re-hashes what it loads: a file swapped after Python's check is refused."""
    from thyrofast.bundle import Bundle
    from thyrofast.errors import InputError

    t = tmp_path / "b"
    shutil.copytree(bundle_dir, t)
    bundle = Bundle.load(t)  # passes Python's check
    onnx = t / json.loads((t / "thyrofast.json").read_text())["artifacts"]["onnx_fp32"]["path"]
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 1
    onnx.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256") as exc:
        rt.RuntimeEngine(bundle, precision="fp32")
    assert exc.value.code == "unreadable"


def test_the_runtime_reads_a_card_with_mask_annotations(bundle_dir, tmp_path):
    """Issue 24: the card's read options may name mask_annotations (a boolean) for the C++ card check too."""
    from thyrofast import _runtime

    for value, ok in ((True, True), (False, True), ("yes", False), (1, False)):
        t = tmp_path / f"b-{value!r}"
        shutil.copytree(bundle_dir, t)
        card = json.loads((t / "thyrofast.json").read_text())
        card["read"] = {"crop": "detect", "mask_annotations": value}
        (t / "thyrofast.json").write_text(json.dumps(card))
        if ok:
            assert _runtime.Classifier(str(t), precision="fp32").classes == card["classes"]
        else:
            with pytest.raises(_runtime.RuntimeError, match="read") as exc:
                _runtime.Classifier(str(t), precision="fp32")
            assert exc.value.code == "unreadable"


def test_stream_queue_never_exceeds_capacity_and_counts_drops(bundle_dir, frames):
    with thyrofast.Classifier.load(bundle_dir, backend="openvino", threads=1) as c:
        h, w = frames.shape[1:]
        with rt.Stream(c, height=h, width=w, capacity=3, workers=2, smoothing=0.3) as s:
            for i in range(200):  # far faster than 2 workers classify
                s.push(frames[i % len(frames)])
            s.flush()
            st = s.stats()
            seq, dec, probs, lat = s.results()
            assert st["max_queue_depth"] <= 3 and s.capacity == 3
            assert st["pushed"] == 200 and st["processed"] + st["dropped"] == 200 and st["dropped"] > 0
            assert len(seq) == st["processed"] and np.all(np.diff(seq) > 0)
            assert np.allclose(probs.sum(axis=1), 1.0) and set(dec) <= {0, 1, 2}
            for i in range(20):  # paced: nothing dropped
                s.push(frames[i])
                s.flush()
            assert s.stats()["dropped"] == st["dropped"]
            assert s.stats()["p99_ms"] >= s.stats()["p50_ms"] > 0


def test_stream_smoothing_zero_gives_the_classifiers_probabilities(bundle_dir, frames):
    with thyrofast.Classifier.load(bundle_dir, backend="openvino", threads=1) as c:
        ref = np.asarray(c.predict(frames[:10]))
        with rt.Stream(c, height=frames.shape[1], width=frames.shape[2], capacity=16, workers=1) as s:
            for f in frames[:10]:
                s.push(f)
                time.sleep(0)
            s.flush()
            seq, _, probs, _ = s.results()
        assert list(seq) == list(range(10))
        assert np.abs(probs - ref).max() <= 1e-5


def test_build_info_says_whether_the_runtime_is_there():
    info = thyrofast.build_info()
    assert info["runtime"] is True and info["runtime_version"] == thyrofast.__version__


def test_bench_stream_reports_latency_and_drops(bundle_dir):
    """`thyrofast bench stream`'s measurement, shortened (60 frames at 120 fps) on the test bundle."""
    from thyrofast.bench import stream_bench

    res = stream_bench.run(bundle_dir, frames=60, fps=120.0, capacity=2)
    (row,) = res["rows"]
    assert row["frames"] == 60 and row["classified"] + row["dropped"] == 60
    assert row["max_queue_depth"] <= 2 and row["pass"] is True
    o = row["ours"]
    assert 0 < o["median_ms"] <= o["p99_ms"] <= o["p99.9_ms"] <= o["max_ms"]
    assert "p99.9" in stream_bench.format_stream(res)


def test_stream_smoothing_is_an_exponential_average_of_logits(bundle_dir, frames):
    """s_t = a s_(t-1) + (1 - a) z_t over delivered frames, then softmax(s_t / T): a float64 reference."""
    from thyrofast.classifier import softmax

    a = 0.6
    with thyrofast.Classifier.load(bundle_dir, backend="openvino", threads=1) as c:
        z = c.logits(frames[:12]).astype(np.float64)
        with rt.Stream(c, height=frames.shape[1], width=frames.shape[2], capacity=16, workers=2, smoothing=a) as s:
            for f in frames[:12]:
                s.push(f)
            s.flush()
            seq, _, probs, _ = s.results()
        assert list(seq) == list(range(12))  # nothing dropped: capacity 16
        ref, state = [], z[0]
        for t in range(12):
            state = z[0] if t == 0 else a * state + (1 - a) * z[t]
            ref.append(softmax(state[None], c.temperature)[0])
        assert np.abs(probs - np.array(ref)).max() <= 1e-5


def test_without_openvino_core_imports_and_build_info_says_runtime_absent():
    """_core never links OpenVINO: with the openvino package hidden (tests/_hide_optional) thyrofast
    imports, preprocesses, and build_info() reports the runtime absent with the reason."""
    import os
    import pathlib
    import subprocess
    import sys

    import thyrofast

    from conftest import REPO

    # the thyrofast under test (installed, or the dev tree with a built _core), not the bare source tree
    pkg_root = pathlib.Path(thyrofast.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "_hide_optional"), str(pkg_root)]),
           "THYROFAST_HIDE": "openvino"}
    code = ("import numpy as np, thyrofast; i = thyrofast.build_info(); "
            "x = thyrofast.preprocess(np.zeros((1, 32, 32), np.uint8), size=(8, 8)); "
            "print(i['runtime'], x.shape, i['runtime_reason'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO.parent))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("False (1, 1, 8, 8)") and "openvino" in res.stdout
