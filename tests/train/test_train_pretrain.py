"""Findings pretraining: the lexicon image set, the pretraining loop, its resume and provenance."""
from __future__ import annotations

import json

import numpy as np
import pytest

from thyrofast import PreprocessParams
from thyrofast.synth import features as F
from thyrofast.synth.lexicon import (
    ANNOTATION_COLUMNS,
    NODE_VIEW_SHARE,
    annotation_row,
    lesion_posterior,
    lexicon_images,
    lexicon_item,
)
from thyrofast.train.aux import TASKS, aux_targets_from_rows

torch = pytest.importorskip("torch")

PARAMS = PreprocessParams(size=(32, 32), channels=1)


def test_lexicon_images_are_the_same_for_any_worker_count():
    a, rows_a, y_a = lexicon_images(6, PARAMS, seed=5, workers=1, progress=False, chunk=2)
    b, rows_b, y_b = lexicon_images(6, PARAMS, seed=5, workers=2, progress=False, chunk=2)
    np.testing.assert_array_equal(a, b)
    assert rows_a == rows_b and y_a.tolist() == y_b.tolist()
    assert y_a.tolist() == [F.CLASSES.index(lexicon_item(5, i)[0].label) for i in range(6)]
    assert a.dtype == np.float16 and a.shape == (6, 1, 32, 32) and np.isfinite(a).all()
    c, _, _ = lexicon_images(6, PARAMS, seed=6, workers=1, progress=False)
    assert not np.array_equal(a, c)  # another seed, other lesions


def test_lexicon_annotations_describe_the_lesion_shown():
    views = set()
    for i in range(40):
        p, view, target = lexicon_item(11, i)
        row = annotation_row(p, view, target)
        assert tuple(row) == ANNOTATION_COLUMNS and row["view"] == view
        views.add(view)
        if view == "lymph_node":
            node = p.nodes[target]
            assert row["ln_metastatic"] == str(int(node.metastatic))
            assert float(row["ln_short_axis_mm"]) == pytest.approx(node.short_axis_mm, rel=1e-5)
            assert row["composition"] == row["shown_tirads_points"] == ""
        else:
            nod = p.nodules[target]  # the nodule shown, not necessarily the index nodule
            assert (row["composition"], row["echogenicity"], row["margin"], row["foci"]) == \
                (nod.composition, nod.echogenicity, nod.margin, nod.foci)
            assert row["shown_tirads_points"] == str(nod.tirads_points)
            assert row["ln_metastatic"] == ""
        assert "label" not in row and not any(c in row.values() for c in F.CLASSES)  # diagnosis kept apart
    assert views == {"transverse", "longitudinal", "lymph_node"}


def test_lexicon_patients_are_not_cohort_patients():
    from thyrofast.synth.cohort import plan_cohort

    cohort_sizes = {round(n.size_mm, 6) for pl in plan_cohort("paper", seed=0, patients=60)
                    for n in pl.patient.nodules}
    lex_sizes = {round(n.size_mm, 6) for i in range(200) for n in lexicon_item(0, i)[0].nodules}
    assert not cohort_sizes & lex_sizes


def test_lexicon_bad_arguments():
    for kw, msg in (({"n": 0}, "positive integer"), ({"n": 2, "workers": 0}, "workers"),
                    ({"n": 2, "crop": "auto"}, "crop")):
        n = kw.pop("n")
        with pytest.raises(ValueError, match=msg):
            lexicon_images(n, PARAMS, progress=False, **kw)


def test_shown_nodule_findings_count_for_multinodular_patients():
    rows = [{"view": "transverse", "composition": "solid", "n_nodules": "2"},
            {"view": "transverse", "composition": "mixed", "n_nodules": "1"},
            {"view": "lymph_node", "composition": "", "ln_metastatic": "1", "n_nodules": "3"}]
    cols = ["view", "composition", "ln_metastatic", "n_nodules"]
    index = aux_targets_from_rows(rows, cols, nodule_findings="index")
    shown = aux_targets_from_rows(rows, cols, nodule_findings="shown")
    j_i = [t.name for t in index.tasks].index("composition")
    j_s = [t.name for t in shown.tasks].index("composition")
    assert index.mask[:, j_i].tolist() == [False, True, False]  # index nodule: single-nodule rows only
    assert shown.mask[:, j_s].tolist() == [True, True, False]
    assert shown.values[0, j_s] == TASKS[[t.name for t in TASKS].index("composition")].values.index("solid")
    with pytest.raises(ValueError, match="nodule_findings"):
        aux_targets_from_rows(rows, cols, nodule_findings="all")


def _bayes_of_shown_lesion(p, view, target) -> np.ndarray:
    """Float64 reference: Bayes' rule over the classes for what one lexicon image shows."""
    prior = np.array([F.PAPER_COUNTS[c] for c in F.CLASSES], float)
    post = []
    for c in F.CLASSES:
        p_node_view = (1.0 - F.NODE_COUNT[c].get(0, 0.0)) * NODE_VIEW_SHARE
        if view == "lymph_node":
            like = p_node_view * np.exp(F.node_log_likelihood(p.nodes[target], c))
        else:
            like = (1.0 - p_node_view) * np.exp(F.nodule_log_likelihood(p.nodules[target], c))
        post.append(prior[F.CLASSES.index(c)] * like)
    return np.array(post) / np.sum(post)


def test_lesion_posterior_is_bayes_rule_for_the_shown_lesion():
    items = [lexicon_item(3, i) for i in range(60)]
    got = lesion_posterior([annotation_row(*it) for it in items])
    want = np.array([_bayes_of_shown_lesion(*it) for it in items])
    assert {it[1] for it in items} == {"transverse", "longitudinal", "lymph_node"}
    # the rows hold sizes to 6 significant digits
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="row 1"):
        lesion_posterior([annotation_row(*items[0]), {"view": "transverse"}])


def test_lesion_posterior_is_the_expected_class_of_what_the_image_shows():
    # what makes it a valid training target: averaged over many images it gives the class
    # frequencies, and images it calls likely MMTN are MMTN that often
    items = [lexicon_item(0, i) for i in range(3000)]
    post = lesion_posterior([annotation_row(*it) for it in items])
    y = np.array([F.CLASSES.index(it[0].label) for it in items])
    freq = np.bincount(y, minlength=3) / len(y)
    np.testing.assert_allclose(post.mean(0), freq, atol=0.02)
    for lo, hi in ((0.0, 0.4), (0.4, 0.8), (0.8, 1.0)):
        m = (post[:, 2] >= lo) & (post[:, 2] < hi)
        assert m.sum() > 100 and abs(post[m, 2].mean() - (y[m] == 2).mean()) < 0.05
    log_loss = -np.log(post[np.arange(len(y)), y]).mean()
    assert log_loss < -np.log(freq[y]).mean() - 0.1  # it knows more than the prior
    # the view is evidence too: calibrated within node images and within nodule images
    # (without the view factor the node images' mean P(MMTN) is 0.06 too low)
    node = np.array([it[1] == "lymph_node" for it in items])
    for m, tol in ((node, 0.035), (~node, 0.03)):
        np.testing.assert_allclose(post[m].mean(0), np.bincount(y[m], minlength=3) / m.sum(), atol=tol)
    # the sampler shows a node with P(>= 1 node | class) * NODE_VIEW_SHARE, as the posterior assumes
    for c, name in enumerate(F.CLASSES):
        share = node[y == c].mean()
        assert abs(share - (1 - F.NODE_COUNT[name].get(0, 0.0)) * NODE_VIEW_SHARE) < 0.035, name
    # and a node image's P(MMTN) tells metastatic from reactive nodes (constant if the node were ignored)
    from thyrofast.metrics import roc_auc

    metastatic = np.array([it[0].nodes[it[2]].metastatic for it in items if it[1] == "lymph_node"])
    assert roc_auc(metastatic.astype(int), post[node, 2]) > 0.9


def _pretrain(out, **kw):
    from thyrofast.train.pretrain import pretrain

    args = dict(images=48, epochs=2, image_size=32, progress=False, threads=1, workers=1)
    args.update(kw)
    return pretrain(out, **args)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "p"
    return out, _pretrain(out)


def test_pretrain_writes_a_backbone_with_its_report(pretrained):
    from safetensors.torch import load_file

    from thyrofast.models import build_model, load_pretrained
    from thyrofast.train.pretrain import pretrain_metadata

    out, report = pretrained
    assert not (out / ".pretrain").exists()  # cache and checkpoints removed when done
    state = load_file(str(out / "backbone.safetensors"))
    assert "fc.weight" in state  # trained with diagnoses: the class head comes along
    meta = pretrain_metadata(out / "backbone.safetensors")
    assert meta["n_images"] == {"train": 44, "held_out": 4} and meta["key"] == report["key"]
    assert "findings and patient diagnoses" in meta["data"]
    history = json.loads((out / "pretrain.json").read_text())["history"]
    assert history[-1]["epoch"] == 2 and "image_macro_auc" in history[-1]["held_out"]["diagnosis"]
    model = build_model("resnet18", in_channels=1, width=0.25)
    loaded = load_pretrained(model, out / "backbone.safetensors")
    assert "conv1.weight" in loaded and torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    fresh = build_model("resnet18", in_channels=1, width=0.25).state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])  # it learned
    assert pretrain_metadata(out / "pretrain.json") is None  # not a safetensors file: no provenance


def test_findings_only_pretraining_leaves_out_the_class_head(tmp_path):
    from safetensors.torch import load_file

    from thyrofast.train.pretrain import pretrain_metadata

    report = _pretrain(tmp_path / "f", images=24, epochs=1, diagnosis_weight=0.0)
    state = load_file(str(tmp_path / "f" / "backbone.safetensors"))
    assert state and not any(k.startswith("fc.") for k in state)
    assert "diagnosis" not in report["held_out"]
    assert "no diagnoses" in pretrain_metadata(tmp_path / "f" / "backbone.safetensors")["data"]


def test_lesion_target_is_the_class_loss_in_expectation(pretrained, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import thyrofast.synth.lexicon as L
    from thyrofast.train.pretrain import PretrainConfig

    out, report = pretrained
    assert "diagnosis_target" not in report["config"]  # the default's key is what it was before the option
    a = _pretrain(tmp_path / "lesion", diagnosis_target="lesion")
    assert a["config"]["diagnosis_target"] == "lesion" and a["key"] != report["key"]
    assert "posterior given the shown lesion" in a["data"]
    pa = load_file(str(tmp_path / "lesion" / "backbone.safetensors"))
    pp = load_file(str(out / "backbone.safetensors"))
    assert not torch.allclose(pa["fc.weight"], pp["fc.weight"], atol=1e-3)
    # with each image's own patient class as its "posterior" the soft loss is the patient loss
    labels = {}

    def one_hot(rows):
        return np.eye(3)[[labels[r["size_mm"] + r["ln_short_axis_mm"]] for r in rows]]

    frames, rows, y = lexicon_images(48, PARAMS, seed=0, progress=False)
    labels.update({r["size_mm"] + r["ln_short_axis_mm"]: int(c) for r, c in zip(rows, y)})
    assert len(labels) == 48
    monkeypatch.setattr(L, "lesion_posterior", one_hot)
    _pretrain(tmp_path / "one_hot", diagnosis_target="lesion")
    po = load_file(str(tmp_path / "one_hot" / "backbone.safetensors"))
    for k in pp:
        if pp[k].is_floating_point():
            torch.testing.assert_close(po[k], pp[k], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="diagnosis_target"):
        PretrainConfig(diagnosis_target="image")
    with pytest.raises(ValueError, match="diagnosis_weight 0"):
        PretrainConfig(diagnosis_target="lesion", diagnosis_weight=0.0)


def test_pretrain_bar_label_names_the_member(tmp_path, capsys):
    # an ensemble member's bars carry its own number, whatever line it was given
    _pretrain(tmp_path / "m", images=24, epochs=1, progress=True, position=0, bar_label="member 3")
    err = capsys.readouterr().err
    assert "member 3: lexicon images" in err and "member 3:" in err.replace("member 3: lexicon", "")
    assert "member 1" not in err


def test_pretrain_rerun_keeps_a_finished_folder(pretrained):
    out, report = pretrained
    before = (out / "backbone.safetensors").stat().st_mtime_ns
    msgs = []
    again = _pretrain(out, log=msgs.append)
    assert again["key"] == report["key"] and any("up to date" in m for m in msgs)
    assert (out / "backbone.safetensors").stat().st_mtime_ns == before


def test_interrupted_pretraining_resumes_to_the_same_backbone(pretrained, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import thyrofast.train.pretrain as P

    out, _ = pretrained
    real = P.save_checkpoint

    def crash_after_first(folder, tensors, meta):
        real(folder, tensors, meta)
        raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(P, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(tmp_path / "r")
    assert (tmp_path / "r" / ".pretrain" / "checkpoint" / "checkpoint.json").is_file()
    monkeypatch.setattr(P, "save_checkpoint", real)
    msgs = []
    _pretrain(tmp_path / "r", log=msgs.append)
    assert any("resuming after epoch 1" in m for m in msgs)
    assert not any("rendered" in m for m in msgs)  # the cached lexicon set was reused
    a = load_file(str(tmp_path / "r" / "backbone.safetensors"))
    b = load_file(str(out / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="images"):
        _pretrain(tmp_path / "x", images=5)
    with pytest.raises(ValueError, match="epochs"):
        _pretrain(tmp_path / "x", epochs=0)
    with pytest.raises(ValueError, match="crop"):
        _pretrain(tmp_path / "x", crop="auto")
    with pytest.raises(ValueError, match="diagnosis_weight"):
        _pretrain(tmp_path / "x", diagnosis_weight=-1.0)
    with pytest.raises(ValueError, match="device"):
        _pretrain(tmp_path / "x", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            _pretrain(tmp_path / "x", device="cuda")


def test_pretrain_cli(tmp_path, capsys):
    from thyrofast.cli import main

    assert main(["pretrain", str(tmp_path / "c"), "--images", "5", "--quiet"]) == 2
    assert "images must be >= 20" in capsys.readouterr().err
    (tmp_path / "f").write_text("a file, not a folder")
    assert main(["pretrain", str(tmp_path / "f"), "--images", "24", "--epochs", "1", "--image-size", "32",
                 "--workers", "1", "--no-progress"]) == 3
    assert capsys.readouterr().err.startswith("thyrofast pretrain: error: ")
    with pytest.raises(SystemExit):
        main(["pretrain", str(tmp_path / "c"), "--diagnosis-target", "image"])


def test_pretrain_cli_passes_the_diagnosis_target(tmp_path, monkeypatch):
    import thyrofast.train.pretrain as P
    from thyrofast.cli import main

    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return {"n_images": {"train": 1}, "seconds": 0.0}

    monkeypatch.setattr(P, "pretrain", fake)
    assert main(["pretrain", str(tmp_path / "c"), "--diagnosis-target", "lesion", "--no-progress"]) == 0
    assert seen["diagnosis_target"] == "lesion"
    assert main(["pretrain", str(tmp_path / "c"), "--no-progress"]) == 0
    assert seen["diagnosis_target"] == "patient"


def test_train_records_the_pretraining_it_started_from(pretrained, tmp_path_factory, tmp_path):
    from thyrofast.train import train

    import _train_fixture

    out, report = pretrained
    bundle = train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", epochs=1, image_size=32,
                   export=False, progress=False, threads=1, log=lambda m: None,
                   pretrained=str(out / "backbone.safetensors"))
    prov = bundle.manifest["training"]["pretraining"]
    assert prov["report"]["key"] == report["key"] and prov["file"].endswith("backbone.safetensors")


def test_backbone_lr_scale_zero_keeps_the_pretrained_backbone(pretrained, tmp_path_factory, tmp_path):
    from safetensors.torch import load_file

    from thyrofast.train import train

    import _train_fixture

    out, _ = pretrained
    start = load_file(str(out / "backbone.safetensors"))
    bundle = train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", epochs=1, image_size=32,
                   export=False, progress=False, threads=1, log=lambda m: None, backbone_lr_scale=0.0,
                   pretrained=str(out / "backbone.safetensors"))
    got = load_file(str(bundle.path / "weights.safetensors"))
    convs = [k for k in start if k.endswith(".weight") and start[k].ndim == 4]
    assert convs and all(torch.equal(got[k], start[k]) for k in convs)  # frozen (BN statistics may move)
    assert bundle.manifest["training"]["config"]["backbone_lr_scale"] == 0.0
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        train(_train_fixture.cohort(tmp_path_factory), tmp_path / "c", backbone_lr_scale=1.5, progress=False)


def test_zero_epochs_keep_the_pretrained_network_and_fit_only_the_rule(pretrained, tmp_path_factory, tmp_path):
    from safetensors.torch import load_file

    from thyrofast.train import train

    import _train_fixture

    out, _ = pretrained
    start = load_file(str(out / "backbone.safetensors"))
    bundle = train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", epochs=0, image_size=32,
                   export=False, progress=False, threads=1, log=lambda m: None,
                   pretrained=str(out / "backbone.safetensors"))
    got = load_file(str(bundle.path / "weights.safetensors"))
    assert got.keys() == start.keys()
    assert all(torch.equal(got[k], start[k]) for k in start if k != "fc.bias")  # BN statistics too
    t = bundle.manifest["training"]
    # the only change: the prior correction for the cohort's class weights
    w = torch.tensor([t["class_weights"][c] for c in ("BTN", "NMTN", "MMTN")])
    torch.testing.assert_close(got["fc.bias"], start["fc.bias"] - torch.log(w))
    assert t["epochs_run"] == 0 and t["history"] == []
    assert bundle.aggregation["method"] == "pooled_logistic"


def test_zero_epochs_need_a_pretrained_class_head(tmp_path_factory, tmp_path):
    from thyrofast.models import pretrained_has_head
    from thyrofast.train import train

    import _train_fixture

    _pretrain(tmp_path / "f", images=24, epochs=1, diagnosis_weight=0.0)
    findings_only = tmp_path / "f" / "backbone.safetensors"
    assert not pretrained_has_head(findings_only, "resnet18", 1, 0.25)
    cohort = _train_fixture.cohort(tmp_path_factory)
    with pytest.raises(ValueError, match="has none for resnet18"):
        train(cohort, tmp_path / "b", epochs=0, image_size=32, progress=False, pretrained=str(findings_only))
    with pytest.raises(ValueError, match="needs a pretrained checkpoint"):
        train(cohort, tmp_path / "c", epochs=0, image_size=32, progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        train(cohort, tmp_path / "d", epochs=-1, image_size=32, progress=False)


def test_param_groups_scale_only_the_backbone():
    from thyrofast.models import build_model
    from thyrofast.train.optim import param_groups

    model = build_model("resnet18", in_channels=1, width=0.25)
    groups = param_groups(model, 0.05, [model.fc], 0.1)
    head = {id(p) for p in model.fc.parameters()}
    for g in groups:
        assert g["lr_scale"] == (1.0 if any(id(p) in head for p in g["params"]) else 0.1)
        assert all((id(p) in head) == (g["lr_scale"] == 1.0) for p in g["params"])
        assert g["weight_decay"] == (0.0 if g["params"][0].ndim <= 1 else 0.05)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
