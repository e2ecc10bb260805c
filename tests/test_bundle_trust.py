"""Artifact trust: ONNX external data may not point outside the bundle folder."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from thyrofast.bundle import Bundle, BundleIntegrityError


def _tiny_model_with_external(weight_location: str | None):
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), name="W")
    if weight_location is not None:
        w.ClearField("float_data")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", weight_location), ("offset", "0"), ("length", "48")):
            e = w.external_data.add()
            e.key, e.value = k, v
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[w])
    return helper.make_model(graph)


def _bundle_with_onnx(tmp_path, model) -> Bundle:
    import torch

    from thyrofast import PreprocessParams

    b = Bundle.create(tmp_path / "b", state_dict={"w": torch.zeros(1)}, model_config={"arch": "resnet18"},
                      preprocess=PreprocessParams(size=(8, 8)), input_shape=(1, 8, 8))
    tmp = tmp_path / "b" / "m.tmp"
    tmp.write_bytes(model.SerializeToString())
    b.add_artifact("onnx_fp32", tmp)
    return Bundle.load(tmp_path / "b", verify=False)


@pytest.mark.parametrize("location", ["../outside.bin", "../../etc/passwd", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_bundle_is_refused(tmp_path, location):
    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external(location))
    with pytest.raises(BundleIntegrityError, match="external data"):
        b.read_artifact("onnx_fp32")
    with pytest.raises(BundleIntegrityError, match="external data"):
        b.artifact_path("onnx_fp32")
    with pytest.raises(BundleIntegrityError, match="external data"):
        Bundle.load(b.path)


def test_inline_tensors_are_accepted(tmp_path):
    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external(None))
    assert onnx.load_model_from_string(b.read_artifact("onnx_fp32")).graph.initializer[0].name == "W"
    Bundle.load(b.path)  # verifies


_EXT = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize("where", ["cwd", "bundle", "missing"])
def test_any_external_data_is_refused_before_an_engine_sees_it(tmp_path, monkeypatch, where):
    """Issue 22: a bare location ("ext.bin") used to verify, and ONNX Runtime /
    OpenVINO, given the model as bytes, read ext.bin from the *current working
    directory* -- an unhashed file that changed the prediction.  Every byte that
    reaches an engine must be covered by the card's SHA-256, so any external
    data is refused: at Bundle.load, at read_artifact, and at engine load; a
    missing external file is an InputError, not the runtime's raw failure."""
    from thyrofast.engines.onnxruntime_engine import OnnxRuntimeEngine
    from thyrofast.engines.openvino_engine import OpenVinoEngine
    from thyrofast.errors import InputError

    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external("ext.bin"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if where == "cwd":
        (cwd / "ext.bin").write_bytes(_EXT.tobytes())
    elif where == "bundle":
        (b.path / "ext.bin").write_bytes(_EXT.tobytes())  # inside, but in no card entry: unhashed too
    with pytest.raises(BundleIntegrityError, match="external data 'ext.bin'"):
        Bundle.load(b.path)
    with pytest.raises(BundleIntegrityError, match="external data 'ext.bin'"):
        b.read_artifact("onnx_fp32")
    for engine in (OnnxRuntimeEngine, OpenVinoEngine):
        with pytest.raises(InputError, match="external data"):
            engine.from_bundle(b, "fp32", "cpu", input_shape=(3,))


def test_artifact_bytes_must_be_an_integer(tmp_path):
    """Issue 22 (low): "bytes": "123" gave "has 123 bytes, ... records 123"."""
    import json

    from thyrofast.errors import InputError

    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external(None))
    card = json.loads((b.path / "thyrofast.json").read_text())
    card["artifacts"]["weights"]["bytes"] = str(card["artifacts"]["weights"]["bytes"])
    (b.path / "thyrofast.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="artifact 'weights': field 'bytes' must be a non-negative integer"):
        Bundle.load(b.path)
