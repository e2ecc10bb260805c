"""Named endpoints (``malignant = NMTN + MMTN``): parsing, metrics against a NumPy reference, evaluate's report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thyrofast.evaluate import evaluate_predictions, write_report
from thyrofast.evaluate.endpoints import endpoint_metrics, parse_endpoint, parse_endpoints
from thyrofast.metrics import roc_auc

CLS = ("BTN", "NMTN", "MMTN")


def test_parse():
    assert parse_endpoint("malignant=nmtn+MMTN", CLS) == ("malignant", ("NMTN", "MMTN"))
    assert parse_endpoint(" m = MMTN + NMTN ", CLS) == ("m", ("NMTN", "MMTN"))  # the model's order
    assert parse_endpoints({"malignant": ["MMTN", "NMTN"]}, CLS) == {"malignant": ("NMTN", "MMTN")}
    assert parse_endpoints("x=BTN", CLS) == {"x": ("BTN",)}
    assert parse_endpoints(None, CLS) == {}
    for bad, msg in (("malignant", "NAME=CLASS"), ("=MMTN", "NAME=CLASS"), ("m=", "NAME=CLASS"),
                     ("m=MMTN+cancer", "'cancer' is not one of the classes"), ("all=BTN+NMTN+MMTN", "every class")):
        with pytest.raises(ValueError, match=msg):
            parse_endpoint(bad, CLS)
    with pytest.raises(ValueError, match="twice"):
        parse_endpoints(["m=MMTN", "m=NMTN"], CLS)


def _cases(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, P


def test_metrics_match_a_direct_computation():
    y, P = _cases()
    calls = P.argmax(1)
    e = endpoint_metrics(y, P, calls, CLS, ("NMTN", "MMTN"))
    truth, called = y >= 1, calls >= 1
    assert e["auc"]["value"] == pytest.approx(roc_auc(truth, P[:, 1] + P[:, 2]))
    assert e["auc"]["value"] == pytest.approx(roc_auc(truth, 1 - P[:, 0]))  # the sum is 1 - P(BTN)
    assert e["sensitivity"]["value"] == pytest.approx(called[truth].mean())
    assert e["specificity"]["value"] == pytest.approx((~called[~truth]).mean())
    assert (e["n_pos"], e["n_neg"]) == (int(truth.sum()), int((~truth).sum()))
    lo, hi = e["auc"]["ci"]
    assert lo < e["auc"]["value"] < hi


def _write(tmp_path, y, P):
    rows = ["path,patient_id,label"]
    recs = []
    for i, (k, p) in enumerate(zip(y, P)):
        rows.append(f"img/{i}.png,p{i},{CLS[k]}")
        recs.append({"kind": "image", "input": str(tmp_path / "img" / f"{i}.png"), "status": "ok",
                     "probs": dict(zip(CLS, map(float, p)))})
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return recs


def test_evaluate_reports_the_endpoint(tmp_path):
    y, P = _cases()
    recs = _write(tmp_path, y, P)
    res = evaluate_predictions(recs, str(tmp_path / "m.csv"), n_boot=200, endpoints=["malignant=NMTN+MMTN"])
    e = res["endpoints"]["malignant"]
    assert e["calls"] == "argmax" and e["members"] == ["NMTN", "MMTN"]
    assert e["auc"]["value"] == pytest.approx(roc_auc(y >= 1, 1 - P[:, 0]))
    # at an operating point the calls are its decisions: MMTN only when P(MMTN) >= 0.9
    op = {"positive": "MMTN", "threshold": 0.9, "rule": "youden"}
    res2 = evaluate_predictions(recs, str(tmp_path / "m.csv"), n_boot=200, endpoints={"mmtn": ["MMTN"]},
                                operating_point=op)
    e2 = res2["endpoints"]["mmtn"]
    assert e2["calls"] == "operating point"
    assert e2["sensitivity"]["value"] == pytest.approx((P[y == 2, 2] >= 0.9).mean())
    written = write_report(res, tmp_path / "rep", figures=False)
    md = Path(written["report.md"]).read_text()
    assert "malignant" in md and "NMTN + MMTN" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["endpoints"]["malignant"]["n_pos"] == e["n_pos"]
    with pytest.raises(ValueError, match="not one of the classes"):
        evaluate_predictions(recs, str(tmp_path / "m.csv"), n_boot=200, endpoints=["m=cancer"])


def test_cli_endpoint(tmp_path, capsys):
    from thyrofast.cli import main

    y, P = _cases()
    recs = _write(tmp_path, y, P)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["evaluate", "--predictions", str(tmp_path / "p.jsonl"), "--labels", str(tmp_path / "m.csv"),
                 "--report", str(tmp_path / "r"), "--no-figures", "--bootstrap", "200",
                 "--endpoint", "malignant=NMTN+MMTN"]) == 0
    assert "endpoint malignant = NMTN+MMTN: AUC" in capsys.readouterr().out
    assert main(["evaluate", "--predictions", str(tmp_path / "p.jsonl"), "--labels", str(tmp_path / "m.csv"),
                 "--report", str(tmp_path / "r"), "--no-figures", "--bootstrap", "200",
                 "--endpoint", "malignant"]) == 2


def test_train_declares_endpoints_in_the_bundle_and_evaluate_reports_them(tmp_path):
    pytest.importorskip("torch")
    from thyrofast.bundle import Bundle
    from thyrofast.card_schema import check_card_fields
    from thyrofast.evaluate.core import evaluate_bundle
    from thyrofast.train import train

    import _train_fixture as fx

    manifest = fx.write_cohort(tmp_path / "data", patients_per_class=(6, 6, 6), images_per_patient=2)
    with pytest.raises(ValueError, match="'cancer' is not one of the classes"):  # before any training
        train(manifest, tmp_path / "x", endpoints=["malignant=NMTN+cancer"], **{**fx.TRAIN_KW, "epochs": 1})
    assert not (tmp_path / "x").exists()
    b = train(manifest, tmp_path / "b", export=False, log=lambda m: None, endpoints=["malignant=MMTN+NMTN"],
              **{**fx.TRAIN_KW, "epochs": 1})
    assert Bundle.load(b.path).manifest["endpoints"] == {"malignant": ["NMTN", "MMTN"]}
    res = evaluate_bundle(str(b.path), str(manifest), split="test", n_boot=200, progress=False, backend="torch")
    e = res["endpoints"]["malignant"]
    assert e["members"] == ["NMTN", "MMTN"] and (e["n_pos"], e["n_neg"]) == (2, 1)  # one test patient per class
    card = dict(Bundle.load(b.path).manifest)

    def bad(msg):
        raise ValueError(msg)

    for wrong in ({"m": ["BTN", "NMTN", "MMTN"]}, {"m": ["cancer"]}, {"m": []}, ["NMTN"], {"m": ["MMTN", "MMTN"]}):
        with pytest.raises(ValueError, match="endpoints"):
            check_card_fields({**card, "endpoints": wrong}, bad)
