"""Auxiliary finding heads (thyrofast.train.aux) and what training does with them."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thyrofast.train.aux import TASKS, aux_loss, read_aux_targets  # noqa: E402


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _row(**kw):
    base = {"path": "x.png", "patient_id": "p", "label": "BTN", "view": "transverse", "n_nodules": "1",
            "shown_tirads_points": "", "composition": "", "echogenicity": "", "margin": "",
            "ln_metastatic": "", "ln_short_axis_mm": ""}
    base.update(kw)
    return base


def test_targets_follow_scope_and_index_nodule_rule(tmp_path):
    rows = [
        _row(shown_tirads_points="7", composition="solid", echogenicity="very_hypoechoic", margin="smooth"),
        _row(view="lymph_node", ln_metastatic="1", ln_short_axis_mm="6.5", composition="solid"),
        _row(n_nodules="2", shown_tirads_points="3", composition="mixed"),  # index-nodule columns: not this one
        _row(view="longitudinal", composition="gravel", echogenicity="", shown_tirads_points="nan"),
    ]
    aux = read_aux_targets(_write(tmp_path / "m.csv", rows), len(rows))
    names = [t.name for t in aux.tasks]
    assert names == ["view_node", "tirads_points", "composition", "echogenicity", "margin",
                     "node_metastatic", "node_short_axis"]  # only columns present and used somewhere
    col = {n: j for j, n in enumerate(names)}
    m, v = aux.mask, aux.values
    assert m[:, col["view_node"]].all() and v[:, col["view_node"]].tolist() == [0, 1, 0, 0]
    # nodule findings: row 0 only (row 1 is a node view, row 2 has two nodules, row 3 an unknown level)
    assert m[:, col["composition"]].tolist() == [True, False, False, False]
    assert v[0, col["composition"]] == TASKS[2].values.index("solid")
    assert v[0, col["echogenicity"]] == 4  # very_hypoechoic
    # the shown nodule's own TI-RADS points count for multi-nodule patients too; NaN does not
    assert m[:, col["tirads_points"]].tolist() == [True, False, True, False]
    assert v[0, col["tirads_points"]] == pytest.approx(7 / 5)
    assert m[:, col["node_metastatic"]].tolist() == [False, True, False, False]
    assert v[1, col["node_short_axis"]] == pytest.approx(np.log(6.5) / 0.5)
    assert aux.summary()["composition"] == 1
    sub = aux.take([1, 0])
    assert sub.mask[0, col["node_metastatic"]] and not sub.mask[1, col["node_metastatic"]]


def test_no_annotation_columns_means_no_targets(tmp_path):
    rows = [{"path": "x.png", "patient_id": "p", "label": "BTN"}]
    assert read_aux_targets(_write(tmp_path / "m.csv", rows), 1) is None
    # row count mismatch (another manifest) is never silently misaligned
    rows = [_row(), _row()]
    assert read_aux_targets(_write(tmp_path / "m2.csv", rows), 3) is None


def test_loss_ignores_rows_a_task_does_not_apply_to(tmp_path):
    rows = [_row(composition="solid", echogenicity="isoechoic"), _row(view="lymph_node", ln_metastatic="0"),
            _row(composition="cystic", echogenicity="anechoic")]
    aux = read_aux_targets(_write(tmp_path / "m.csv", rows), len(rows))
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, sum(t.width for t in aux.tasks), generator=g, requires_grad=True)
    vals, mask = torch.from_numpy(aux.values), torch.from_numpy(aux.mask)
    loss = aux_loss(pred, vals, mask, aux.tasks)
    assert torch.isfinite(loss) and loss > 0
    # changing a masked-out target changes nothing
    j = [t.name for t in aux.tasks].index("node_metastatic")
    vals2 = vals.clone()
    vals2[0, j] = 1.0
    assert torch.equal(aux_loss(pred, vals2, mask, aux.tasks), loss)
    loss.backward()
    # the node row gets no gradient through the nodule-only heads
    widths = [t.width for t in aux.tasks]
    start = sum(widths[:[t.name for t in aux.tasks].index("composition")])
    assert torch.all(pred.grad[1, start:start + 4] == 0)
    assert torch.any(pred.grad[0, start:start + 4] != 0)


def _annotated_cohort(tmp_path_factory, tmp_path):
    """The session's tiny cohort plus annotation columns: every 3rd image a "lymph node" view."""
    import _train_fixture

    src = _train_fixture.cohort(tmp_path_factory)
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        node = i % 3 == 0
        r["view"] = "lymph_node" if node else "transverse"
        r["ln_metastatic"] = ("1" if r["label"] == "MMTN" else "0") if node else ""
        r["n_nodules"] = "1"
        r["echogenicity"] = "" if node else {"BTN": "hypoechoic", "NMTN": "hyperechoic", "MMTN": "isoechoic"}[r["label"]]
        r["path"] = str((src.parent / r["path"]).resolve())
    return _write(tmp_path / "manifest.csv", rows)


def test_training_uses_aux_heads_and_exports_the_bare_model(tmp_path_factory, tmp_path):
    import onnxruntime as ort

    from thyrofast.bundle import Bundle
    from thyrofast.train import train

    import _train_fixture

    manifest = _annotated_cohort(tmp_path_factory, tmp_path)
    kw = dict(_train_fixture.TRAIN_KW, epochs=2)
    msgs = []
    train(manifest, tmp_path / "a", export=True, int8=False, log=msgs.append, **kw)
    b = Bundle.load(tmp_path / "a")
    t = b.manifest["training"]
    assert t["config"]["aux_weight"] == 1.0
    assert set(t["aux_tasks"]) == {"view_node", "echogenicity", "node_metastatic"}
    assert t["aux_tasks"]["view_node"] == t["data"]["n_images"]["train"]
    assert any("auxiliary finding heads" in m for m in msgs)
    from safetensors.numpy import load_file

    assert not any(k.startswith("aux") for k in load_file(str(tmp_path / "a" / "weights.safetensors")))
    sess = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    x = np.zeros((2, *b.input_shape), np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (2, 3)
    # aux_weight=0: the same data trains the class head only
    train(manifest, tmp_path / "b", export=False, log=lambda m: None, aux_weight=0.0, **kw)
    assert Bundle.load(tmp_path / "b").manifest["training"]["aux_tasks"] is None


def test_trained_bundle_carries_a_fitted_aggregation_and_the_read_crop(tmp_path_factory):
    from thyrofast.aggregation import POOLED_LOGISTIC, check_spec
    from thyrofast.bundle import Bundle

    import _train_fixture

    path, _ = _train_fixture.trained_bundle(tmp_path_factory)
    b = Bundle.load(path)
    agg = b.aggregation
    assert agg["method"] == POOLED_LOGISTIC and check_spec(agg) == agg
    assert agg["n_patients"] == b.manifest["training"]["data"]["n_patients"]["train"]
    assert b.read_options == {"crop": "detect"}
    v = b.manifest["training"]["validation"]
    assert {"before_temperature", "after_temperature", "final"} <= set(v)
    json.dumps(b.manifest)  # plain JSON


def test_bad_aux_weight_and_crop_are_refused():
    from thyrofast.train.loop import TrainConfig

    with pytest.raises(ValueError, match="aux_weight"):
        TrainConfig(aux_weight=-1.0)
    with pytest.raises(ValueError, match="crop"):
        TrainConfig(crop="middle")
    with pytest.raises(ValueError, match="aggregation"):
        TrainConfig(aggregation="max")


def test_the_configured_augmentation_is_the_one_applied(tmp_path_factory, tmp_path, monkeypatch):
    """Regression: the loop used to call augment() with its default config, ignoring TrainConfig.augment."""
    import thyrofast.train.loop as loop
    from thyrofast.bundle import Bundle
    from thyrofast.train import train
    from thyrofast.train.augment import AugmentConfig

    import _train_fixture

    seen = []
    real = loop.augment

    def spy(x, u, cfg):
        seen.append(cfg)
        return real(x, u, cfg)

    monkeypatch.setattr(loop, "augment", spy)
    strong = {"rotate_deg": 20.0, "scale": 0.3, "translate": 0.1, "hflip": 0.0, "gain": 0.0, "contrast": 0.0}
    kw = dict(_train_fixture.TRAIN_KW, epochs=1)
    train(_train_fixture.cohort(tmp_path_factory), tmp_path / "b", export=False, log=lambda m: None,
          augment_config=strong, **kw)
    assert seen and all(c == AugmentConfig(**strong) for c in seen)
    assert Bundle.load(tmp_path / "b").manifest["training"]["config"]["augment"] == strong
