"""Fine-tuning from any pretrained file: ``train(init=...)`` / ``thyrofast train --init``.

A torchvision state dict (.pth, RGB stem, 1000-class head; converted to .safetensors by
tools/state_dict_to_safetensors.py, since thyrofast never unpickles), one member of an ensemble file,
a bundle folder; a checkpoint of another architecture or width is refused before any data is read.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tvm = pytest.importorskip("torchvision.models")

from safetensors.torch import load_file, save_file  # noqa: E402

from thyrofast.models import build_model, stack_members  # noqa: E402
from thyrofast.train.init import prepare_init  # noqa: E402

_CACHE: dict = {}


def _fx():
    import _train_fixture

    return _train_fixture


def _cohort(tmp_path_factory):
    if "data" not in _CACHE:
        _CACHE["data"] = _fx().write_binary_cohort(tmp_path_factory.mktemp("init") / "data", n_benign=8,
                                                   n_malignant=8, images_per_patient=2)
    return _CACHE["data"]


def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "state_dict_to_safetensors.py"
    spec = importlib.util.spec_from_file_location("state_dict_to_safetensors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


KW = dict(image_size=48, batch_size=16, threads=1, progress=False, export=False, check=False,
          preprocess={"denoise": "median3"})


def test_torchvision_state_dict_with_a_frozen_backbone(tmp_path_factory, tmp_path):
    from thyrofast.train import train

    torch.manual_seed(0)
    net = tvm.resnet18(weights=None)  # the layout of torchvision's ImageNet checkpoint (RGB, 1000 classes)
    pth = tmp_path / "resnet18-imagenet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, pth)
    with pytest.raises(ValueError, match="never unpickles.*tools/state_dict_to_safetensors.py"):
        prepare_init(pth, tmp_path / "w", arch="resnet18", in_channels=1, width=1.0)
    ck = tmp_path / "resnet18-imagenet.safetensors"
    assert _tool().convert(str(pth), str(ck)) == len(net.state_dict())
    path, note = prepare_init(ck, tmp_path / "w", arch="resnet18", in_channels=1, width=1.0)
    saved = load_file(path)
    assert "fc.weight" in saved and saved["fc.weight"].shape == (1000, 512)  # kept; train skips it (2 classes)
    b = train(_cohort(tmp_path_factory), tmp_path / "b", arch="resnet18", width=1.0, epochs=1, init=ck,
              backbone_lr_scale=0.0, log=lambda m: None, **KW)
    state = load_file(str(b.path / "weights.safetensors"))
    ref = net.state_dict()
    # the frozen backbone is the checkpoint's (RGB stem summed to gray), the 2-class head is new
    np.testing.assert_allclose(state["conv1.weight"].numpy(), ref["conv1.weight"].sum(1, keepdim=True).numpy(),
                               rtol=1e-6)
    np.testing.assert_array_equal(state["layer3.1.conv2.weight"].numpy(), ref["layer3.1.conv2.weight"].numpy())
    assert state["fc.weight"].shape == (2, 512)
    assert b.manifest["training"]["init"]["source"].endswith("resnet18-imagenet.safetensors")


def test_another_width_is_refused_before_the_data(tmp_path):
    from thyrofast.train import train

    ck = tmp_path / "tv.safetensors"
    save_file(tvm.resnet18(weights=None).state_dict(), str(ck))
    msg = r"does not fit resnet18 \(width 0.25.*has shape \(64,\).*expects \(16,\).*--arch / --width"
    with pytest.raises(ValueError, match=msg):
        train(tmp_path / "no-such-data", tmp_path / "b", width=0.25, epochs=1, init=ck, **KW)
    torch.save(tvm.resnet18(weights=None), tmp_path / "whole.pth")  # a pickled model, not a state dict
    with pytest.raises(SystemExit, match="no state dict of tensors"):
        _tool().convert(str(tmp_path / "whole.pth"), str(tmp_path / "whole.safetensors"))
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(ValueError, match="expected a bundle folder"):
        prepare_init(tmp_path / "x.onnx", tmp_path / "w", arch="resnet18", in_channels=1, width=1.0)


def test_an_ensemble_member_and_a_bundle_folder(tmp_path_factory, tmp_path):
    from thyrofast.train import train

    torch.manual_seed(1)
    members = [build_model("resnet18", width=0.25).state_dict() for _ in range(3)]
    ens = tmp_path / "ens.safetensors"
    save_file(stack_members(members), str(ens))
    path, note = prepare_init(ens, tmp_path / "w", arch="resnet18", in_channels=1, width=0.25, member=2)
    assert "(3-member ensemble), member 2" in note
    got = load_file(path)
    np.testing.assert_array_equal(got["layer1.0.conv1.weight"].numpy(), members[2]["layer1.0.conv1.weight"].numpy())
    with pytest.raises(ValueError, match="members 0..2"):
        prepare_init(ens, tmp_path / "w", arch="resnet18", in_channels=1, width=0.25, member=3)
    # an ensemble file fine-tunes (member 0 by default): it used to be refused for epochs > 0
    data = _cohort(tmp_path_factory)
    b = train(data, tmp_path / "b1", width=0.25, epochs=1, init=ens, log=lambda m: None, **KW)
    assert b.model_config.get("members", 1) == 1
    # a bundle folder: its 2-class head fits the data's classes and is loaded too
    b2 = train(data, tmp_path / "b2", width=0.25, epochs=1, init=b.path, backbone_lr_scale=0.0, lr=1e-12,
               log=lambda m: None, **KW)
    s1 = load_file(str(b.path / "weights.safetensors"))
    s2 = load_file(str(b2.path / "weights.safetensors"))
    np.testing.assert_array_equal(s1["layer2.0.conv1.weight"].numpy(), s2["layer2.0.conv1.weight"].numpy())
    with pytest.raises(ValueError, match="not both"):
        train(data, tmp_path / "b3", width=0.25, epochs=1, init=ens, pretrained=str(ens), **KW)
