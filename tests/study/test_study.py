"""`thyrofast study`: the protocol files, the runner's resuming and report (quick protocol), the report's statistics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from thyrofast.study import analysis as A
from thyrofast.study import load_protocol, run_study


def test_packaged_protocols_load_and_use_fresh_seeds():
    full = load_protocol("full")
    assert len(full["replicates"]) >= 5
    assert set(full["rungs"]) == {"a_none", "b_findings", "c_patient", "d_lesion"}
    assert full["large_cohort"]["patients"] >= 1000
    assert all(r["cohort_seed"] >= 100 for r in full["replicates"])
    assert full["primary"]["non_inferiority_margin"] == 0.05
    assert full["frozen_code_commit"].startswith("bb79175")  # amendment 1 (docs/study_protocol.md)
    assert [a["id"] for a in full["amendments"]] == [1] and full["amendments"][0]["before_any_result"]
    # the recipe of rung (d) is the demo's
    from thyrofast.demo import RECIPE

    d = full["rungs"]["d_lesion"]
    assert d["pretrain"]["images"] == RECIPE["pretrain_images"]
    assert d["pretrain"]["members"] == RECIPE["pretrain_members"]
    assert d["pretrain"]["diagnosis_target"] == RECIPE["pretrain_diagnosis_target"]
    assert d["train"]["epochs"] == RECIPE["epochs"]
    assert load_protocol("quick")["sha256"] != full["sha256"]


def test_every_frozen_path_exists():
    # a frozen path that no longer exists would make the frozen-paths check vacuous for it
    # (thyrofast/preprocess.py and preprocessing.py became a package after the first freeze)
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]  # the repository these tests belong to (tests/study/ -> root)
    missing = [p for p in load_protocol("full")["frozen_paths"] if not (root / p).exists()]
    assert not missing, f"frozen paths that do not exist: {missing}"


def test_protocol_refuses_development_seeds_and_shared_seeds():
    proto = json.loads(json.dumps(load_protocol("quick")))
    proto["replicates"][0]["cohort_seed"] = 1  # seed 1 chose the demo's recipe
    with pytest.raises(ValueError, match="development data"):
        load_protocol(proto)
    proto["replicates"][0]["cohort_seed"] = proto["replicates"][1]["cohort_seed"]
    with pytest.raises(ValueError, match="own cohort seed"):
        load_protocol(proto)
    with pytest.raises(ValueError, match="no protocol file"):
        load_protocol("no-such-protocol.json")


def test_calibration_slope_and_intercept_match_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    lp = rng.normal(0, 1.5, 400)
    p = 1 / (1 + np.exp(-lp))
    y = (rng.random(400) < 1 / (1 + np.exp(-(0.3 + 0.6 * lp)))).astype(int)  # too extreme predictions
    got = A.calibration_slope_intercept(y, p)
    ref_slope = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit().params[1]
    ref_int = sm.GLM(y, np.ones((400, 1)), family=sm.families.Binomial(), offset=lp).fit().params[0]
    assert got["slope"] == pytest.approx(ref_slope, abs=1e-6)
    assert got["intercept"] == pytest.approx(ref_int, abs=1e-6)
    assert got["slope"] < 1  # the data were made with slope 0.6
    assert math.isnan(A.calibration_slope_intercept(np.ones(5), np.full(5, 0.5))["slope"])


def test_net_benefit_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    # t = 0.5: treat patients 0 and 2: TP 1, FP 1 -> 1/5 - 1/5 * 1 = 0
    # t = 0.25: treat 0, 1, 2: TP 2, FP 1 -> 2/5 - 1/5 * (1/3)
    assert A.net_benefit(y, p, [0.5, 0.25]) == pytest.approx([0.0, 0.4 - 0.2 / 3])
    assert A.treat_all_net_benefit(y, [0.5]) == pytest.approx([0.4 - 0.6])


def test_pooled_difference_and_holm():
    d = A.pooled_difference([-0.02, -0.04, -0.03], [0.01, 0.01, 0.01])
    se = math.sqrt(0.01 ** 2 + 0.01 ** 2 / 3)
    assert d["mean"] == pytest.approx(-0.03) and d["se"] == pytest.approx(se)
    assert d["ci"][0] == pytest.approx(-0.03 - 1.959964 * se, abs=1e-5)
    assert A.holm({"a": 0.01, "b": 0.04}) == pytest.approx({"a": 0.02, "b": 0.04})


@pytest.mark.slow
def test_quick_study_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "study"
    rep = run_study(out=out, quick=True, workers=2, device="cpu", progress=False, log=lambda m: None)
    proto = load_protocol("quick")
    n_units = len(proto["replicates"]) * len(proto["rungs"])
    assert len(rep["units_done"]) == n_units and rep["units_missing"] == []
    for rung in proto["rungs"]:  # every rung pooled over every replicate: no best-of
        pooled = rep["pooled"][rung]
        assert pooled["replicates"] == [r["id"] for r in proto["replicates"]]
        assert pooled["large"]["macro_auc"]["n"] == len(proto["replicates"])
        assert "non_inferior" in pooled["vs_bayes_macro_auc_large"]
        assert set(pooled["vs_readers_pooled_test"]) == {"junior", "senior"}
        assert set(pooled["subgroups_large"]) >= {"node_view=yes", "node_view=no"}
    assert set(rep["ladder_large"]) == {"b_findings - a_none", "c_patient - b_findings", "d_lesion - c_patient",
                                        "d_lesion - a_none"}
    assert "noisy-Bayes raters" in rep["reader_description"]
    md = (out / "report.md").read_text()
    assert "not clinical" in md and "oracle" in md and "d_lesion (primary)" in md
    assert "compute, units and cohorts summed" in md and rep["wall"]["calls_cut_off"] == 0
    state = json.loads((out / "state.json").read_text())
    assert [c["status"] for c in state["calls"]] == ["done"] and state["calls"][0]["units_run"] == n_units
    # each unit's result is its own file; a rerun skips them all
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == n_units
    stamps = {p.name: p.stat().st_mtime_ns for p in results}
    msgs = []
    run_study(out=out, quick=True, workers=1, device="cpu", progress=False, log=msgs.append)
    assert not any("..." in m for m in msgs if m.startswith("study: q")), msgs
    assert {p.name: p.stat().st_mtime_ns for p in results} == stamps
    # a lost result is redone from the unit's kept bundle, and only it
    lost = results[0]
    rep_id, rung = lost.stem.split("__")
    card = out / "units" / rep_id / rung / "bundle" / "thyrofast.json"
    card_stamp = card.stat().st_mtime_ns
    lost.unlink()
    msgs = []
    rep2 = run_study(out=out, quick=True, workers=1, device="cpu", progress=False, log=msgs.append)
    assert [m for m in msgs if m.endswith("...")] == [f"study: {lost.stem.replace('__', ' / ')} ..."]
    assert len(rep2["units_done"]) == n_units
    assert card.stat().st_mtime_ns == card_stamp  # the finished bundle was used, not trained again
    # another protocol in the same folder is refused
    other = json.loads(json.dumps(proto))
    other["n_boot"] = 300
    with pytest.raises(FileExistsError):
        run_study(other, out, progress=False)


def test_cli_bad_protocol_exits_2(tmp_path, capsys):
    from thyrofast.cli import main

    rc = main(["study", str(tmp_path / "s"), "--protocol", str(tmp_path / "missing.json"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no protocol file" in err and err.count("\n") == 1


def test_cohort_tables_follow_refitted_readers(tmp_path):
    from thyrofast.study import Study

    msgs = []
    s = Study("quick", tmp_path / "s", workers=1, progress=False, log=msgs.append)
    folder, table = s.cohort(977, 6)
    assert len(table["ids"]) == 6 and set(table["readers"]) == {"junior", "senior"}
    assert len(table["reader_draws"]["senior"]["accuracy"]) == s.proto["readers"]["draws"]
    # a cohort made with other reader constants (e.g. before the fit) gets its reader calls redone
    path = tmp_path / "s" / "cohorts" / "seed977_n6.table.json"
    stale = json.loads(path.read_text())
    current = stale["reader_models"]
    stale["reader_models"] = {"junior": {"eps": 0.28, "decision_noise": 1.0}, "senior": {"eps": 0.09,
                                                                                       "decision_noise": 0.5}}
    path.write_text(json.dumps(stale))
    (folder / "readers.csv").write_text("reader,patient_id,call\n")
    _, again = s.cohort(977, 6)
    assert any("reader constants changed" in m for m in msgs)
    assert again["reader_models"] == current and again["readers"] == table["readers"]


def test_wall_summary_sums_calls_and_counts_cut_off_ones():
    from thyrofast.study.report import wall_summary

    state = {"seconds": {"cohort seed200_n1000": 480.0, "cohort seed101": 100.0, "r1/a_none": 300.5},
             "calls": [{"wall_s": 900.0, "units_run": 1, "status": "done"},
                       {"wall_s": 1200.0, "units_run": 2, "status": "running"},  # killed: no finally ran
                       {"wall_s": 50.0, "units_run": 0, "status": "interrupted"},
                       {"wall_s": 30.0, "units_run": 0}]}  # a call written by an older runner
    w = wall_summary(state)
    assert w == {"wall_s": 2180.0, "calls": 4, "calls_cut_off": 2, "compute_s": 880.5}
    assert wall_summary({"seconds": {}, "wall_s_total": 12.0})["wall_s"] == 12.0  # no calls list


def test_a_cut_off_call_keeps_its_wall_time_so_far(tmp_path):
    from thyrofast.study import Study

    s = Study("quick", tmp_path / "s", workers=1, progress=False, log=lambda m: None)
    s.large = lambda: (None, None)
    seen = []

    def fake_unit(rep, rung):
        on_disk = json.loads(s.state_path.read_text())["calls"][-1]
        seen.append(dict(on_disk))
        if len(seen) == 2:  # what a kill leaves behind: the state as written after the last finished unit
            raise RuntimeError("cut off")
        path = s.result_path(rep, rung)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        return {"seconds": 0.0}

    s.run_unit = fake_unit
    with pytest.raises(RuntimeError, match="cut off"):
        s.run()
    assert seen[0]["status"] == "running" and seen[0]["units_run"] == 0
    assert seen[1]["status"] == "running" and seen[1]["units_run"] == 1 and seen[1]["wall_s"] >= 0.0
    state = json.loads(s.state_path.read_text())
    assert len(state["calls"]) == 1
    assert state["calls"][0]["status"] == "interrupted" and state["calls"][0]["units_run"] == 1
    assert state["wall_s_total"] == state["calls"][0]["wall_s"]
