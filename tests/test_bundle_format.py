"""Model bundle: safetensors round trip, hashes, tamper refusal, atomic writes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thyrofast import InputError, PreprocessParams  # noqa: E402
from thyrofast.bundle import ARTIFACT_FILES, BUNDLE_FILE, Bundle, BundleIntegrityError, atomic_write, atomic_write_bytes  # noqa: E402
from thyrofast.models import arch_config, build_model  # noqa: E402

PARAMS = PreprocessParams(size=(40, 40), denoise="median3", normalize="percentile")


def _make(tmp_path, temperature=1.7):
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.25).eval()
    with torch.no_grad():  # non-trivial BN buffers, so the round trip covers them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    b = Bundle.create(tmp_path / "b", state_dict=model.state_dict(),
                      model_config=arch_config("resnet18", 1, 0.25), preprocess=PARAMS,
                      input_shape=[1, 40, 40], temperature=temperature, training={"note": "unit"})
    return model, b


def test_safetensors_round_trip(tmp_path):
    model, b = _make(tmp_path)
    loaded = Bundle.load(b.path)
    sd = loaded.state_dict()
    ref = model.state_dict()
    assert set(sd) == set(ref)
    for k in ref:
        assert sd[k].dtype == ref[k].dtype and torch.equal(sd[k], ref[k]), k
    x = torch.randn(3, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(x), model(x))
    # weights file is safetensors: 8-byte little-endian header length + JSON header
    raw = (b.path / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + n])["__metadata__"]["arch"] == "resnet18"


def test_card_fields_and_preprocess_params(tmp_path):
    _, b = _make(tmp_path)
    card = json.loads((b.path / BUNDLE_FILE).read_text())
    assert card["format"] == "thyrofast-bundle" and card["format_version"] == 1
    assert card["classes"] == ["BTN", "NMTN", "MMTN"]
    assert card["arch"] == "resnet18" and card["in_channels"] == 1 and card["input_shape"] == [1, 40, 40]
    assert card["aggregation"] == "mean_log_prob" and card["temperature"] == pytest.approx(1.7)
    loaded = Bundle.load(b.path)
    assert loaded.preprocess_params == PARAMS
    assert loaded.classes == ("BTN", "NMTN", "MMTN") and loaded.temperature == pytest.approx(1.7)


def test_every_hash_verifies(tmp_path):
    _, b = _make(tmp_path)
    extra = tmp_path / "b" / ".x.tmp"
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    extra.write_bytes(helper.make_model(graph).SerializeToString())  # verify() parses ONNX artifacts
    b.add_artifact("onnx_fp32", extra, info={"precision": "fp32"})
    card = json.loads((b.path / BUNDLE_FILE).read_text())
    assert set(card["artifacts"]) == {"weights", "onnx_fp32"}
    for name, entry in card["artifacts"].items():
        data = (b.path / entry["path"]).read_bytes()
        assert entry["path"] == ARTIFACT_FILES[name]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert not extra.exists()
    Bundle.load(b.path, verify=True).verify()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_tampered_weights_refused(tmp_path, how):
    _, b = _make(tmp_path)
    f = b.path / "weights.safetensors"
    data = bytearray(f.read_bytes())
    if how == "flip":
        data[-5] ^= 0x01  # same size, different content
        f.write_bytes(bytes(data))
    elif how == "truncate":
        f.write_bytes(bytes(data[:-4]))
    else:
        f.unlink()
    with pytest.raises(BundleIntegrityError, match="weights") as exc:
        Bundle.load(b.path)
    assert exc.value.code == "unreadable"
    unverified = Bundle.load(b.path, verify=False)  # the card alone still opens...
    with pytest.raises(BundleIntegrityError):
        unverified.artifact_path("weights")  # ...but no artifact is handed out
    with pytest.raises(BundleIntegrityError):
        unverified.state_dict()


def test_tampered_onnx_refused_same_size(tmp_path):
    _, b = _make(tmp_path)
    tmp = b.path / ".o.tmp"
    tmp.write_bytes(b"A" * 64)
    b.add_artifact("onnx_fp16", tmp)
    (b.path / "model.fp16.onnx").write_bytes(b"B" * 64)
    with pytest.raises(BundleIntegrityError, match="SHA-256"):
        Bundle.load(b.path)
    with pytest.raises(BundleIntegrityError):
        Bundle.load(b.path, verify=False).read_artifact("onnx_fp16")


@pytest.mark.parametrize("bad", ["../weights.safetensors", "/etc/passwd", "sub/w.safetensors", ""])
def test_unsafe_artifact_path_refused(tmp_path, bad):
    _, b = _make(tmp_path)
    card = json.loads((b.path / BUNDLE_FILE).read_text())
    card["artifacts"]["weights"]["path"] = bad
    (b.path / BUNDLE_FILE).write_text(json.dumps(card))
    with pytest.raises(InputError, match="unsafe path"):
        Bundle.load(b.path, verify=False)


def test_card_errors(tmp_path):
    with pytest.raises(InputError, match="not a thyrofast model bundle"):
        Bundle.load(tmp_path)
    _, b = _make(tmp_path)
    card = json.loads((b.path / BUNDLE_FILE).read_text())
    (b.path / BUNDLE_FILE).write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(InputError, match="format_version"):
        Bundle.load(b.path)
    (b.path / BUNDLE_FILE).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Bundle.load(b.path)


def test_missing_artifact_name(tmp_path):
    _, b = _make(tmp_path)
    with pytest.raises(KeyError, match="onnx_int8_cpu"):
        b.artifact_path("onnx_int8_cpu")


def test_update_and_remove(tmp_path):
    _, b = _make(tmp_path)
    b.update(temperature=2.5, training={"k": 1})
    again = Bundle.load(b.path)
    assert again.temperature == 2.5 and again.manifest["training"] == {"k": 1}
    with pytest.raises(InputError):
        b.update(temperature=-1.0)
    with pytest.raises(ValueError):
        b.update(artifacts={})
    tmp = b.path / ".o.tmp"
    tmp.write_bytes(b"x")
    b.add_artifact("onnx_int8_trt", tmp)
    b.remove_artifact("onnx_int8_trt")
    assert not (b.path / "model.int8.qdq-s8s8.onnx").exists()
    assert Bundle.load(b.path).artifacts == ("weights",)
    with pytest.raises(ValueError):
        b.remove_artifact("weights")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temp left behind
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_create_validates(tmp_path):
    model = build_model("resnet18", width=0.25)
    kw = dict(state_dict=model.state_dict(), model_config=arch_config("resnet18", 1, 0.25),
              preprocess=PARAMS)
    with pytest.raises(ValueError, match="input_shape"):
        Bundle.create(tmp_path / "a", input_shape=[40, 40], **kw)
    with pytest.raises(ValueError, match="temperature"):
        Bundle.create(tmp_path / "a", input_shape=[1, 40, 40], temperature=0.0, **kw)


def test_pretrained_only_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = build_model("resnet18", in_channels=3, width=0.25)
    src.fc = torch.nn.Linear(128, 1000)  # an ImageNet-style head: must be skipped
    path = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    gray = build_model("resnet18", in_channels=1, width=0.25, pretrained=path)
    # the RGB stem is summed over colour: gray input x == RGB input (x, x, x)
    x = torch.rand(2, 1, 40, 40)
    src.eval(), gray.eval()
    with torch.no_grad():
        a = src.layer1(src.maxpool(src.relu(src.bn1(src.conv1(x.repeat(1, 3, 1, 1))))))
        b = gray.layer1(gray.maxpool(gray.relu(gray.bn1(gray.conv1(x)))))
    assert torch.allclose(a, b, atol=1e-5)
    assert gray.fc.out_features == 3
    pkl = tmp_path / "w.pt"
    pkl.write_bytes(b"not allowed")
    with pytest.raises(ValueError, match="safetensors"):
        build_model("resnet18", pretrained=pkl)


@pytest.mark.parametrize("arch,channels", [("resnet18", 3), ("resnet34", 1), ("resnet50", 1),
                                           ("efficientnet_b0", 1), ("mobilenet_v3_large", 3),
                                           ("convnext_tiny", 1)])
def test_every_arch_builds(arch, channels):
    model = build_model(arch, in_channels=channels).eval()
    with torch.no_grad():
        y = model(torch.rand(2, channels, 64, 64))
    assert y.shape == (2, 3) and torch.isfinite(y).all()


def test_arch_errors():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet18", in_channels=2)
    with pytest.raises(ValueError, match="resnets only"):
        build_model("convnext_tiny", width=0.5)
    assert np.isclose(sum(p.numel() for p in build_model("resnet18", width=0.5).parameters()),
                      2_796_515 - 0, rtol=0.01)
