"""thyrofast.evaluate: from prediction records (or a classifier) to report.json, report.md and figures."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import thyrofast
from thyrofast import metrics as M
from thyrofast.errors import InputError
from thyrofast.evaluate import evaluate_bundle, evaluate_predictions, render_markdown, write_report
from thyrofast.evaluate import inputs as I

sklearn_metrics = pytest.importorskip("sklearn.metrics")
CLASSES = ("BTN", "NMTN", "MMTN")
NB = 300  # bootstrap replicates in tests: enough to exercise, quick


def make_cohort(root: Path, counts=(10, 4, 20), images=(2, 5), seed=0, split="test", bayes=True,
                readers=True):
    """A small labelled cohort: manifest.csv, readers.csv and results.jsonl (absolute inputs)."""
    rng = np.random.default_rng(seed)
    rows, recs, rdr = [], [], []
    pid = 0
    for k, n in enumerate(counts):
        for _ in range(n):
            p = f"P{pid:03d}"
            pid += 1
            latent = rng.normal(0, 1, 3)
            latent[k] += 1.5
            post = np.exp(1.2 * latent)
            post /= post.sum()
            for j in range(int(rng.integers(*images))):
                path = f"img/{p}_{j}.png"
                row = {"path": path, "patient_id": p, "label": CLASSES[k], "split": split}
                if bayes:
                    row.update({f"bayes_{c}": post[i] for i, c in enumerate(CLASSES)})
                rows.append(row)
                lg = latent + rng.normal(0, 1.0, 3)
                pr = np.exp(lg) / np.exp(lg).sum()
                recs.append({"kind": "image", "input": str(root / path), "frame_index": 0, "status": "ok",
                             "probs": dict(zip(CLASSES, pr.tolist())), "pred": CLASSES[int(pr.argmax())],
                             "provenance": {"thyrofast": "0.1.0", "bundle_sha256": "ab" * 32,
                                            "backend": "onnxruntime", "precision": "fp32", "device": "cpu"}})
            for name, noise in (("junior", 1.4), ("senior", 0.8)):
                sc = latent + rng.normal(0, noise, 3)
                s = np.exp(sc) / np.exp(sc).sum()
                rdr.append({"reader": name, "patient_id": p, "call": CLASSES[int(sc.argmax())],
                            **{f"score_{c}": s[i] for i, c in enumerate(CLASSES)}, "split": split})
    root.mkdir(parents=True, exist_ok=True)
    _write_csv(root / "manifest.csv", rows)
    if readers:
        _write_csv(root / "readers.csv", rdr)
    with open(root / "results.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    return root / "results.jsonl", root / "manifest.csv", (root / "readers.csv" if readers else None), recs


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def result(cohort):
    preds, man, rd, _ = cohort
    return evaluate_predictions(preds, man, rd, n_boot=NB)


def _patient_probs(recs, manifest):
    """Independent aggregation: normalized geometric mean of each patient's image probabilities."""
    with open(manifest) as f:
        pid_of = {r["path"]: (r["patient_id"], CLASSES.index(r["label"])) for r in csv.DictReader(f)}
    by = {}
    for r in recs:
        rel = "img/" + Path(r["input"]).name
        pid, lab = pid_of[rel]
        by.setdefault(pid, (lab, []))[1].append([r["probs"][c] for c in CLASSES])
    ids = sorted(by)
    P = []
    for p in ids:
        g = np.exp(np.log(np.array(by[p][1])).mean(axis=0))
        P.append(g / g.sum())
    return ids, np.array([by[p][0] for p in ids]), np.array(P)


# ----------------------------------------------------------------------------
# numbers


def test_patient_level_numbers_match_an_independent_computation(cohort, result):
    _, man, _, recs = cohort
    ids, y, P = _patient_probs(recs, man)
    m = result["model"]
    assert result["level"] == "patient" and m["n"] == len(ids) == 34
    assert result["counts"]["patients_per_class"] == {"BTN": 10, "NMTN": 4, "MMTN": 20}
    for k, c in enumerate(CLASSES):
        ref = sklearn_metrics.roc_auc_score(y == k, P[:, k])
        assert m["auc"][c]["value"] == pytest.approx(ref, abs=1e-12)
        auc, lo, hi = M.delong_ci(y == k, P[:, k])
        assert m["auc"][c]["ci"] == pytest.approx((lo, hi)) and m["auc"][c]["ci_method"] == "delong"
    pred = P.argmax(1)
    assert m["accuracy"]["value"] == pytest.approx((pred == y).mean())
    assert m["accuracy"]["ci"] == pytest.approx(M.wilson_ci(int((pred == y).sum()), len(y)))
    np.testing.assert_array_equal(m["confusion_matrix"]["counts"],
                                  sklearn_metrics.confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert m["kappa"]["value"] == pytest.approx(sklearn_metrics.cohen_kappa_score(y, pred))
    assert m["macro_auc"]["value"] == pytest.approx(
        sklearn_metrics.roc_auc_score(y, P, multi_class="ovr", average="macro"))
    assert m["calibration"]["ece"]["value"] == pytest.approx(M.ece(y, P))
    # every estimate carries a finite interval that contains it
    for entry in [*m["auc"].values(), m["macro_auc"], m["micro_auc"], m["accuracy"], m["kappa"],
                  m["calibration"]["ece"]]:
        lo, hi = entry["ci"]
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= entry["value"] + 1e-12
        assert entry["value"] <= hi + 1e-12


def test_readers_bayes_and_comparisons(cohort, result):
    _, man, rd, recs = cohort
    ids, y, P = _patient_probs(recs, man)
    assert set(result["readers"]) == {"junior", "senior"} and "bayes" in result
    with open(rd) as f:
        rows = [r for r in csv.DictReader(f) if r["reader"] == "senior"]
    S = np.array([[float(r[f"score_{c}"]) for c in CLASSES] for r in sorted(rows, key=lambda r: r["patient_id"])])
    calls = np.array([CLASSES.index(r["call"]) for r in sorted(rows, key=lambda r: r["patient_id"])])
    sen = result["readers"]["senior"]
    assert sen["accuracy"]["value"] == pytest.approx((calls == y).mean())
    assert "calibration" not in sen  # reader scores are not probabilities
    for k, c in enumerate(CLASSES):
        assert sen["auc"][c]["value"] == pytest.approx(M.roc_auc(y == k, S[:, k]))
        op = sen["operating_points"][c]
        assert op["tpr"] == pytest.approx(((calls == k) & (y == k)).sum() / (y == k).sum())
        assert op["fpr"] == pytest.approx(((calls == k) & (y != k)).sum() / (y != k).sum())
        z, p = M.delong_test(y == k, P[:, k], S[:, k])
        d = result["comparisons"]["senior"]["delong"][c]
        assert (d["z"], d["p"]) == pytest.approx((z, p))
    mc = M.mcnemar(P.argmax(1) == y, calls == y)
    got = result["comparisons"]["senior"]["mcnemar"]
    assert (got["p"], got["b_model_only_correct"], got["c_reference_only_correct"]) == pytest.approx(
        (mc.pvalue, mc.b, mc.c))
    assert set(result["comparisons"]) == {"bayes", "junior", "senior"}


def test_image_level_uses_patient_clusters(cohort):
    preds, man, rd, recs = cohort
    r = evaluate_predictions(preds, man, rd, level="image", n_boot=NB)
    m = r["model"]
    assert m["n"] == len(recs) and m["unit"] == "image"
    assert m["auc"]["BTN"]["ci_method"].startswith("cluster bootstrap")
    assert m["accuracy"]["ci_method"].startswith("cluster bootstrap")
    assert "model_patient" in r and r["model_patient"]["n"] == 34
    assert any("image level" in n for n in r["notes"])
    # comparisons are per patient
    assert r["comparisons"]["junior"]["n"] == 34


def test_bootstrap_is_reproducible(cohort):
    preds, man, _, _ = cohort
    a = evaluate_predictions(preds, man, n_boot=NB, seed=5)
    b = evaluate_predictions(preds, man, n_boot=NB, seed=5)
    assert a["model"]["macro_auc"] == b["model"]["macro_auc"]
    assert a["model"]["per_class"]["NMTN"]["f1"] == b["model"]["per_class"]["NMTN"]["f1"]


def test_aggregation_is_renormalized_mean_log_probability():
    t = I.Table(ids=["a", "a", "b"], y=np.array([0, 0, 2]),
                probs=np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]))
    agg = I.aggregate_patients(t)
    g = np.sqrt(np.array([0.8 * 0.2, 0.1 * 0.6, 0.1 * 0.2]))
    np.testing.assert_allclose(agg.probs[0], g / g.sum())
    np.testing.assert_allclose(agg.probs[1], [0.1, 0.1, 0.8])
    assert agg.ids == ["a", "b"] and list(agg.y) == [0, 2]


def test_a_fitted_aggregation_rule_is_applied(cohort, tmp_path):
    """evaluate_predictions(aggregation=spec) and `--aggregation-from BUNDLE` use the fitted rule."""
    from thyrofast import aggregation as A
    from thyrofast.cli import main as cli

    preds, man, rd, recs = cohort
    ids, y, _ = _patient_probs(recs, man)
    with open(man) as f:
        pid_of = {r["path"]: r["patient_id"] for r in csv.DictReader(f)}
    img_ids = [pid_of["img/" + Path(r["input"]).name] for r in recs]
    probs = np.array([[r["probs"][c] for c in CLASSES] for r in recs])
    labels = [y[ids.index(p)] for p in img_ids]
    spec = A.fit_pooled_logistic(np.log(probs), img_ids, labels, l2=3.0)
    res = evaluate_predictions(preds, man, rd, n_boot=NB, aggregation=spec)
    assert res["aggregation"] == "pooled_logistic"
    agg = A.aggregate(probs, img_ids, spec)
    want = np.array([agg[p][0] for p in ids])
    auc = [sklearn_metrics.roc_auc_score(y == k, want[:, k]) for k in range(3)]
    assert [res["model"]["auc"][c]["value"] for c in CLASSES] == pytest.approx(auc, abs=1e-12)
    base = evaluate_predictions(preds, man, rd, n_boot=NB)
    assert base["aggregation"] == "mean_log_prob"
    assert [base["model"]["auc"][c]["value"] for c in CLASSES] != [res["model"]["auc"][c]["value"] for c in CLASSES]
    # the CLI takes the rule from a bundle's card
    card = tmp_path / "b" / "thyrofast.json"
    card.parent.mkdir()
    card.write_text(json.dumps({"format": "thyrofast-bundle", "format_version": 1, "classes": list(CLASSES),
                                "arch": "resnet18", "in_channels": 1, "input_shape": [1, 8, 8], "preprocess": {"size": [8, 8]},
                                "aggregation": spec, "artifacts": {"weights": {
                                    "path": "weights.safetensors", "sha256": "0" * 64, "bytes": 0}}}))
    assert cli(["evaluate", "--predictions", str(preds), "--labels", str(man), "--aggregation-from",
                str(tmp_path / "b"), "--report", str(tmp_path / "rep"), "--no-figures", "--bootstrap", "200"]) == 0
    got = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert got["aggregation"] == "pooled_logistic"
    assert [got["model"]["auc"][c]["value"] for c in CLASSES] == pytest.approx(auc, abs=1e-12)


# ----------------------------------------------------------------------------
# small and degenerate sets


def test_absent_class_is_reported_not_fatal(tmp_path):
    preds, man, rd, _ = make_cohort(tmp_path, counts=(8, 0, 12), seed=1)
    r = evaluate_predictions(preds, man, rd, n_boot=NB)
    a = r["model"]["auc"]["NMTN"]
    assert math.isnan(a["value"]) and "undefined" in a["note"]
    assert any("NMTN" in n and "undefined" in n for n in r["notes"])
    assert r["model"]["macro_auc"]["classes"] == ["BTN", "MMTN"]
    out = write_report(r, tmp_path / "rep")
    data = json.loads(Path(out["report.json"]).read_text())
    assert data["model"]["auc"]["NMTN"]["value"] is None
    assert "n/a" in Path(out["report.md"]).read_text()


def test_tiny_set_every_auc_has_an_interval(tmp_path):
    preds, man, rd, _ = make_cohort(tmp_path, counts=(2, 1, 2), images=(1, 3), seed=2)
    r = evaluate_predictions(preds, man, rd, n_boot=NB)
    for rater in [r["model"], r["bayes"], *r["readers"].values()]:
        for c in CLASSES:
            e = rater["auc"][c]
            lo, hi = e["ci"]
            assert math.isfinite(lo) and math.isfinite(hi) and lo <= e["value"] <= hi, (c, e)
            assert hi - lo > 0.05  # never a zero-width interval on 1 vs 4 patients
    assert r["model"]["auc"]["NMTN"]["ci_method"].startswith("score")
    write_report(r, tmp_path / "rep", figures=False)


# ----------------------------------------------------------------------------
# inputs


def test_relative_inputs_errors_and_torn_line(tmp_path, cohort):
    _, man, _, recs = cohort
    lines = []
    for r in recs:
        r = dict(r, input="some/other/cwd/img/" + Path(r["input"]).name)  # predicted from elsewhere
        lines.append(json.dumps(r))
    lines.append(json.dumps({"kind": "image", "input": "x.dcm", "status": "error",
                             "error": {"code": "unreadable", "message": "bad"}}))
    lines.append(json.dumps({"kind": "image", "input": "not/in/manifest.png", "status": "ok",
                             "probs": {"BTN": 1, "NMTN": 0, "MMTN": 0}}))
    lines.append(lines[0])  # a duplicate (resumed run)
    lines.append('{"kind": "image", "inp')  # torn last line
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(lines) + "\n")
    r = evaluate_predictions(p, man, n_boot=NB)
    st = r["counts"]["records"]
    assert (st["errors"], st["unmatched"], st["duplicates"]) == (1, 1, 1)
    assert r["counts"]["images"] == len(recs)
    assert any("status 'error'" in n for n in r["notes"])


def test_predictions_csv_and_records_iterable(tmp_path, cohort):
    preds, man, _, recs = cohort
    ref = evaluate_predictions(preds, man, n_boot=NB)
    rows = [{"kind": "image", "input": r["input"], "frame_index": 0, "status": "ok",
             **{f"prob_{c}": r["probs"][c] for c in CLASSES}} for r in recs]
    _write_csv(tmp_path / "p.csv", rows)
    r_csv = evaluate_predictions(tmp_path / "p.csv", man, n_boot=NB)
    r_mem = evaluate_predictions(iter(recs), man, n_boot=NB)
    for r in (r_csv, r_mem):
        assert r["model"]["auc"]["MMTN"]["value"] == pytest.approx(ref["model"]["auc"]["MMTN"]["value"])


def test_patient_records_only(tmp_path, cohort):
    _, man, _, recs = cohort
    ids, y, P = _patient_probs(recs, man)
    prs = [{"kind": "patient", "patient_id": p, "status": "ok", "probs": dict(zip(CLASSES, P[i].tolist())),
            "n_images": 1} for i, p in enumerate(ids)]
    r = evaluate_predictions(prs, man, n_boot=NB)
    assert r["model"]["auc"]["BTN"]["value"] == pytest.approx(M.roc_auc(y == 0, P[:, 0]))
    with pytest.raises(InputError):
        evaluate_predictions(prs, man, level="image", n_boot=NB)


def test_split_filter(tmp_path):
    preds, man, _, _ = make_cohort(tmp_path / "a", counts=(3, 2, 3), split="train", seed=3)
    with pytest.raises(InputError) as e:
        evaluate_predictions(preds, man, split="test", n_boot=NB)
    assert e.value.code == "bad_split"
    r = evaluate_predictions(preds, man, split="train", n_boot=NB)
    assert r["counts"]["patients"] == 8


@pytest.mark.parametrize("content,code", [
    ("path,label\na.png,BTN\n", "bad_manifest"),
    ("path,patient_id,label\na.png,p1,CANCER\n", "bad_manifest"),
    ("path,patient_id,label\na.png,p1,BTN\nb.png,p1,MMTN\n", "bad_manifest"),
    ("path,patient_id,label\n", "empty"),
])
def test_bad_manifests(tmp_path, content, code):
    p = tmp_path / "m.csv"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        evaluate_predictions([], p)
    assert e.value.code == code


def test_missing_files_and_bad_arguments(tmp_path, cohort):
    preds, man, _, _ = cohort
    with pytest.raises(InputError) as e:
        evaluate_predictions(tmp_path / "none.jsonl", man)
    assert e.value.code == "unreadable"
    with pytest.raises(InputError):
        evaluate_predictions(preds, tmp_path / "none.csv")
    with pytest.raises(ValueError):
        evaluate_predictions(preds, man, level="lesion")
    with pytest.raises(InputError) as e:  # nothing matches
        evaluate_predictions([{"kind": "image", "input": "zz.png", "status": "ok",
                               "probs": {"BTN": 1, "NMTN": 0, "MMTN": 0}}], man)
    assert e.value.code == "empty"
    bad = tmp_path / "readers.csv"
    bad.write_text("reader,patient_id,call\njunior,P000,BTN\n")
    with pytest.raises(InputError):
        evaluate_predictions(preds, man, bad)


# ----------------------------------------------------------------------------
# report and figures


def test_write_report_files(tmp_path, result):
    import matplotlib

    backend = matplotlib.get_backend()
    out = write_report(result, tmp_path / "rep")
    assert matplotlib.get_backend() == backend  # drawn on an Agg canvas, global backend untouched
    data = json.loads(Path(out["report.json"]).read_text())  # strict JSON: no NaN
    for key in ("model", "bayes"):
        assert set(data[key]["auc"]) == set(CLASSES)
        assert data[key]["auc"]["BTN"]["ci"][0] <= data[key]["auc"]["BTN"]["value"]
        assert "macro_auc" in data[key] and "accuracy" in data[key]
    assert set(data["readers"]) == {"junior", "senior"}
    assert data["figures"] == {"roc": "roc.png", "confusion": "confusion_matrix.png",
                               "calibration": "calibration.png"}
    md = Path(out["report.md"]).read_text()
    for needle in ("Table 1", "Table 2", "Table 3", "Junior radiologist", "Bayes reference", "McNemar",
                   "DeLong", "![ROC curves per class](roc.png)"):
        assert needle in md
    from PIL import Image

    for name in ("roc.png", "confusion_matrix.png", "calibration.png"):
        with Image.open(tmp_path / "rep" / name) as im:
            assert im.width > 600 and im.height > 400
            a = np.asarray(im.convert("L"), dtype=float)
            assert a.std() > 5  # something was drawn


def test_reference_rows_are_labelled(tmp_path, result):
    ref = {"Paper, clinical data (published)": {"auc": {"BTN": 0.97, "MMTN": 0.96}, "accuracy": 0.95}}
    out = write_report(result, tmp_path / "rep", figures=False, reference=ref)
    md = Path(out["report.md"]).read_text()
    row = next(line for line in md.splitlines() if "Paper, clinical data" in line)
    assert "0.97" in row and "95%" in row and "–" in row  # NMTN missing: a dash, not a number
    assert json.loads(Path(out["report.json"]).read_text())["reference"] == ref


def test_markdown_without_readers(cohort):
    preds, man, _, _ = cohort
    r = evaluate_predictions(preds, man, n_boot=NB)
    md = render_markdown(r)
    assert "Table 1" in md and "Bayes reference" in md and "Junior" not in md


# ----------------------------------------------------------------------------
# the bundle seam and the CLI


class FakeClassifier:
    """Stands in for thyrofast.Classifier: probabilities from the image's mean intensity."""

    provenance = {"thyrofast": "test", "bundle_sha256": "00" * 32, "backend": "fake", "device": "cpu"}

    def __init__(self):
        self.calls = 0

    @classmethod
    def load(cls, bundle, backend="auto", device="auto"):
        assert Path(bundle).name == "bundle"
        return cls()

    def predict(self, frames):
        self.calls += 1
        frames = frames if isinstance(frames, list) else list(frames)
        out = []
        for f in frames:
            m = float(np.asarray(f, dtype=float).mean()) / 255.0  # 0.2, 0.5, 0.8 + noise by class
            logits = -((m - np.array([0.2, 0.5, 0.8])) ** 2) / 0.02
            p = np.exp(logits - logits.max())
            out.append(p / p.sum())
        return np.array(out)


def make_image_cohort(root: Path, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rows, rdr = [], []
    for k, n in enumerate((4, 3, 5)):
        for i in range(n):
            p = f"{CLASSES[k]}{i}"
            split = "test" if i < n - 1 else "train"
            for j in range(2):
                level = int(np.clip(255 * (0.2 + 0.3 * k + rng.normal(0, 0.12)), 0, 255))
                Image.fromarray(np.full((16, 16), level, np.uint8)).save(root / "img" / f"{p}_{j}.png")
                rows.append({"path": f"img/{p}_{j}.png", "patient_id": p, "label": CLASSES[k], "split": split})
            call = k if rng.random() < 0.7 else int(rng.integers(0, 3))
            rdr.append({"reader": "junior", "patient_id": p, "call": CLASSES[call],
                        **{f"score_{c}": float(c == CLASSES[call]) * 0.6 + 0.2 for c in CLASSES}, "split": split})
    _write_csv(root / "manifest.csv", rows)
    _write_csv(root / "readers.csv", rdr)
    return root


def _pil_reader(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def test_evaluate_bundle_with_a_fake_classifier(tmp_path):
    data = make_image_cohort(tmp_path / "data")
    clf = FakeClassifier()
    r = evaluate_bundle(tmp_path / "bundle", data, classifier=clf, reader=_pil_reader,
                        report=tmp_path / "rep", n_boot=NB)
    assert r["split"] == "test" and r["counts"]["patients"] == 9  # train patients left out
    assert r["counts"]["images"] == 18 and clf.calls == 18
    assert "junior" in r["readers"]  # readers.csv beside the manifest is picked up
    assert r["provenance"]["backend"] == "fake"
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "roc.png").is_file()


def test_evaluate_bundle_progress_bar_can_be_turned_off(tmp_path, capsys):
    data = make_image_cohort(tmp_path / "data")
    for progress in (True, False):
        evaluate_bundle(tmp_path / "bundle", data, classifier=FakeClassifier(), reader=_pil_reader,
                        n_boot=NB, progress=progress)
        assert ("evaluate: predicting" in capsys.readouterr().err) == progress


def test_frames_of_accepts_what_readers_return():
    from thyrofast.evaluate.core import _frames_of

    class Frame:
        def __init__(self, a):
            self.pixels = a

    a = np.zeros((4, 5), np.uint8)
    assert len(_frames_of(a)) == 1
    assert len(_frames_of(np.zeros((3, 4, 5), np.uint8))) == 3  # cine
    assert len(_frames_of(np.zeros((4, 5, 3), np.uint8))) == 1  # RGB
    assert len(_frames_of([Frame(a), Frame(a)])) == 2


def test_cli_predictions_mode(tmp_path, cohort, capsys):
    from thyrofast.cli import main

    preds, man, rd, _ = cohort
    rc = main(["evaluate", "--predictions", str(preds), "--labels", str(man), "--readers", str(rd),
               "--report", str(tmp_path / "out"), "--bootstrap", str(NB), "--no-figures"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Junior" in out and "Senior" in out and "AUC NMTN" in out and "McNemar" in out
    assert (tmp_path / "out" / "report.json").is_file()
    rc = main(["evaluate", "--predictions", str(preds), "--labels", str(tmp_path / "missing.csv"),
               "--report", str(tmp_path / "out2")])
    assert rc == 1 and "unreadable" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(preds), "--report", str(tmp_path / "o")]) == 2


def test_cli_bundle_mode(tmp_path, monkeypatch, capsys):
    from thyrofast.cli import main
    from thyrofast.evaluate import core

    data = make_image_cohort(tmp_path / "data", seed=1)
    monkeypatch.setattr(thyrofast, "Classifier", FakeClassifier, raising=False)
    monkeypatch.setattr(core, "_default_reader", lambda: _pil_reader)
    rc = main(["evaluate", str(tmp_path / "bundle"), str(data), "--report", str(tmp_path / "out"),
               "--bootstrap", str(NB), "--no-figures", "--level", "image"])
    assert rc == 0, capsys.readouterr().err
    data_json = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data_json["level"] == "image" and data_json["split"] == "test"
    assert not (tmp_path / "out" / "roc.png").exists()
    # --split all: every row, as for a second cohort generated with another seed
    rc = main(["evaluate", str(tmp_path / "bundle"), str(data), "--report", str(tmp_path / "all"),
               "--bootstrap", str(NB), "--no-figures", "--level", "image", "--split", "all"])
    assert rc == 0, capsys.readouterr().err
    every = json.loads((tmp_path / "all" / "report.json").read_text())
    with open(data / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert every["split"] is None and every["counts"]["images"] == len(rows)
    assert data_json["counts"]["images"] == sum(r["split"] == "test" for r in rows) < len(rows)


def test_fallback_image_reader_keeps_depth_and_colour(tmp_path):
    from PIL import Image

    from thyrofast.evaluate.core import _pil_read

    Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "b.png")
    a, b = _pil_read(tmp_path / "a.png"), _pil_read(tmp_path / "b.png")
    assert a.dtype == np.uint16 and a.shape == (4, 6) and a.max() == 4000
    assert b.dtype == np.uint8 and b.shape == (4, 6, 3)
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(InputError) as e:
        _pil_read(tmp_path / "c.png")
    assert e.value.code == "unreadable"


@pytest.mark.slow
def test_evaluate_bundle_with_the_real_classifier(tmp_path, tmp_path_factory):
    """The seam end to end: a trained phantom bundle, thyrofast.Classifier on ONNX Runtime (CPU)."""
    pytest.importorskip("thyrofast.classifier")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from PIL import Image

    import _bundle_fixture as bf  # the session's shared bundle
    bundle = bf.get_bundle(tmp_path_factory)
    frames, labels, _ = bf.phantom(36, seed=7)
    (tmp_path / "img").mkdir()
    rows = []
    # two frames of the same class per patient (12 frames per class -> 6 patients per class)
    for j, i in enumerate(np.argsort(labels, kind="stable")):
        Image.fromarray(frames[i]).save(tmp_path / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "patient_id": f"p{j // 2}", "label": CLASSES[labels[i]],
                     "split": "test"})
    _write_csv(tmp_path / "manifest.csv", rows)
    r = evaluate_bundle(bundle, tmp_path, backend="onnxruntime", device="cpu", reader=_pil_read_any,
                        n_boot=NB)
    assert r["counts"]["images"] == 36 and r["counts"]["patients"] == 18
    assert r["provenance"]["backend"] == "onnxruntime" and len(r["provenance"]["bundle_sha256"]) == 64
    # the phantom task is learnable: the model is far above chance at the image level
    ri = evaluate_bundle(bundle, tmp_path, backend="onnxruntime", device="cpu", reader=_pil_read_any,
                         level="image", n_boot=NB)
    img_acc = ri["model"]["accuracy"]["value"]
    assert ri["model"]["n"] == 36 and img_acc > 0.8
    assert r["model"]["macro_auc"]["value"] > 0.9


def _pil_read_any(path):
    from thyrofast.evaluate.core import _pil_read

    return _pil_read(path)


def test_p_values_read_well_in_text_and_tables():
    from thyrofast.evaluate.report import _p, _p_is

    assert (_p(0.0004), _p(0.25), _p(float("nan"))) == ("<0.001", "0.250", "–")
    assert (_p_is(0.0004), _p_is(0.25)) == ("p<0.001", "p=0.250")
