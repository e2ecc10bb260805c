"""Patient-level, stratified k-fold cross-validation with repeats: ``thyrofast cv``.

One train/test split of a few hundred patients decides little: the same run
with five seeds gave held-out AUCs from 0.54 to 0.78 on a real data set.
:func:`cross_validate` deals the patients into ``folds`` class-stratified folds
(:func:`thyrofast.io.kfold_patients`, reshuffled for each of ``repeats``),
trains one bundle per fold on the other folds (:func:`thyrofast.train.train`,
which carves its validation patients from them: early stopping, temperature,
operating point) and predicts the held-out fold with it.  Every patient is
held out exactly once per repeat; the manifest's own ``split`` column is not
used.

Output folder::

    cv.json                  the plan (settings, classes, data) and, when done, the summary
    labels.csv               every row of the data set (patient ids hashed): --labels for evaluate
    r1-f1/manifest.csv       the fold's rows: split train (training + validation) / test (held out)
    r1-f1/bundle/            the fold's bundle (weights only unless export=True; --remove-bundles drops it)
    r1-f1/predictions.jsonl  the held-out images' prediction records (as ``thyrofast predict`` writes)
    r1-f1/result.json        the fold's metrics; written last, atomically: a fold with it is done
    oof-r1.jsonl             out-of-fold predictions of repeat 1: every image once

Resumable: a rerun with the same settings skips the folds that have their
``result.json`` and resumes an interrupted fold's training from its checkpoint;
other settings or data are refused (use another output folder).

Summary: per fold the held-out patients' macro-AUC, and for two classes the
AUC of the positive class and the balanced accuracy / sensitivity /
specificity at the fold bundle's operating point; over folds the mean ± SD
(sample SD over folds x repeats).  The folds' training sets overlap, so the
SD describes the spread of one split's result, not the uncertainty of the
mean; the confidence interval is that of the pooled out-of-fold predictions of
each repeat (every patient once, patient-level bootstrap / DeLong), averaged
over repeats for the headline.  The out-of-fold files are ordinary prediction
records: ``thyrofast evaluate --predictions oof-r1.jsonl --labels labels.csv``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._fs import atomic_write, atomic_write_json, atomic_write_text
from ..errors import InputError

__all__ = ["cross_validate", "summarize", "FOLD_METRICS"]

#: per-fold metrics summarized over folds (binary ones only with 2 classes)
FOLD_METRICS = ("macro_auc", "auc", "balanced_accuracy", "sensitivity", "specificity", "accuracy",
                "balanced_accuracy_argmax")
_N_BOOT_FOLD = 200  # a fold's bootstrap is not reported; the point values are
PLAN_FORMAT = "thyrofast-cv"


def _fold_name(r: int, f: int) -> str:
    return f"r{r + 1}-f{f + 1}"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def _data_key(records) -> str:
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.path, r.frame_index if r.frame_index is not None else -1)):
        h.update(json.dumps([r.rel if r.rel is not None else r.path, r.patient_id, r.label_name,
                             r.frame_index]).encode())
    return h.hexdigest()


def _fold_metrics(res: dict) -> dict:
    """The per-fold numbers of an evaluation result (patient level)."""
    m = res["model"]
    out = {"n_patients": res["counts"]["patients"], "n_images": res["counts"]["images"],
           "macro_auc": m["macro_auc"]["value"], "accuracy": m["accuracy"]["value"],
           "balanced_accuracy_argmax": m["balanced_accuracy"]["value"]}
    if "binary" in res:
        out["positive"] = res["binary"]["positive"]
        out["auc"] = res["binary"]["auc"]["value"]
    op = res.get("operating_point")
    if op:
        at = op["at_threshold"]
        out.update(threshold=op["threshold"], balanced_accuracy=at["balanced_accuracy"],
                   sensitivity=at["sensitivity"], specificity=at["specificity"], accuracy=at["accuracy"])
    if res.get("endpoints"):
        out["endpoints"] = {name: {"auc": e["auc"]["value"], "sensitivity": e["sensitivity"]["value"],
                                   "specificity": e["specificity"]["value"]} for name, e in res["endpoints"].items()}
    return out


def _mean_sd(values: Sequence[float | None]) -> dict:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0, "min": None, "max": None}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size),
            "min": float(v.min()), "max": float(v.max())}


def summarize(folds: Sequence[dict], pooled: Sequence[dict] | None = None) -> dict:
    """Mean ± SD over ``folds`` (the per-fold metric dicts) of :data:`FOLD_METRICS` and of each
    endpoint's; ``pooled``: the per-repeat pooled out-of-fold evaluations, with their CIs."""
    out: dict[str, Any] = {"n_folds": len(folds)}
    out["over_folds"] = {k: _mean_sd([f.get(k) for f in folds]) for k in FOLD_METRICS
                         if any(f.get(k) is not None for f in folds)}
    names = sorted({n for f in folds for n in (f.get("endpoints") or {})})
    if names:
        out["endpoints_over_folds"] = {n: {k: _mean_sd([(f.get("endpoints") or {}).get(n, {}).get(k)
                                                        for f in folds])
                                           for k in ("auc", "sensitivity", "specificity")} for n in names}
    if pooled:
        out["pooled_out_of_fold"] = list(pooled)
        for key in ("macro_auc", "auc"):
            vals = [p[key] for p in pooled if p.get(key)]
            if vals:
                out[f"pooled_{key}"] = {"value": float(np.mean([v["value"] for v in vals])),
                                        "ci": [float(np.mean([v["ci"][0] for v in vals])),
                                               float(np.mean([v["ci"][1] for v in vals]))],
                                        "ci_method": vals[0]["ci_method"] + " of the pooled out-of-fold "
                                        "predictions, averaged over repeats", "repeats": len(vals)}
    return out


def _pooled(res: dict, repeat: int) -> dict:
    m = res["model"]
    out = {"repeat": repeat, "n_patients": res["counts"]["patients"],
           "macro_auc": {"value": m["macro_auc"]["value"], "ci": list(m["macro_auc"]["ci"]),
                         "ci_method": "patient bootstrap"}}
    if "binary" in res:
        a = res["binary"]["auc"]
        out["auc"] = {"value": a["value"], "ci": list(a["ci"]), "ci_method": a.get("ci_method", "delong"),
                      "positive": res["binary"]["positive"]}
    out["balanced_accuracy_argmax"] = m["balanced_accuracy"]["value"]
    return out


def cross_validate(data: str | os.PathLike, out: str | os.PathLike, *, folds: int = 5, repeats: int = 2,
                   seed: int = 0, device: str = "cpu", endpoints=None, n_boot: int = 2000,
                   check: bool = True, allow_duplicates: bool = False, keep_bundles: bool = True,
                   progress: bool = True, log: Callable[[str], None] | None = None,
                   _train: Callable | None = None, **train_kwargs) -> dict:
    """Patient-level stratified ``folds``-fold cross-validation, ``repeats`` times; see the module doc.

    ``data``: as :func:`thyrofast.train.train` takes it (manifest CSV, folder
    with ``manifest.csv``, or class folders); classes from the data.
    ``train_kwargs`` go to :func:`~thyrofast.train.train` for every fold
    (``arch``, ``epochs``, ``image_size``, ``positive``, ``target_sensitivity``,
    ...; ``export`` defaults to False: the held-out fold is predicted with the
    torch engine).  ``seed``: repeat ``r`` deals its folds with ``seed + r`` and
    trains with that seed.  ``endpoints``: named binary endpoints reported per
    fold and pooled (``["malignant=NMTN+MMTN"]``).  ``n_boot``: bootstrap
    replicates of the pooled out-of-fold CIs.  ``check``: run
    :func:`thyrofast.check.check_dataset` once first (exact duplicates across
    patients refuse the run unless ``allow_duplicates``: they would sit in
    training and held-out folds at once).  ``keep_bundles``: False deletes each
    fold's bundle once its predictions are written.  Returns the summary dict
    (also in ``out/cv.json``).
    """
    from tqdm.auto import tqdm

    from ..check import check_before_training
    from ..evaluate import evaluate_predictions
    from ..io.manifest import read_dataset, write_manifest
    from ..io.splits import kfold_patients
    from .loop import resolve_device
    from .loop import train as _train_default

    train_fn = _train or _train_default
    for name, v, lo in (("folds", folds, 2), ("repeats", repeats, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if n_boot < 100:
        raise ValueError("n_boot must be at least 100")
    for key in ("resume", "out", "data", "progress", "seed", "device"):
        if key in train_kwargs:
            raise TypeError(f"cross_validate sets {key!r} itself")
    say = log or (lambda msg: tqdm.write(msg))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is an existing file")
    device = resolve_device(device)
    records = read_dataset(data, classes=None)
    if not records:
        raise InputError("empty", "the data set has no images", source=os.fspath(data))
    classes = tuple(records[0].classes)
    n_pat = len({r.patient_id for r in records})
    per_class: dict[str, set] = {c: set() for c in classes}
    for r in records:
        per_class[r.label_name].add(r.patient_id)
    few = {c: len(p) for c, p in per_class.items() if len(p) < folds}
    if few:
        c, n = min(few.items(), key=lambda kv: kv[1])
        raise InputError("bad_split", f"class {c} has {n} patient(s), fewer than the {folds} folds: every held-out "
                         f"fold needs each class (use --folds {max(2, n)} or fewer)", source=os.fspath(data))
    from ..evaluate.endpoints import parse_endpoints

    endpoint_list = [f"{n}={'+'.join(m)}" for n, m in parse_endpoints(endpoints, classes).items()]
    train_kwargs.setdefault("export", False)
    plan = {"format": PLAN_FORMAT, "format_version": 1, "data": str(Path(data).resolve()),
            "data_key": _data_key(records), "classes": list(classes), "folds": int(folds),
            "repeats": int(repeats), "seed": int(seed),
            "train": json.loads(json.dumps(train_kwargs, default=str)), "endpoints": endpoint_list}
    plan_path = out / "cv.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if {k: old.get(k) for k in plan} != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise ValueError(f"{out} holds a cross-validation with other settings or data ({', '.join(diff)}); "
                             "use another output folder")
        say(f"resuming the cross-validation in {out}")
    if check:
        check_before_training(data, allow_duplicates=allow_duplicates, say=say, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, plan, indent=1)
    labels_csv = out / "labels.csv"
    write_manifest([r.replace(split=None) for r in records], labels_csv)

    say(f"cross-validation: {n_pat} patients, classes {', '.join(classes)}, {folds} folds x {repeats} repeats")
    results: list[dict] = []
    bar = tqdm(total=folds * repeats, desc="cv", unit="fold", disable=not progress, dynamic_ncols=True)
    for r in range(repeats):
        deal = kfold_patients(records, folds, seed=seed + r)
        for f, (tr, te) in enumerate(deal):
            name = _fold_name(r, f)
            fdir = out / name
            done = fdir / "result.json"
            if done.is_file():
                results.append(json.loads(done.read_text()))
                bar.update(1)
                continue
            fdir.mkdir(exist_ok=True)
            manifest = fdir / "manifest.csv"
            write_manifest([x.replace(split="train") for x in tr] + [x.replace(split="test") for x in te], manifest)
            bundle_dir = fdir / "bundle"
            bar.set_postfix_str(f"{name}: training")
            bundle = train_fn(manifest, bundle_dir, seed=seed + r, device=device, resume=True, progress=False,
                              log=lambda m, n=name: say(f"[{n}] {m}"), check=False, **train_kwargs)
            bar.set_postfix_str(f"{name}: predicting")
            res, recs = _predict_fold(bundle_dir, manifest, device, endpoint_list)
            for rec in recs:
                rec.update(fold=f + 1, repeat=r + 1)
            with atomic_write(fdir / "predictions.jsonl") as tmp:
                tmp.write_text("".join(json.dumps(_jsonable(x)) + "\n" for x in recs))
            row = {"fold": f + 1, "repeat": r + 1, **_fold_metrics(res)}
            if not keep_bundles:
                shutil.rmtree(bundle_dir, ignore_errors=True)
            else:
                shutil.rmtree(bundle_dir / ".train", ignore_errors=True)  # checkpoints and frame cache
            atomic_write_json(done, _jsonable(row), indent=1)
            results.append(_jsonable(row))
            msg = f"[{name}] held-out {row['n_patients']} patients: macro-AUC {_fmt(row.get('macro_auc'))}"
            if row.get("auc") is not None:
                msg += (f", AUC {_fmt(row['auc'])}, balanced accuracy at the operating point "
                        f"{_fmt(row.get('balanced_accuracy'))}")
            say(msg)
            bar.update(1)
            del bundle
    bar.close()

    pooled = []
    for r in range(repeats):
        oof = out / f"oof-r{r + 1}.jsonl"
        lines = []
        for f in range(folds):
            lines.append((out / _fold_name(r, f) / "predictions.jsonl").read_text())
        atomic_write_text(oof, "".join(lines))
        res = evaluate_predictions(str(oof), str(labels_csv), n_boot=n_boot, seed=seed, endpoints=endpoint_list)
        pooled.append(_pooled(res, r + 1))
    summary = summarize(results, pooled)
    summary["folds"] = results
    summary["classes"] = list(classes)
    summary["out_of_fold"] = [f"oof-r{r + 1}.jsonl" for r in range(repeats)]
    summary["labels"] = "labels.csv"
    atomic_write_json(plan_path, _jsonable({**plan, "summary": summary}), indent=1)
    return _jsonable(summary)


def _fmt(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _predict_fold(bundle_dir: Path, manifest: Path, device: str, endpoints) -> tuple[dict, list[dict]]:
    """Predict the fold's held-out (``test``) images with its bundle; (evaluation, image records)."""
    from .. import Classifier
    from ..classifier import bundle_operating_point
    from ..evaluate import evaluate_predictions
    from ..evaluate import inputs as I
    from ..evaluate.core import predict_manifest
    from ..operating_point import decide

    clf = Classifier.load(bundle_dir, backend="torch", device=device)
    try:
        with I.using_classes(clf.classes):
            lab = I.load_labels(manifest, "test")
            recs = predict_manifest(clf, lab, progress=False)
        op = bundle_operating_point(clf)
        for rec in recs:
            rec.pop("provenance", None)
            if rec.get("status") == "ok":
                rec["decision"] = decide([list(rec["probs"].values())], clf.classes, op)[0]
        res = evaluate_predictions(recs, str(manifest), split="test", n_boot=_N_BOOT_FOLD,
                                   aggregation=clf.bundle.aggregation, operating_point=op, endpoints=endpoints)
    finally:
        clf.close()
    return res, recs
