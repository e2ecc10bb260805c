"""Ensembles: several pretrained networks averaged in one model, one bundle, one ONNX graph."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thyrofast.models import arch_config, build_from_config, build_model, pretrained_members, stack_members  # noqa: E402


def test_an_ensemble_averages_its_members_logits():
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=1, width=0.25, members=3).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        want = torch.stack([m(x) for m in model.members]).mean(0)
        got = model(x)
    torch.testing.assert_close(got, want)
    assert got.shape == (4, 3)
    outs = [m(x) for m in model.members]
    assert not torch.allclose(outs[0], outs[1])  # members are initialised independently
    assert {k.split(".")[1] for k in model.state_dict()} == {"0", "1", "2"}


def test_arch_config_records_members_only_for_an_ensemble():
    assert "members" not in arch_config("resnet18", 1, 0.25)  # single-network bundles read as before
    cfg = arch_config("resnet18", 1, 0.25, members=2)
    assert cfg["members"] == 2
    rebuilt = build_from_config(cfg)
    assert len(rebuilt.members) == 2
    for bad in (0, 9, True, 1.5):
        with pytest.raises(ValueError, match="members must be"):
            build_model("resnet18", members=bad)


def test_stack_members_builds_the_ensembles_state_dict():
    nets = [build_model("resnet18", width=0.25) for _ in range(2)]
    ensemble = build_model("resnet18", width=0.25, members=2)
    stacked = stack_members([n.state_dict() for n in nets])
    ensemble.load_state_dict(stacked)  # strict: exactly the ensemble's keys
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ensemble.eval()(x), (nets[0].eval()(x) + nets[1].eval()(x)) / 2)
    with pytest.raises(ValueError, match="member 1 is itself an ensemble"):
        stack_members([nets[0].state_dict(), ensemble.state_dict()])
    with pytest.raises(ValueError, match="must be an integer in"):
        stack_members([])


def _pretrain(out, **kw):
    import _train_fixture

    return _train_fixture.tiny_pretrain(out, **{"images": 24, **kw})


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "p"
    return out, _pretrain(out, members=2, seed=3)


def test_pretrain_stacks_members_with_their_own_seeds(ensemble, tmp_path):
    from safetensors.torch import load_file

    from thyrofast.train.pretrain import pretrain_metadata

    out, report = ensemble
    stacked = load_file(str(out / "backbone.safetensors"))
    assert pretrained_members(out / "backbone.safetensors") == 2
    for i in range(2):
        member = load_file(str(out / f"member{i}" / "backbone.safetensors"))
        assert pretrained_members(out / f"member{i}" / "backbone.safetensors") == 1
        assert all(torch.equal(stacked[f"members.{i}.{k}"], v) for k, v in member.items())
        assert report["members"][i]["config"]["seed"] == 3 + i
    assert len(stacked) == 2 * len(member)
    # member 0 is exactly a single pretraining with the ensemble's seed
    single = _pretrain(tmp_path / "single", seed=3)
    assert single["key"] == report["members"][0]["key"]
    assert not torch.equal(stacked["members.0.conv1.weight"], stacked["members.1.conv1.weight"])
    meta = pretrain_metadata(out / "backbone.safetensors")
    assert meta["key"] == report["key"] and meta["config"]["members"] == 2
    assert report["n_images"] == {"train": 2 * 22, "held_out": 2 * 2}
    assert _pretrain(out, members=2, seed=3)["key"] == report["key"]  # a finished ensemble is kept


def test_members_train_side_by_side_with_the_numbers_of_one_after_another(ensemble, tmp_path):
    # threads=2 on the CPU: two spawned processes of one thread each; the fixture trained the
    # same members one after another with one thread, so every weight must be equal
    from safetensors.torch import load_file

    out, report = ensemble
    side = _pretrain(tmp_path / "p", members=2, seed=3, threads=2)
    assert report["side_by_side"] == 1 and side["side_by_side"] == 2
    want = load_file(str(out / "backbone.safetensors"))
    got = load_file(str(tmp_path / "p" / "backbone.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert [m["key"] for m in side["members"]] == [m["key"] for m in report["members"]]


def test_members_may_share_one_lexicon_rendered_once(ensemble, tmp_path, monkeypatch):
    # the demo's setting: shared lesions, members side by side (threads=2: two processes)
    from safetensors.torch import load_file

    import thyrofast.synth.lexicon as lexicon

    rendered, said = [], []
    real = lexicon.lexicon_images
    monkeypatch.setattr(lexicon, "lexicon_images", lambda n, *a, **k: rendered.append(k["seed"]) or real(n, *a, **k))
    out, own = ensemble
    shared = _pretrain(tmp_path / "s", members=2, seed=3, shared_lexicon=True, threads=2, log=said.append)
    assert rendered == [3]  # once, in this process, with the first member's seed
    assert sum("rendered" in m for m in said) == 1  # the members' messages reach log: none rendered again
    assert any(m.startswith("member 2: pretrain: held-out findings") for m in said)
    assert shared["side_by_side"] == 2 and shared["config"]["shared_lexicon"] is True
    assert [m["config"]["seed"] for m in shared["members"]] == [3, 4]
    assert [m["config"].get("lexicon_seed") for m in shared["members"]] == [None, 3]  # None: its own seed
    assert "one shared set of lesions" in shared["data"]
    # member 0 sees the lesions it would see alone, so it is the same network; member 1 is not
    assert shared["members"][0]["key"] == own["members"][0]["key"]
    a, b = load_file(str(out / "backbone.safetensors")), load_file(str(tmp_path / "s" / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("members.0."))
    assert not torch.equal(a["members.1.conv1.weight"], b["members.1.conv1.weight"])
    assert shared["key"] != own["key"]
    assert not any((tmp_path / "s" / f"member{i}" / ".pretrain").exists() for i in range(2))  # cleaned up
    # a finished ensemble is returned as it is, without starting its members again
    said.clear()
    assert _pretrain(tmp_path / "s", members=2, seed=3, shared_lexicon=True, threads=2, log=said.append) == shared
    assert said == [f"pretrain: {tmp_path / 's' / 'backbone.safetensors'} is up to date, kept"]
    with pytest.raises(ValueError, match="shared_lexicon"):
        _pretrain(tmp_path / "x", members=2, lexicon_seed=1)


def test_a_failing_member_fails_the_side_by_side_pretraining(tmp_path):
    # settings are checked before any process starts; an error inside a member's process
    # (here: its folder is a file) reaches the caller with its type, and nothing is written
    with pytest.raises(ValueError, match="unknown arch"):
        _pretrain(tmp_path / "a", members=2, threads=2, arch="nonesuch")
    assert not (tmp_path / "a").exists()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "member1").write_text("in the way")
    with pytest.raises(OSError):
        _pretrain(tmp_path / "p", members=2, threads=2)
    assert not (tmp_path / "p" / "backbone.safetensors").exists()


def test_members_side_by_side_share_out_the_cpu_cores():
    from thyrofast.train.pretrain import _member_processes

    assert _member_processes(2, "cpu", 2) == (2, 1)
    assert _member_processes(2, "cpu", 5) == (2, 2)
    assert _member_processes(3, "cpu", 1) == (1, 1)
    assert _member_processes(4, "cpu", 2) == (2, 1)


def test_a_members_exception_keeps_its_type_when_it_can():
    from thyrofast.train.pretrain import _member_exception

    assert type(_member_exception("NotADirectoryError", "m")) is NotADirectoryError
    assert type(_member_exception("ValueError", "m")) is ValueError  # the CLI's one-line errors still apply
    other = _member_exception("SomeLibraryError", "boom")
    assert type(other) is RuntimeError and str(other) == "SomeLibraryError: boom"


def test_members_train_one_after_another_on_a_gpu(monkeypatch):
    import thyrofast.train.pretrain as P

    monkeypatch.setattr(P, "resolve_device", lambda device: "cuda")
    assert P._member_processes(2, "auto", 16) == (1, 16)


def test_pretrain_refuses_bad_ensembles(tmp_path):
    with pytest.raises(ValueError, match="members must be"):
        _pretrain(tmp_path / "a", members=0)
    with pytest.raises(ValueError, match="diagnosis_weight must be > 0"):
        _pretrain(tmp_path / "b", members=2, diagnosis_weight=0.0)


def test_zero_epochs_keep_every_member_and_export_one_graph(ensemble, tmp_path_factory, tmp_path):
    from safetensors.torch import load_file

    from thyrofast.export import onnx_logits
    from thyrofast.train import train

    import _train_fixture

    out, _ = ensemble
    start = load_file(str(out / "backbone.safetensors"))
    bundle = train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", epochs=0, image_size=32,
                   export=True, int8=False, progress=False, threads=1, log=lambda m: None,
                   pretrained=str(out / "backbone.safetensors"))
    assert bundle.model_config["members"] == 2
    got = load_file(str(bundle.path / "weights.safetensors"))
    assert got.keys() == start.keys()
    heads = {"members.0.fc.bias", "members.1.fc.bias"}
    assert all(torch.equal(got[k], start[k]) for k in start if k not in heads)
    t = bundle.manifest["training"]
    w = torch.tensor([t["class_weights"][c] for c in ("BTN", "NMTN", "MMTN")])
    for k in heads:  # each member's bias shifted by -log w, so their mean logit is too
        torch.testing.assert_close(got[k], start[k] - torch.log(w))
    model = bundle.build_model().eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_logits(bundle.artifact_path("onnx_fp32"), x), want, atol=1e-4)


def test_unreadable_checkpoints_give_clear_errors(tmp_path):
    from thyrofast.models import pretrained_has_head

    pickle_like = tmp_path / "w.pt"
    pickle_like.write_bytes(b"not a checkpoint")
    garbage = tmp_path / "w.safetensors"
    garbage.write_bytes(b"garbage")
    for fn in (pretrained_members, pretrained_has_head, lambda p: build_model("resnet18", pretrained=p)):
        with pytest.raises(ValueError, match="must be .safetensors"):
            fn(pickle_like)
        with pytest.raises(ValueError, match="not a readable .safetensors file"):
            fn(garbage)
        with pytest.raises(FileNotFoundError):
            fn(tmp_path / "missing.safetensors")


def test_an_ensemble_is_not_trained_further(ensemble, tmp_path_factory, tmp_path):
    from thyrofast.train import train

    import _train_fixture

    out, _ = ensemble
    with pytest.raises(ValueError, match="is an ensemble"):
        train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", epochs=1, image_size=32, progress=False,
              pretrained=str(out / "backbone.safetensors"))
