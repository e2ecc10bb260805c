"""`thyrofast demo --quick` end to end on a tiny cohort, and its resumability."""
from __future__ import annotations

import json

import pytest

from thyrofast.demo import RECIPE, DemoConfig, run_demo

pytestmark = pytest.mark.slow


def test_quick_demo_runs_and_resumes(tmp_path, capsys):
    cfg = DemoConfig(out=tmp_path / "demo", quick=True, patients=40, image_size=48, workers=1, progress=False)
    report = run_demo(cfg, log=lambda m: None)
    for key in ("model", "bayes", "readers", "timings_s", "provenance", "paper"):
        assert key in report, key
    for who in (report["model"], report["bayes"], report["readers"]["junior"], report["readers"]["senior"]):
        assert set(who["auc"]) == {"BTN", "NMTN", "MMTN"}
        assert "value" in who["macro_auc"] and "ci" in who["macro_auc"]
    assert set(report["timings_s"]) >= {"synth", "pretrain", "train", "export", "evaluate", "bench"}
    prov = report["provenance"]
    assert len(prov["training_data_fingerprint"]) == 64
    members = RECIPE["pretrain_members"]  # 240 lesions per ensemble member
    assert prov["pretraining"]["n_images"]["train"] + prov["pretraining"]["n_images"]["held_out"] == 240 * members
    assert "disjoint from study cohorts" in prov["pretraining"]["data"]
    assert prov["pretraining"]["diagnosis_target"] == RECIPE["pretrain_diagnosis_target"] == "lesion"
    # the recipe: the pretrained network is kept, the cohort fits only calibration and the patient rule
    card = json.loads((tmp_path / "demo" / "bundle" / "thyrofast.json").read_text())
    training = card["training"]
    assert training["config"]["epochs"] == 0 and training["epochs_run"] == 0
    assert card.get("members", 1) == members
    out = tmp_path / "demo"
    for f in ("report.md", "report.json", "roc.png", "confusion_matrix.png"):
        assert (out / f).exists(), f
    assert "not clinical" in (out / "report.md").read_text()
    summary = capsys.readouterr().out
    assert "macro AUC" in summary and "paper CNN" in summary
    # a second run skips every finished step and gives the same evaluation
    msgs = []
    again = run_demo(cfg, log=msgs.append)
    assert sum("skipped" in m for m in msgs) == 6
    assert again["model"] == report["model"]
    state = json.loads((out / "demo_state.json").read_text())
    assert set(state["done"]) >= {"synth", "pretrain", "train", "export", "evaluate", "bench", "summary"}


def test_demo_ensemble_settings(tmp_path, capsys):
    from thyrofast.cli import main

    assert DemoConfig(out=tmp_path).resolved()["pretrain_members"] == RECIPE["pretrain_members"]
    assert DemoConfig(out=tmp_path, pretrain_members=2).resolved()["pretrain_members"] == 2
    with pytest.raises(ValueError, match="needs epochs=0"):
        DemoConfig(out=tmp_path, pretrain_members=2, epochs=3)
    for bad in (0, 9, True):
        with pytest.raises(ValueError, match="pretrain_members must be an integer in"):
            DemoConfig(out=tmp_path, pretrain_members=bad)
    assert main(["demo", str(tmp_path / "d"), "--pretrain-members", "2", "--epochs", "3"]) == 2
    assert "needs epochs=0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before any work


def test_demo_pretrain_target(tmp_path, capsys):
    from thyrofast.cli import main

    assert DemoConfig(out=tmp_path).resolved()["pretrain_diagnosis_target"] == "lesion"
    assert DemoConfig(out=tmp_path, pretrain_target="patient").resolved()["pretrain_diagnosis_target"] == "patient"
    with pytest.raises(ValueError, match="pretrain_target must be one of"):
        DemoConfig(out=tmp_path, pretrain_target="image")
    with pytest.raises(SystemExit):
        main(["demo", str(tmp_path / "d"), "--pretrain-target", "image"])
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
