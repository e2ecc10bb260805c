"""Pretraining with a user's class set (``pretrain --classes benign=BTN malignant=NMTN+MMTN``) and
``train(epochs=0)``'s check that the kept class head is for the data's classes (names and count)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

BINARY = {"benign": "BTN", "malignant": "NMTN+MMTN"}


def _pretrain(out, **kw):
    import _train_fixture

    return _train_fixture.tiny_pretrain(out, **{"images": 48, **kw})


@pytest.fixture(scope="module")
def binary_backbone(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain-classes") / "p"
    return out, _pretrain(out, classes=BINARY)


@pytest.fixture(scope="module")
def binary_cohort(tmp_path_factory):
    import _train_fixture

    return _train_fixture.write_binary_cohort(tmp_path_factory.mktemp("binary") / "c", n_benign=8, n_malignant=8,
                                              images_per_patient=3)


def _train(data, out, config=None, **kw):
    from thyrofast.train import train

    args = dict(image_size=32, batch_size=8, export=False, progress=False, threads=1, log=lambda m: None,
                check=False)
    args.update(kw)
    return train(data, out, config, **args)


def test_class_groups_parse_and_order():
    from thyrofast.train.pretrain import class_groups

    want = (("benign", ("BTN",)), ("malignant", ("NMTN", "MMTN")))
    assert class_groups(BINARY) == want
    assert class_groups(["malignant=MMTN+NMTN", "benign=btn"]) == want  # data order; phantom order in a group
    assert class_groups({"benign": ["BTN"], "malignant": ["NMTN", "MMTN"]}) == want
    assert [n for n, _ in class_groups(["c=MMTN", "a=BTN", "b=NMTN"])] == ["a", "b", "c"]


@pytest.mark.parametrize("bad, match", [
    (["benign=BTN", "malignant=NMTN+FTC"], r"'FTC' \(in malignant\) is not a phantom class"),
    (["benign=BTN+NMTN", "malignant=NMTN+MMTN"], "NMTN is in two classes"),
    (["benign=BTN", "malignant=MMTN"], "NMTN is in no class"),
    (["all=BTN+NMTN+MMTN"], "2 or more classes"),
    (["benign", "malignant=NMTN+MMTN"], "is not NAME=A"),
    (["benign=BTN", "benign=NMTN+MMTN"], "given twice"),
    (["benign=BTN", "malignant=NMTN+"], "needs phantom classes"),
])
def test_class_groups_refuse_clearly(bad, match):
    from thyrofast.train.pretrain import class_groups

    with pytest.raises(ValueError, match=match):
        class_groups(bad)


def test_pretrain_with_a_users_classes(binary_backbone):
    from safetensors.torch import load_file

    from thyrofast.train.pretrain import PretrainConfig, pretrained_classes

    out, report = binary_backbone
    state = load_file(str(out / "backbone.safetensors"))
    assert state["fc.weight"].shape[0] == 2 and state["fc.bias"].shape == (2,)
    assert report["classes"] == ["benign", "malignant"]
    assert report["config"]["classes"] == {"benign": ["BTN"], "malignant": ["NMTN", "MMTN"]}
    assert "classes benign=BTN malignant=NMTN+MMTN" in report["data"]
    assert pretrained_classes(out / "backbone.safetensors") == ("benign", "malignant")
    assert report["held_out"]  # the finding heads and the 2-class diagnosis were measured
    # the class set is part of what the backbone is: another key than the phantom's three classes
    assert PretrainConfig(classes=BINARY).key() != PretrainConfig().key()
    assert "classes" not in PretrainConfig().to_dict()  # earlier runs' keys stay what they were


def test_a_two_class_bundle_fine_tunes_from_it(binary_backbone, binary_cohort, tmp_path):
    from thyrofast.cli import main

    out, _ = binary_backbone
    b = _train(binary_cohort, tmp_path / "b", epochs=1, init=str(out / "backbone.safetensors"))
    assert b.classes == ("benign", "malignant")
    assert "tensors" in b.manifest["training"]["init"]["loaded"]
    assert b.manifest["training"]["pretraining"]["report"]["classes"] == ["benign", "malignant"]
    # its class head kept as it is (epochs=0): the names and the count match the data's
    kept = _train(binary_cohort, tmp_path / "k", epochs=0, init=str(out / "backbone.safetensors"))
    from safetensors.torch import load_file

    start = load_file(str(out / "backbone.safetensors"))
    got = load_file(str(kept.path / "weights.safetensors"))
    assert torch.equal(got["fc.weight"], start["fc.weight"])
    # the CLI: train --init from it
    assert main(["train", str(binary_cohort), "--out", str(tmp_path / "c"), "--init", str(out / "backbone.safetensors"),
                 "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--threads", "1", "--no-export",
                 "--no-check", "--no-progress"]) == 0


def test_epochs_0_refuses_a_head_for_other_classes(binary_backbone, binary_cohort, tmp_path_factory, tmp_path):
    import _train_fixture

    out, _ = binary_backbone
    # the phantom's three classes against a 2-class head: the count differs
    with pytest.raises(ValueError, match=r"trained for the classes benign, malignant and the data's classes are "
                                         r"BTN, NMTN, MMTN"):
        _train(_train_fixture.cohort(tmp_path_factory), tmp_path / "a", epochs=0,
               pretrained=str(out / "backbone.safetensors"))
    # the same count, other names
    other = tmp_path / "other"
    _pretrain(other, classes=["low=BTN", "high=NMTN+MMTN"])
    with pytest.raises(ValueError, match=r"trained for the classes high, low and the data's classes are "
                                         r"benign, malignant"):
        _train(binary_cohort, tmp_path / "b", epochs=0, pretrained=str(other / "backbone.safetensors"))
    # a bundle (init folder) records its classes too
    from thyrofast.train import TrainConfig

    bundle = _train(binary_cohort, tmp_path / "bundle", TrainConfig(epochs=1, lr=1e-3))  # a whole config
    assert bundle.manifest["training"]["config"]["lr"] == 1e-3
    assert bundle.manifest["training"]["config"]["image_size"] == 32  # the keyword overrides it
    with pytest.raises(ValueError, match="trained for the classes benign, malignant"):
        _train(_train_fixture.cohort(tmp_path_factory), tmp_path / "c", epochs=0, init=str(bundle.path))
    assert not (tmp_path / "c" / "thyrofast.json").exists()


def test_pretrain_cli_classes(tmp_path, capsys, monkeypatch):
    import thyrofast.train.pretrain as P
    from thyrofast.cli import main

    for bad, msg in ((["benign=BTN", "malignant=NMTN+XYZ"], "'XYZ' (in malignant) is not a phantom class"),
                     (["benign=BTN+NMTN", "malignant=NMTN+MMTN"], "NMTN is in two classes"),
                     (["benign=BTN", "malignant=NMTN"], "MMTN is in no class"),
                     (["all=BTN+NMTN+MMTN"], "2 or more classes")):
        assert main(["pretrain", str(tmp_path / "c"), "--no-progress", "--classes", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("thyrofast pretrain: error: classes: ") and msg in err, err
    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return {"n_images": {"train": 1}, "seconds": 0.0}

    monkeypatch.setattr(P, "pretrain", fake)
    assert main(["pretrain", str(tmp_path / "c"), "--no-progress", "--classes", "benign=BTN",
                 "malignant=NMTN+MMTN"]) == 0
    assert seen["classes"] == ["benign=BTN", "malignant=NMTN+MMTN"]


def test_train_and_pretrain_take_a_config_and_refuse_unknown_keywords(tmp_path):
    from thyrofast.train import TrainConfig, train
    from thyrofast.train.pretrain import PretrainConfig, pretrain

    with pytest.raises(TypeError, match="'epoch', 'lrate'"):
        train(tmp_path / "m.csv", tmp_path / "o", epoch=1, lrate=0.1)
    with pytest.raises(TypeError, match="'image'"):
        pretrain(tmp_path / "p", PretrainConfig(), image=3)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        train(tmp_path / "m.csv", tmp_path / "o", TrainConfig(), epochs=-1)
