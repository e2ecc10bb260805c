"""The operating point: a threshold on the positive class chosen on validation patients, stored in the
bundle card, used by predict's ``decision`` and reported by evaluate beside the argmax."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thyrofast.card_schema import check_card_fields
from thyrofast.operating_point import check_operating_point, choose_threshold, decide

_CACHE: dict = {}


def test_youden_and_target_sensitivity():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    s = np.array([.1, .2, .3, .75, .4, .8, .85, .9, .95, .99])
    op = choose_threshold(y, s)  # J: 5/6 + 4/4 - 1 between 0.75 and 0.8 (vs 6/6 + 3/4 - 1 below 0.4)
    assert op["rule"] == "youden" and op["threshold"] == pytest.approx(0.775)
    assert op["val_sensitivity"] == pytest.approx(5 / 6) and op["val_specificity"] == 1.0
    hi = choose_threshold(y, s, target_sensitivity=0.9)  # the highest threshold calling every positive
    assert hi["rule"] == "sensitivity>=0.9" and hi["threshold"] == pytest.approx(0.35)
    assert (hi["val_sensitivity"], hi["val_specificity"]) == (1.0, 0.75)
    assert choose_threshold(y, s, target_sensitivity=1.0)["val_sensitivity"] == 1.0
    with pytest.raises(ValueError, match="positive and negative"):
        choose_threshold(np.ones(3, bool), [.1, .2, .3])
    with pytest.raises(ValueError, match="target sensitivity"):
        choose_threshold(y, s, target_sensitivity=0)


def test_decide():
    P = np.array([[0.3, 0.7], [0.2, 0.8], [0.5, 0.5]])
    op = {"positive": "malignant", "threshold": 0.75}
    assert decide(P, ("benign", "malignant"), op) == ["benign", "malignant", "benign"]
    assert decide(P, ("benign", "malignant"), None) == ["malignant", "malignant", "benign"]
    P3 = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert decide(P3, ("BTN", "NMTN", "MMTN"), {"positive": "MMTN", "threshold": 0.8}) == ["BTN", "NMTN"]


def test_card_schema_checks_the_operating_point():
    good = {"positive": "malignant", "threshold": 0.4, "rule": "sensitivity>=0.9",
            "val_sensitivity": 0.95, "val_specificity": 0.5}
    check_operating_point(good, ["benign", "malignant"])
    for bad, msg in (({**good, "positive": "BTN"}, "positive"), ({**good, "threshold": 1.5}, "threshold"),
                     ({**good, "threshold": True}, "threshold"), ({**good, "rule": "argmax"}, "rule"),
                     ({**good, "val_specificity": -1}, "val_specificity"), ([], "object")):
        with pytest.raises(ValueError, match=msg):
            check_operating_point(bad, ["benign", "malignant"])


def _bad(msg):
    raise ValueError(msg)


def test_card_with_a_bad_operating_point_is_refused(tmp_path_factory):
    from thyrofast.bundle import Bundle

    path = _imbalanced(tmp_path_factory)[0]
    card = json.loads((Path(path) / "thyrofast.json").read_text())
    check_card_fields(card, _bad)
    card["operating_point"]["positive"] = "nobody"
    with pytest.raises(ValueError, match="operating_point"):
        check_card_fields(card, _bad)
    assert Bundle.load(path).operating_point["positive"] == "malignant"


def _fixture():
    import _train_fixture

    return _train_fixture


def _imbalanced(tmp_path_factory):
    """(bundle, manifest): 18 % benign / 82 % malignant patients, a third of them held out; 30 % of the
    malignant patients look benign, so the classes overlap."""
    if "imb" not in _CACHE:
        pytest.importorskip("torch")
        from thyrofast.train import train

        fx = _fixture()
        base = tmp_path_factory.mktemp("imb")
        manifest = fx.write_binary_cohort(base / "data", n_benign=18, n_malignant=82, images_per_patient=2,
                                          splits=("train", "val", "test"), benign_looking=0.3)
        train(manifest, base / "bundle", export=False, log=lambda m: None, **{**fx.TRAIN_KW, "epochs": 3})
        _CACHE["imb"] = (base / "bundle", manifest)
    return _CACHE["imb"]


def test_operating_point_beats_argmax_on_held_out_patients(tmp_path_factory, tmp_path):
    """The README's claim, measured: on held-out patients of an 18/82 cohort, balanced accuracy at
    the stored operating point >= that of the argmax (which calls nearly everyone malignant)."""
    from thyrofast.bundle import Bundle
    from thyrofast.cli import main
    from thyrofast.evaluate.core import evaluate_bundle

    path, manifest = _imbalanced(tmp_path_factory)
    op = Bundle.load(path).operating_point
    assert op["positive"] == "malignant" and op["rule"] == "youden" and op["n_val_patients"] == 33
    res = evaluate_bundle(str(path), str(manifest), split="test", n_boot=200, progress=False, backend="torch")
    at, am = res["operating_point"]["at_threshold"], res["operating_point"]["argmax"]
    # measured (seed 0, 33 test patients: 6 benign, 27 malignant): operating point 0.796 / 0.879
    # (balanced accuracy / accuracy), argmax 0.500 / 0.818 (specificity 0: no patient called benign)
    assert at["balanced_accuracy"] >= am["balanced_accuracy"]
    assert at["balanced_accuracy"] >= 0.7 and at["specificity"] > am["specificity"]
    assert res["model"]["balanced_accuracy"]["value"] == pytest.approx(am["balanced_accuracy"])
    # predict reports the decision at the operating point beside the argmax
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(path), str(manifest), "--out", str(out), "--no-progress",
                 "--backend", "torch"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    for r in recs:
        want = "malignant" if r["probs"]["malignant"] >= op["threshold"] else "benign"
        assert r["decision"] == want and r["pred"] == max(r["probs"], key=r["probs"].get)
    assert any(r["decision"] != r["pred"] for r in recs)


def test_target_sensitivity(tmp_path_factory, tmp_path):
    pytest.importorskip("torch")
    from thyrofast.train import train

    fx = _fixture()
    _, manifest = _imbalanced(tmp_path_factory)
    b = train(manifest, tmp_path / "s", export=False, log=lambda m: None, target_sensitivity=0.99,
              **{**fx.TRAIN_KW, "epochs": 3})
    op = b.operating_point
    assert op["rule"] == "sensitivity>=0.99" and op["val_sensitivity"] >= 0.99
    with pytest.raises(ValueError, match="not one of the data's classes"):
        train(manifest, tmp_path / "x", export=False, log=lambda m: None, positive="BTN",
              **{**fx.TRAIN_KW, "epochs": 1})
