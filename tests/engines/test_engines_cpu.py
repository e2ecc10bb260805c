"""CPU engines (ONNX Runtime, OpenVINO, PyTorch) on a trained bundle: agreement, buffers, errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from thyrofast.engines import engine_class

import _bundle_fixture as fx  # noqa: E402  (tests/ is on pythonpath)


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    from thyrofast.bundle import Bundle

    return Bundle.load(bundle_dir)


@pytest.fixture(scope="module")
def inputs():
    """Phantoms plus harder cases (faint lesions, pure speckle) so predictions are not all easy."""
    frames, labels, _ = fx.phantom(150, seed=21)
    rng = np.random.default_rng(3)
    faint = (0.35 * frames[:50].astype(np.float32) + 0.65 * 110).astype(np.uint8)
    speckle = np.clip(110 + 25 * rng.standard_normal((30, *fx.FRAME_HW)), 0, 255).astype(np.uint8)
    x = fx.reference_preprocess(np.concatenate([frames, faint, speckle]))
    return x, labels


@pytest.fixture(scope="module")
def reference(bundle, inputs):
    eng = engine_class("torch").from_bundle(bundle, precision="fp32", device="cpu", max_batch=len(inputs[0]))
    return eng.run(inputs[0])


def _probs(logits, t):
    z = logits / t
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


CASES = [("onnxruntime", "fp32", 0.995), ("onnxruntime", "fp16", 0.995), ("onnxruntime", "int8", 0.98),
         ("openvino", "fp32", 0.995), ("openvino", "int8", 0.98)]


@pytest.mark.parametrize("backend,precision,min_agree", CASES, ids=[f"{b}-{p}" for b, p, _ in CASES])
def test_backend_agrees_with_torch_fp32(bundle, inputs, reference, backend, precision, min_agree, record_property):
    x, labels = inputs
    eng = engine_class(backend).from_bundle(bundle, precision=precision, device="cpu", threads=1, max_batch=64)
    y = np.concatenate([eng.run(x[i:i + 64]) for i in range(0, len(x), 64)])
    assert y.shape == reference.shape and y.dtype == np.float32
    agree = float((y.argmax(1) == reference.argmax(1)).mean())
    max_dp = float(np.abs(_probs(y, bundle.temperature) - _probs(reference, bundle.temperature)).max())
    record_property("top1_agreement", agree)
    record_property("max_prob_diff", max_dp)
    print(f"{backend}/{precision}: top-1 agreement {agree:.4f}, max |dp| {max_dp:.4g}")
    assert agree >= min_agree
    if precision == "fp32":
        assert max_dp < 1e-4
    # the model is trained: on the clean phantoms it is right, whatever the backend
    assert (y[: len(labels)].argmax(1) == labels).mean() >= 0.95
    # and the harder inputs make it use more than one class
    assert len(np.unique(y.argmax(1))) == 3


def test_reference_predictions_are_not_trivial(reference):
    p = _probs(reference, 1.0)
    assert p.max(1).min() < 0.9  # some inputs are genuinely uncertain


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_input_buffer_is_zero_copy_and_batches_are_independent(bundle, inputs, backend):
    x = inputs[0][:5]
    eng = engine_class(backend).from_bundle(bundle, precision="fp32", device="cpu", max_batch=8, threads=1)
    full = eng.run(x)
    buf = eng.input_buffer(5)
    assert buf.shape == (5, 1, 64, 64) and buf.dtype == np.float32
    buf[:] = x
    assert eng.input_buffer(5) is buf  # preallocated once per batch size
    np.testing.assert_allclose(eng.run(buf), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eng.run(batch=5), full, rtol=1e-5, atol=1e-5)
    for i in range(5):  # batch 1 == row of batch 5
        np.testing.assert_allclose(eng.run(x[i:i + 1])[0], full[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_bad_inputs_are_rejected_clearly(bundle, backend):
    eng = engine_class(backend).from_bundle(bundle, precision="fp32", device="cpu", max_batch=4)
    with pytest.raises(ValueError, match="shape"):
        eng.run(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="max_batch"):
        eng.run(np.zeros((5, 1, 64, 64), np.float32))
    with pytest.raises(ValueError, match=">= 1"):
        eng.input_buffer(0)
    with pytest.raises(TypeError):
        eng.run()


def test_unsupported_combinations(bundle):
    with pytest.raises(ValueError, match="does not support"):
        engine_class("openvino").from_bundle(bundle, precision="fp16")
    with pytest.raises(ValueError, match="cpu"):
        engine_class("onnxruntime").from_bundle(bundle, precision="fp32", device="cuda")
    with pytest.raises(ValueError, match="fp16 needs"):
        engine_class("torch").from_bundle(bundle, precision="fp16", device="cpu")


def test_plain_onnx_file_without_bundle(bundle_dir, inputs):
    from thyrofast.engines.onnxruntime_engine import OnnxRuntimeEngine
    from thyrofast.engines.openvino_engine import OpenVinoEngine

    x = inputs[0][:4]
    a = OnnxRuntimeEngine(bundle_dir / "model.onnx", max_batch=4, threads=1)
    b = OpenVinoEngine(bundle_dir / "model.onnx", max_batch=4, threads=1)
    assert a.input_shape == b.input_shape == (1, 64, 64)
    np.testing.assert_allclose(a.run(x), b.run(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend,precision", [("onnxruntime", "int8"), ("openvino", "fp32"), ("torch", "fp32")])
def test_tampered_artifact_is_refused_before_loading(bundle_dir, tmp_path, backend, precision):
    from thyrofast.bundle import Bundle
    from thyrofast.engines.base import artifact_name

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    bundle = Bundle.load(copy)
    entry = bundle.manifest["artifacts"][artifact_name(backend, precision)]
    p = copy / entry["path"]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(Exception, match="SHA-256"):
        engine_class(backend).from_bundle(bundle, precision=precision, device="cpu")


def test_torch_module_engine_directly():
    import torch

    from thyrofast.engines.torch_engine import TorchEngine

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    eng = TorchEngine(net, input_shape=(3, 2, 2), max_batch=2)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(eng.run(x), want, rtol=1e-6)
    assert repr(eng).startswith("TorchEngine(backend='torch'")


def test_load_engine_resolves_auto(bundle):
    from thyrofast.engines import load_engine
    from thyrofast.engines.select import resolve

    want = resolve(bundle.manifest["artifacts"])
    eng = load_engine(bundle, max_batch=2, threads=1)
    assert (eng.backend, eng.device, eng.precision) == (want.backend, want.device, want.precision)
    assert eng.run(np.zeros((2, 1, 64, 64), np.float32)).shape == (2, 3)
