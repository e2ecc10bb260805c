"""`thyrofast demo --quick` end to end on a tiny cohort, and its resumability."""
from __future__ import annotations

import json

import pytest

from thyrofast.demo import DemoConfig, run_demo

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
    assert prov["pretraining"]["n_images"]["train"] + prov["pretraining"]["n_images"]["held_out"] == 240
    assert "disjoint from study cohorts" in prov["pretraining"]["data"]
    # the recipe: the pretrained network is kept, the cohort fits only calibration and the patient rule
    training = json.loads((tmp_path / "demo" / "bundle" / "thyrofast.json").read_text())["training"]
    assert training["config"]["epochs"] == 0 and training["epochs_run"] == 0
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
