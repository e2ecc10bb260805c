"""TensorRT backend around a fake ``tensorrt`` module (TensorRT cannot be installed here).

What is checked: strongly typed network creation (no builder precision flags,
TensorRT 11 style), the optimization profile 1..max, the timing cache being
loaded and saved, which ONNX graph each precision builds from, engine-cache
keys under version/GPU changes, hash checks before deserialization, and the
run path (shape, stream, buffers).  The real-GPU test at the end runs only
where TensorRT and a GPU exist.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys

import numpy as np
import pytest

from thyrofast.engines import tensorrt_engine as te
from thyrofast.engines.engine_cache import EngineCache, EngineCacheError

import _bundle_fixture as _fixture  # noqa: E402
import _fake_tensorrt as fake  # noqa: E402  (tests/ is on pythonpath)

GPU = ("NVIDIA H100 80GB HBM3", "9.0")
SHAPE = (1, 16, 16)


@pytest.fixture
def trt(monkeypatch):
    mod = fake.make()
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def make_engine(onnx=b"onnx-graph-A", cache=None, tmp_path=None, **kw):
    cache = cache or EngineCache(tmp_path / "cache")
    return te.TensorRTEngine(onnx, input_shape=SHAPE, precision="fp16", max_batch=8, cache=cache,
                             device_arrays=fake.HostArrays(), gpu=GPU, **kw)


def test_build_is_strongly_typed_with_profile_and_timing_cache(trt, tmp_path):
    eng = make_engine(tmp_path=tmp_path)
    assert eng.built
    assert ("create_network", 1 << 0) in trt.calls  # 1 << STRONGLY_TYPED
    assert not [c for c in trt.calls if c[0] == "set_flag"], "precision must come from the graph, not flags"
    assert ("set_shape", "input", (1, *SHAPE), (1, *SHAPE), (8, *SHAPE)) in trt.calls
    assert ("create_timing_cache", b"") in trt.calls and ("set_timing_cache", False) in trt.calls
    tc = eng.cache.read_timing_cache(eng.key.trt_version, *GPU)
    assert tc == b"+timed"
    # the saved timing cache feeds the next build (another graph, same TensorRT + GPU)
    trt.calls.clear()
    make_engine(onnx=b"onnx-graph-B", cache=eng.cache)
    assert ("create_timing_cache", b"+timed") in trt.calls
    # host code inside engines is not allowed at deserialization
    assert all(allowed is False for _, allowed in trt.deserialized)


def test_tensorrt11_without_strongly_typed_flag(monkeypatch, tmp_path):
    mod = fake.make(version="11.0.0.1", strongly_typed_flag=False)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    eng = make_engine(tmp_path=tmp_path)
    assert ("create_network", 0) in mod.calls  # 11.x: always strongly typed, flag gone
    assert eng.key.trt_version == "11.0.0.1"


def test_parse_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake.make(fail_parse=True))
    with pytest.raises(RuntimeError, match="could not parse"):
        make_engine(tmp_path=tmp_path)


def test_cache_hit_skips_build_and_version_or_gpu_change_rebuilds(trt, tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "cache")
    a = make_engine(cache=cache)
    b = make_engine(cache=cache)
    assert a.built and not b.built and a.key == b.key
    assert sum(c == ("build",) for c in trt.calls) == 1
    # new TensorRT version: another key, another build
    newer = fake.make(version="10.10.0.1")
    monkeypatch.setitem(sys.modules, "tensorrt", newer)
    c = make_engine(cache=cache)
    assert c.built and c.key.digest != a.key.digest
    # other GPU
    d = te.TensorRTEngine(b"onnx-graph-A", input_shape=SHAPE, max_batch=8, cache=cache,
                          device_arrays=fake.HostArrays(), gpu=("NVIDIA L4", "8.9"))
    assert d.built and d.key.digest not in {a.key.digest, c.key.digest}
    # other profile (max batch) too
    e = te.TensorRTEngine(b"onnx-graph-A", input_shape=SHAPE, max_batch=16, cache=cache,
                          device_arrays=fake.HostArrays(), gpu=GPU)
    assert e.built


def test_corrupted_engine_is_rebuilt_before_deserialization(trt, tmp_path):
    cache = EngineCache(tmp_path / "cache")
    a = make_engine(cache=cache)
    good = cache.engine_path(a.key).read_bytes()
    cache.engine_path(a.key).write_bytes(b"PLAN|evil" + b"\0" * (len(good) - 9))
    trt.deserialized.clear()
    b = make_engine(cache=cache)
    assert b.built  # rebuilt, not loaded
    assert [d for d, _ in trt.deserialized] == [good]  # only verified bytes reach the runtime


def test_corrupted_engine_refused_under_refuse_policy(trt, tmp_path):
    cache = EngineCache(tmp_path / "cache")
    a = make_engine(cache=cache)
    p = cache.engine_path(a.key)
    p.write_bytes(p.read_bytes()[:-1] + b"X")
    trt.deserialized.clear()
    with pytest.raises(EngineCacheError):
        make_engine(cache=EngineCache(tmp_path / "cache", on_mismatch="refuse"))
    assert trt.deserialized == []


def test_run_uses_stream_profile_shape_and_owned_buffers(trt, tmp_path):
    eng = make_engine(tmp_path=tmp_path)
    x = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    y = eng.run(x)
    m = x.reshape(3, -1).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(y, np.stack([m, -m, 2 * m], 1), rtol=1e-6)
    assert ("execute_async_v3", fake.HostArrays.stream_handle, (3, *SHAPE)) in trt.calls
    # zero-copy path: write into the engine's buffer, run on it
    buf = eng.input_buffer(2)
    buf[:] = 1.0
    np.testing.assert_allclose(eng.run(buf), [[1, -1, 2]] * 2)
    np.testing.assert_allclose(eng.run(batch=2), [[1, -1, 2]] * 2)
    with pytest.raises(ValueError, match="max_batch"):
        eng.run(np.zeros((9, *SHAPE), np.float32))
    with pytest.raises(ValueError, match="shape"):
        eng.run(np.zeros((1, 3, 16, 16), np.float32))


def test_device_must_be_cuda(trt, tmp_path):
    with pytest.raises(ValueError, match="cuda"):
        te.TensorRTEngine(b"g", input_shape=SHAPE, device="cpu", cache=EngineCache(tmp_path), gpu=GPU,
                          device_arrays=fake.HostArrays())






@pytest.mark.parametrize("precision,artifact", [("fp16", "model.fp16.onnx"), ("int8", "model.int8.qdq-s8s8.onnx"),
                                                ("fp32", "model.onnx")])
def test_from_bundle_builds_the_graph_for_the_precision(trt, tmp_path, bundle_dir, precision, artifact):
    from thyrofast.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    eng = te.TensorRTEngine.from_bundle(bundle, precision=precision, cache=EngineCache(tmp_path / "c"),
                                        device_arrays=fake.HostArrays(), gpu=GPU, max_batch=4)
    expected = hashlib.sha256((bundle_dir / artifact).read_bytes()).hexdigest()
    assert eng.key.onnx_sha256 == expected
    assert ("parse", expected) in trt.calls
    assert eng.input_shape == (1, 64, 64) and eng.precision == precision


def test_from_bundle_refuses_tampered_graph(trt, tmp_path, bundle_dir):
    import shutil

    from thyrofast.bundle import Bundle

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    bundle = Bundle.load(copy)
    p = copy / "model.fp16.onnx"
    data = bytearray(p.read_bytes())
    data[-10] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(Exception, match="SHA-256|modified"):
        te.TensorRTEngine.from_bundle(bundle, precision="fp16", cache=EngineCache(tmp_path / "c"),
                                      device_arrays=fake.HostArrays(), gpu=GPU)
    assert not [c for c in trt.calls if c[0] == "parse"]


# -- real TensorRT on a real GPU -----------------------------------------------------------------


def _real_tensorrt_and_gpu() -> str | None:
    if "tensorrt" in sys.modules and getattr(sys.modules["tensorrt"], "calls", None) is not None:
        return "fake tensorrt in sys.modules"
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    try:
        te.gpu_info()
    except Exception as exc:  # noqa: BLE001
        return f"no CUDA GPU ({exc})"
    return None


@pytest.mark.tensorrt
def test_tensorrt_gpu_fp16_agrees_with_onnxruntime(tmp_path, bundle_dir):
    why = _real_tensorrt_and_gpu()
    if why:
        pytest.skip(why)
    from thyrofast.bundle import Bundle
    from thyrofast.engines.onnxruntime_engine import OnnxRuntimeEngine

    bundle = Bundle.load(bundle_dir)
    frames, labels, _ = _fixture.phantom(200, seed=5)
    x = _fixture.reference_preprocess(frames)
    ref = OnnxRuntimeEngine.from_bundle(bundle, precision="fp32", max_batch=200).run(x)
    cache = EngineCache(tmp_path / "trt")
    for precision, min_agree in (("fp16", 0.995), ("int8", 0.98)):
        eng = te.TensorRTEngine.from_bundle(bundle, precision=precision, cache=cache, max_batch=64)
        y = np.concatenate([eng.run(x[i:i + 64]) for i in range(0, len(x), 64)])
        agree = (y.argmax(1) == ref.argmax(1)).mean()
        assert agree >= min_agree, (precision, agree)
        again = te.TensorRTEngine.from_bundle(bundle, precision=precision, cache=cache, max_batch=64)
        assert not again.built  # served from the verified cache
