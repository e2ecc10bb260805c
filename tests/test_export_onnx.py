"""ONNX artifacts of a trained bundle: FP32 == PyTorch, strongly typed FP16, gated INT8 Q/DQ."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402

from thyrofast.bundle import Bundle  # noqa: E402
from thyrofast.export import INPUT_NAME, KEEP_FP32_OPS, OUTPUT_NAME, convert_fp16, int8_gate, onnx_logits  # noqa: E402


def _fixture():
    import _train_fixture  # tests/ is on pythonpath: one module, one cohort per session

    return _train_fixture


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path, manifest = _fixture().trained_bundle(tmp_path_factory)
    b = Bundle.load(path)
    from thyrofast.train.data import load_frames, read_manifest, split_records

    records = read_manifest(manifest)
    split = split_records(records)
    val, _ = load_frames(records, split.val, b.preprocess_params, progress=False)
    labels = np.array([records[i].label for i in split.val])
    return b, val.astype(np.float32), labels


def test_fp32_matches_pytorch(trained):
    b, val, _ = trained
    model = b.build_model()
    for batch in (1, 7, len(val)):  # dynamic batch
        x = val[:batch]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = onnx_logits(b.artifact_path("onnx_fp32"), x)
        assert got.shape == (batch, 3)
        assert np.abs(got - ref).max() <= 1e-4
    proto = onnx.load(b.artifact_path("onnx_fp32"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded


def test_fp16_strongly_typed_and_agrees(trained):
    b, val, _ = trained
    proto = onnx.load(b.artifact_path("onnx_fp16"))
    g = proto.graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 I/O
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_w = {n.input[1] for n in g.node if n.op_type == "Conv"}
    types = {t.name: t.data_type for t in g.initializer}
    assert conv_w and all(types[w] == TensorProto.FLOAT16 for w in conv_w)
    inferred = onnx.shape_inference.infer_shapes(proto)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    elem.update({i.name: i.data_type for i in g.initializer})
    elem.update({i.name: i.type.tensor_type.elem_type for i in g.input})
    kept = [n for n in g.node if n.op_type in KEEP_FP32_OPS]
    assert kept, "expected a reduction (global average pool) kept in FP32"
    for n in kept:
        assert elem[n.input[0]] == TensorProto.FLOAT, n.op_type
    head = [n for n in g.node if OUTPUT_NAME in n.output][0]
    assert all(elem[i] == TensorProto.FLOAT for i in head.input if i)
    assert any(n.op_type == "Cast" for n in g.node)
    l16 = onnx_logits(b.artifact_path("onnx_fp16"), val)
    l32 = onnx_logits(b.artifact_path("onnx_fp32"), val)
    agreement = np.mean(l16.argmax(1) == l32.argmax(1))
    assert agreement >= 0.99
    assert np.abs(l16 - l32).max() < 0.05 * max(1.0, np.abs(l32).max())


@pytest.mark.parametrize("name,act_type", [("onnx_int8_trt", TensorProto.INT8),
                                           ("onnx_int8_cpu", TensorProto.UINT8)])
def test_int8_graphs_run_and_pass_gate(trained, name, act_type):
    b, val, labels = trained
    assert b.has(name), b.manifest["training"].get("export")
    proto = onnx.load(b.artifact_path(name))
    g = proto.graph
    q = [n for n in g.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in g.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    inits = {t.name: t for t in g.initializer}
    zps = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in q if len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(inits[n.input[2]].data_type == act_type for n in q if n.input[2] in inits)
    if act_type == TensorProto.INT8:  # symmetric activations for TensorRT
        assert all(np.all(z == 0) for z in zps)
    # per-channel weights: a Conv weight's DequantizeLinear has a scale per output channel
    conv_w_dq = [n for n in dq if n.input[0] in inits and inits[n.input[0]].dims and len(inits[n.input[0]].dims) == 4]
    assert conv_w_dq
    for n in conv_w_dq:
        w = inits[n.input[0]]
        assert w.data_type == TensorProto.INT8
        assert onnx.numpy_helper.to_array(inits[n.input[1]]).shape == (w.dims[0],)
        assert np.all(onnx.numpy_helper.to_array(inits[n.input[2]]) == 0)  # symmetric weights
    l8 = onnx_logits(b.artifact_path(name), val)
    l32 = onnx_logits(b.artifact_path("onnx_fp32"), val)
    gate = int8_gate(l32, l8, labels)
    assert gate["passed"], gate
    assert gate["agreement"] >= 0.98 and gate["auc_fp32"] - gate["auc_int8"] <= 0.01
    entry = b.manifest["artifacts"][name]
    assert entry["precision"] == "int8" and entry["per_channel"] is True


def test_int8_gate_rejects():
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    good = np.eye(3)[labels] * 4 + rng.normal(0, 1, (300, 3))
    noisy = good + rng.normal(0, 3, (300, 3))
    assert int8_gate(good, good + 1e-3, labels)["passed"]
    bad = int8_gate(good, noisy, labels)
    assert not bad["passed"]
    assert "agreement" in bad["reason"] and "macro-AUC" in bad["reason"]


def test_failed_gate_keeps_fp32_and_removes_stale_int8(trained, tmp_path, monkeypatch):
    import shutil

    import thyrofast.export as ex

    b, val, labels = trained
    copy = Bundle.load(shutil.copytree(b.path, tmp_path / "b", ignore=shutil.ignore_patterns(".train")))
    assert copy.has("onnx_int8_cpu")
    fp32 = copy.read_artifact("onnx_fp32")
    # Only the gate's verdict matters here: skip the slow export / quantization work.
    monkeypatch.setattr(ex, "export_onnx", lambda model, path, shape: Path(path).write_bytes(fp32))
    monkeypatch.setattr(ex, "quantize_int8", lambda src, dst, calib, **k: Path(dst).write_bytes(fp32))
    monkeypatch.setattr(ex, "int8_gate", lambda *a, **k: {
        "passed": False, "reason": "forced failure", "auc_fp32": 1.0, "auc_int8": 0.5,
        "agreement": 0.5, "n_frames": 1})
    messages = []
    report = ex.export_bundle(copy, fp16=False, int8=True, calib=val, val_frames=val,
                              val_labels=labels, log=messages.append)
    again = Bundle.load(copy.path)
    assert not again.has("onnx_int8_cpu") and not again.has("onnx_int8_trt")
    assert again.has("onnx_fp32") and again.has("onnx_fp16")  # FP32/FP16 kept
    assert not report["onnx_int8_cpu"]["passed"]
    assert any("forced failure" in m for m in messages)


def test_convert_fp16_keeps_sensitive_ops_fp32():
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32) * 3, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Softmax", ["b"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "w"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "t", [x], [y], [w]),
                          opset_imports=[helper.make_opsetid("", 18)])
    h = convert_fp16(m)
    ops = [n.op_type for n in h.graph.node]
    # into fp16 before the first MatMul, back to fp32 before Softmax; the last
    # MatMul produces the output, so it stays fp32 and shares the fp32 weight
    assert ops.count("Cast") == 2
    types = {t.name: t.data_type for t in h.graph.initializer}
    assert types["w"] == TensorProto.FLOAT and types["w__fp16"] == TensorProto.FLOAT16
    xv = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    s32 = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(h.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(s16.run(None, {"x": xv})[0], s32.run(None, {"x": xv})[0], atol=2e-3)


def test_export_cli_rebuilds(trained, tmp_path):
    import shutil

    from thyrofast.cli import main

    b, _, _ = trained
    dst = shutil.copytree(b.path, tmp_path / "b", ignore=shutil.ignore_patterns(".train", "model*.onnx"))
    # the card still lists the ONNX files that were not copied: export rebuilds them
    assert main(["export", str(dst), "--quiet"]) == 0
    again = Bundle.load(dst)  # verifies every hash
    assert again.has("onnx_fp32") and again.has("onnx_fp16")
    assert not again.has("onnx_int8_cpu")  # its file was missing: dropped from the card, not kept
    assert main(["export", str(dst), "--int8"]) == 2  # --int8 needs --calib


def test_int8_calibration_reads_files_as_training_did(trained, tmp_path_factory, monkeypatch):
    from thyrofast import export as export_lib
    from thyrofast.train import data as train_data

    b, _, _ = trained
    _, manifest = _fixture().trained_bundle(tmp_path_factory)  # cached: the bundle behind `trained`
    seen = []

    def fake_load_frames(records, idx, params, **kw):
        seen.append(kw.get("read"))
        raise RuntimeError("stop here")  # only the read options matter

    monkeypatch.setattr(train_data, "load_frames", fake_load_frames)
    with pytest.raises(RuntimeError, match="stop here"):
        export_lib.export_from_data(b, manifest, n_calib=4, progress=False)
    assert seen == [{"crop": b.read_options["crop"], "mask_annotations": False}]  # the bundle's read options
    for bad in (0, -5, 1.5):
        with pytest.raises(ValueError, match="n_calib must be a positive integer"):
            export_lib.export_from_data(b, "unused", n_calib=bad)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny"])
def test_every_arch_exports(arch, tmp_path):
    """FP32 ONNX == PyTorch and a runnable strongly typed FP16 graph for every architecture."""
    from thyrofast.export import export_onnx
    from thyrofast.models import build_model

    torch.manual_seed(0)
    model = build_model(arch).eval()
    with torch.no_grad():  # non-trivial outputs (some heads start near zero)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export_onnx(model, tmp_path / "m.onnx", (1, 64, 64))
    x = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    l32 = onnx_logits(tmp_path / "m.onnx", x)
    assert np.abs(l32 - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    half = convert_fp16(onnx.load(tmp_path / "m.onnx"))
    l16 = onnx_logits(half.SerializeToString(), x)
    assert np.all(np.isfinite(l16))
    assert np.abs(l16 - l32).max() <= 0.05 * max(1.0, np.abs(l32).max())
