"""torch on CUDA (FP16, channels_last, CUDA graphs) and the CUDA end-to-end path.

Runs only where torch sees a CUDA GPU and the preprocessing core was built with
CUDA; skipped (with the reason) everywhere else.
"""
from __future__ import annotations

import numpy as np
import pytest

import _bundle_fixture as fx  # noqa: E402  (tests/ is on pythonpath)


def _need_cuda(core: bool = False):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    if core:
        from thyrofast.preprocessing import build_info

        if not build_info().get("cuda"):
            pytest.skip("the preprocessing core was built without CUDA")


@pytest.fixture
def bundle_dir(tmp_path_factory):
    _need_cuda()  # before building the bundle: skipping costs nothing
    return fx.get_bundle(tmp_path_factory)


def test_ieee_fp32_context_sets_and_restores_the_tf32_flags():
    # fp32 engines compute in IEEE FP32: cuDNN's TF32 default moved an H200's
    # probabilities by 2.6e-3 from the CPU's (device check of 2026-12-04).
    import torch

    from thyrofast.engines.torch_engine import ieee_fp32

    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, mm.fp32_precision)
    conv.fp32_precision = "tf32"
    try:
        with ieee_fp32():
            assert (conv.fp32_precision, mm.fp32_precision) == ("ieee", "ieee")
        assert conv.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, mm.fp32_precision = before


@pytest.mark.cuda
@pytest.mark.parametrize("precision,graphs", [("fp16", True), ("fp32", True), ("fp16", False)])
def test_torch_cuda_agrees_with_cpu(bundle_dir, precision, graphs):
    _need_cuda()
    from thyrofast.bundle import Bundle
    from thyrofast.engines import engine_class

    bundle = Bundle.load(bundle_dir)
    frames, labels, _ = fx.phantom(200, seed=9)
    x = fx.reference_preprocess(frames)
    ref = engine_class("torch").from_bundle(bundle, precision="fp32", device="cpu", max_batch=200).run(x)
    eng = engine_class("torch").from_bundle(bundle, precision=precision, device="cuda", max_batch=64,
                                            cuda_graphs=graphs)
    for batch in (1, 7, 64):  # each batch size gets its own captured graph
        y = np.concatenate([eng.run(x[i:i + batch]) for i in range(0, 64, batch)])
        assert (y.argmax(1) == ref[: len(y)].argmax(1)).mean() >= 0.995
        if precision == "fp32":
            np.testing.assert_allclose(y, ref[: len(y)], atol=1e-3)
    # replaying a graph after new data is written into its input buffer
    buf = eng.input_buffer(7)
    import torch

    buf.copy_(torch.from_numpy(x[100:107]).to(buf.device, buf.dtype))
    assert (eng.run(buf).argmax(1) == ref[100:107].argmax(1)).all()


@pytest.mark.cuda
def test_classifier_cuda_end_to_end(bundle_dir):
    _need_cuda(core=True)
    from thyrofast.classifier import Classifier

    frames, labels, _ = fx.phantom(64, seed=10)
    gpu = Classifier.load(bundle_dir, backend="torch", device="cuda", precision="fp16", max_batch=16)
    cpu = Classifier.load(bundle_dir, backend="onnxruntime", precision="fp32")
    pg, pc = np.asarray(gpu.predict(frames)), np.asarray(cpu.predict(frames))
    assert (pg.argmax(1) == pc.argmax(1)).mean() >= 0.995
    assert np.abs(pg - pc).max() < 0.05
    assert gpu.provenance["device"] == "cuda" and gpu.provenance["precision"] == "fp16"
    single = np.asarray(gpu.predict(frames[0]))  # batch 1 through its CUDA graph
    np.testing.assert_allclose(single, pg[:1], atol=1e-2)
    maps = gpu.saliency(frames[:2])
    assert maps[0].shape == frames[0].shape
