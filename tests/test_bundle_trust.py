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
    return Bundle.load(tmp_path / "b")


@pytest.mark.parametrize("location", ["../outside.bin", "../../etc/passwd", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_bundle_is_refused(tmp_path, location):
    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external(location))
    with pytest.raises(BundleIntegrityError, match="outside"):
        b.read_artifact("onnx_fp32")
    with pytest.raises(BundleIntegrityError, match="outside"):
        b.artifact_path("onnx_fp32")


def test_inline_and_inside_external_data_are_accepted(tmp_path):
    b = _bundle_with_onnx(tmp_path, _tiny_model_with_external(None))
    assert onnx.load_model_from_string(b.read_artifact("onnx_fp32")).graph.initializer[0].name == "W"
    b2 = _bundle_with_onnx(tmp_path / "two", _tiny_model_with_external("weights.bin"))
    (b2.path / "weights.bin").write_bytes(np.ones((3, 4), np.float32).tobytes())
    assert b2.read_artifact("onnx_fp32")
