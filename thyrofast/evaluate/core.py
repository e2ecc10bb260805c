"""The evaluation itself: model, Bayes reference and readers, with CIs and tests.

Level: patient by default.  Image probabilities are aggregated per patient
by an aggregation rule (:mod:`thyrofast.aggregation`; a bundle's own rule in
:func:`evaluate_bundle`, the mean log-probability otherwise).
At image level the model's intervals come from a patient-level (cluster)
bootstrap, because images of one patient are not independent; readers and
the Bayes reference rate patients, so comparisons are always per patient.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .. import metrics as M
from ..aggregation import describe as describe_aggregation
from ..classifier import bundle_aggregation, bundle_read_options
from ..errors import InputError
from . import inputs as I

_classes = I.classes
AGGREGATION = "mean_log_prob"
_CHUNK = 256  # bootstrap replicates per vectorized block (bounds memory)


class _Boot:
    """Shared bootstrap multiplicities for one set of rows (seeded, stratified)."""

    def __init__(self, y: np.ndarray, clusters: Sequence, n_boot: int, seed: int, stratified: bool):
        strata = y if stratified else None
        self.codes, self.W = M.bootstrap_weights(np.asarray(clusters, dtype=object).astype(str),
                                                 n_boot, seed, strata)
        self.n_boot, self.seed, self.stratified = n_boot, seed, stratified

    def rows(self, b0: int, b1: int) -> np.ndarray:
        return self.W[b0:b1][:, self.codes].astype(np.float64)

    def auc(self, y: np.ndarray, s: np.ndarray, repeat: int = 1) -> np.ndarray:
        out = np.empty(self.n_boot)
        for b0 in range(0, self.n_boot, _CHUNK):
            w = self.rows(b0, b0 + _CHUNK)
            if repeat > 1:
                w = np.repeat(w, repeat, axis=1)
            out[b0:b0 + w.shape[0]] = M.weighted_roc_auc(y, s, w)
        return out

    def mean(self, v: np.ndarray) -> np.ndarray:
        out = np.empty(self.n_boot)
        for b0 in range(0, self.n_boot, _CHUNK):
            w = self.rows(b0, b0 + _CHUNK)
            out[b0:b0 + w.shape[0]] = (w @ v) / w.sum(axis=1)
        return out

    def confusions(self, y: np.ndarray, pred: np.ndarray, K: int) -> np.ndarray:
        cm_c = np.zeros((self.W.shape[1], K, K))
        np.add.at(cm_c, (self.codes, y, pred), 1)
        return np.tensordot(self.W.astype(np.float64), cm_c, axes=(1, 0))

    def summary(self, value: float, reps: np.ndarray, level: float) -> dict:
        out = M._percentile_summary(value, reps, level, self.seed)
        out["stratified"] = self.stratified
        lo, hi = out["ci"]
        if math.isfinite(lo) and lo == hi:
            out["note"] = "bootstrap interval degenerate (every replicate equal): sample too small to resolve"
        return out


def _kappa_reps(cm_b: np.ndarray) -> np.ndarray:
    n = cm_b.sum(axis=(1, 2))
    po = np.trace(cm_b, axis1=1, axis2=2) / n
    pe = (cm_b.sum(1) * cm_b.sum(2)).sum(1) / (n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def balanced_accuracy(y, pred, K: int) -> float:
    """Mean recall over the classes present in ``y`` (nan when none)."""
    return float(_balanced_reps(M.confusion_matrix(y, pred, K)[None].astype(np.float64))[0])


def _balanced_reps(cm_b: np.ndarray) -> np.ndarray:
    rows = cm_b.sum(axis=2)
    diag = np.diagonal(cm_b, axis1=1, axis2=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.where(rows > 0, diag / np.where(rows > 0, rows, 1), np.nan)
    present = (rows > 0).sum(axis=1)
    return np.where(present > 0, np.nansum(rec, axis=1) / np.maximum(present, 1), np.nan)


def _ece_reps(boot: _Boot, y, P, n_bins) -> np.ndarray:
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    onehot = np.zeros((y.size, n_bins))
    onehot[np.arange(y.size), b] = 1.0
    out = np.empty(boot.n_boot)
    for b0 in range(0, boot.n_boot, _CHUNK):
        w = boot.rows(b0, b0 + _CHUNK)
        gap = np.abs(w @ (onehot * correct[:, None]) - w @ (onehot * conf[:, None])).sum(1)
        out[b0:b0 + w.shape[0]] = gap / w.sum(1)
    return out


def rater_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    ids: Sequence[str],
    pred: np.ndarray | None = None,
    *,
    probabilities: bool = True,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    stratified: bool = True,
    n_bins: int = 10,
    unit: str = "patient",
) -> dict:
    """Every metric of one rater (model, Bayes reference or reader).

    ``scores`` ``(N, K)`` rank the cases per class (ROC/AUC); ``pred`` is the
    rater's call (default: argmax of ``scores``).  ``ids`` are patient ids:
    rows sharing an id form one bootstrap cluster.  Calibration is computed
    only when ``probabilities`` is true.
    """
    y = np.asarray(y, dtype=np.int64)
    S = np.asarray(scores, dtype=np.float64)
    K = S.shape[1]
    pred = S.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
    ids = [str(i) for i in ids]
    independent = len(set(ids)) == len(ids)  # one row per patient
    boot = _Boot(y, ids, n_boot, seed, stratified)
    Y = M.one_hot(y, K)
    notes: list[str] = []
    out: dict[str, Any] = {"n": int(y.size), "unit": unit,
                           "n_per_class": {c: int((y == k).sum()) for k, c in enumerate(_classes())}}

    # --- AUC per class, macro, micro
    auc, roc, op = {}, {}, {}
    auc_reps = []
    for k, c in enumerate(_classes()):
        a, lo, hi = M.delong_ci(Y[:, k], S[:, k], level)
        reps = boot.auc(Y[:, k], S[:, k])
        bs = boot.summary(a, reps, level)
        auc_reps.append(reps)
        entry = {"value": a, "ci_delong": (lo, hi), "ci_bootstrap": bs["ci"],
                 "n_pos": int(Y[:, k].sum()), "n_neg": int((~Y[:, k]).sum())}
        if independent:
            entry.update(ci=(lo, hi), ci_method="delong")
        else:
            entry.update(ci=bs["ci"], ci_method="cluster bootstrap (patients)")
        if entry["n_pos"] == 0 or entry["n_neg"] == 0:
            entry["note"] = f"AUC undefined: no {'positive' if entry['n_pos'] == 0 else 'negative'} " \
                            f"{unit}s for {c} (one-vs-rest)"
            notes.append(f"{c}: {entry['note']}")
        else:
            ci_now = entry["ci"]
            if not (math.isfinite(ci_now[0]) and math.isfinite(ci_now[1])) or ci_now[0] == ci_now[1]:
                # DeLong (and the bootstrap) collapse at AUC 0/1 or with one case in a class
                pos_p = len({i for i, t in zip(ids, Y[:, k]) if t})
                neg_p = len({i for i, t in zip(ids, Y[:, k]) if not t})
                entry["ci_score"] = M.auc_score_ci(a, pos_p, neg_p, level)
                entry.update(ci=entry["ci_score"], ci_method="score (Hanley-McNeil variance)")
                entry["note"] = ("DeLong interval undefined (fewer than 2 cases in a class)"
                                 if not math.isfinite(lo) else "DeLong interval degenerate (perfect separation)") \
                    + f"; score interval on {pos_p} vs {neg_p} patients given instead"
        auc[c] = entry
        fpr, tpr, thr = M.roc_curve(Y[:, k], S[:, k])
        roc[c] = {"fpr": fpr, "tpr": tpr, "thresholds": thr}
    out["auc"] = auc
    R = np.vstack(auc_reps)
    valid = [k for k in range(K) if math.isfinite(auc[_classes()[k]]["value"])]
    macro = float(np.mean([auc[_classes()[k]]["value"] for k in valid])) if valid else math.nan
    macro_reps = R[valid].mean(axis=0) if valid else np.full(n_boot, np.nan)
    out["macro_auc"] = {**boot.summary(macro, macro_reps, level), "classes": [_classes()[k] for k in valid]}
    micro = M.micro_auc(y, S)
    out["micro_auc"] = boot.summary(micro, boot.auc(Y.ravel(), S.ravel(), repeat=K), level)

    # --- accuracy, kappa
    correct = (pred == y)
    acc = M.accuracy_ci(y, pred, level)
    acc_reps = boot.mean(correct.astype(np.float64))
    acc_bs = boot.summary(acc["value"], acc_reps, level)
    acc["ci_wilson"] = acc["ci"]
    acc["ci_bootstrap"] = acc_bs["ci"]
    if not independent:
        acc.update(ci=acc_bs["ci"], ci_method="cluster bootstrap (patients)")
    out["accuracy"] = acc
    cms = boot.confusions(y, pred, K)
    # balanced accuracy: the mean per-class recall (accuracy that a skewed class mix cannot inflate)
    out["balanced_accuracy"] = {**boot.summary(balanced_accuracy(y, pred, K), _balanced_reps(cms), level),
                                "ci_method": "cluster bootstrap (patients)" if not independent else "bootstrap"}
    kap = M.cohen_kappa_ci(y, pred, K, level)
    kap["ci_bootstrap"] = boot.summary(kap["value"], _kappa_reps(cms), level)["ci"]
    if not independent:
        kap["ci_asymptotic"] = kap["ci"]
        kap.update(ci=kap["ci_bootstrap"], ci_method="cluster bootstrap (patients)")
    out["kappa"] = kap

    # --- per class at the call, operating points
    pcm = M.per_class_metrics(y, pred, _classes(), level, clusters=ids, n_boot=n_boot, seed=seed,
                              strata=y if stratified else None)
    for c, row in pcm.items():
        if not independent:
            for key in ("sensitivity", "specificity", "ppv", "npv"):
                row[key]["ci_wilson"] = row[key]["ci"]
                row[key].update(ci=row[key]["ci_bootstrap"], ci_method="cluster bootstrap (patients)")
        op[c] = {"fpr": 1.0 - row["specificity"]["value"] if row["specificity"]["n"] else math.nan,
                 "tpr": row["sensitivity"]["value"]}
    out["per_class"] = pcm
    out["operating_points"] = op
    cm = M.confusion_matrix(y, pred, K)
    out["confusion_matrix"] = {"labels": list(_classes()), "rows": "truth", "columns": "prediction",
                               "counts": cm, "row_normalized": M.row_normalize(cm)}

    # --- calibration
    if probabilities:
        rb = M.reliability_bins(y, S, n_bins)
        k_ok = np.rint(np.nan_to_num(rb["accuracy"]) * rb["count"]).astype(int)
        lo, hi = M.wilson_ci(k_ok, rb["count"], level)
        e = M.ece(y, S, n_bins)
        # ECE is biased upwards (noise only adds |accuracy - confidence| gaps), so a plain
        # percentile interval can miss the estimate: shift the replicates by the bootstrap bias
        reps = _ece_reps(boot, y, S, n_bins)
        bias = float(np.nanmean(reps) - e)
        ece_s = boot.summary(e, np.clip(reps - bias, 0.0, None), level)
        ece_s.update(bias=bias, ci_method="cluster bootstrap, percentile shifted by the bootstrap bias")
        out["calibration"] = {
            "ece": ece_s,
            "n_bins": n_bins,
            "bins": {"edges": rb["edges"], "count": rb["count"], "confidence": rb["confidence"],
                     "accuracy": rb["accuracy"], "accuracy_ci_lo": lo, "accuracy_ci_hi": hi},
            "brier": float(((S - Y) ** 2).sum(axis=1).mean()),
        }
    out["roc"] = roc
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "stratified_by_class": stratified,
                        "unit": "patient"}
    out["notes"] = notes
    return out


def compare(y, model_scores, model_pred, ref_scores, ref_pred, ids, *, level=0.95, n_boot=2000,
            seed=0, stratified=True) -> dict:
    """Model vs one reference on the same patients.

    Per class: paired DeLong test of the one-vs-rest AUCs (model − reference).
    Overall: McNemar's test on correctness (exact binomial below 25
    discordant pairs, else chi-square with continuity correction; both are
    reported), and the accuracy and macro-AUC differences with paired
    bootstrap intervals.
    """
    y = np.asarray(y, dtype=np.int64)
    K = len(_classes())
    Y = M.one_hot(y, K)
    out: dict[str, Any] = {"n": int(y.size), "delong": {}}
    for k, c in enumerate(_classes()):
        r = M.delong_paired(Y[:, k], model_scores[:, k], ref_scores[:, k], level)
        r = {"auc_model": r["auc_a"], "auc_reference": r["auc_b"], "diff": r["diff"], "se": r["se"],
             "ci": r["ci"], "z": r["z"], "p": r["p"]}
        if not math.isfinite(r["diff"]):
            r["note"] = f"undefined: {c} absent or present in every patient"
        elif not math.isfinite(r["z"]):
            r["note"] = "DeLong variance undefined with fewer than 2 cases in a class"
        out["delong"][c] = r
    ca, cb = model_pred == y, ref_pred == y
    auto = M.mcnemar(ca, cb)
    ex = M.mcnemar(ca, cb, exact=True)
    ch = M.mcnemar(ca, cb, exact=False, correction=True)
    out["mcnemar"] = {"b_model_only_correct": auto.b, "c_reference_only_correct": auto.c,
                      "method": auto.method, "statistic": auto.statistic, "p": auto.pvalue,
                      "p_exact": ex.pvalue, "p_chi2_corrected": ch.pvalue}
    boot = _Boot(y, ids, n_boot, seed, stratified)
    d_acc = boot.mean(ca.astype(float)) - boot.mean(cb.astype(float))
    out["accuracy_diff"] = boot.summary(float(ca.mean() - cb.mean()), d_acc, level)
    ma = [boot.auc(Y[:, k], model_scores[:, k]) for k in range(K) if 0 < Y[:, k].sum() < y.size]
    mb = [boot.auc(Y[:, k], ref_scores[:, k]) for k in range(K) if 0 < Y[:, k].sum() < y.size]
    if ma:
        val = float(np.mean([M.roc_auc(Y[:, k], model_scores[:, k]) - M.roc_auc(Y[:, k], ref_scores[:, k])
                             for k in range(K) if 0 < Y[:, k].sum() < y.size]))
        out["macro_auc_diff"] = boot.summary(val, np.mean(ma, axis=0) - np.mean(mb, axis=0), level)
    return out


# ----------------------------------------------------------------------------
# entry points


def _at_operating_point(y: np.ndarray, probs: np.ndarray, op: Mapping) -> dict:
    """Calls at the bundle's decision threshold, against the argmax: accuracy, balanced accuracy,
    sensitivity and specificity of the positive class."""
    from ..operating_point import decide

    cls = list(_classes())
    K, k = len(cls), cls.index(op["positive"])
    calls = np.array([cls.index(c) for c in decide(probs, cls, op)], dtype=np.int64)
    argmax = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)

    def rates(pred):
        pos, neg = y == k, y != k
        return {"accuracy": float(np.mean(pred == y)) if y.size else math.nan,
                "balanced_accuracy": balanced_accuracy(y, pred, K),
                "sensitivity": float(np.mean(pred[pos] == k)) if pos.any() else math.nan,
                "specificity": float(np.mean(pred[neg] != k)) if neg.any() else math.nan}

    return {**{key: op.get(key) for key in ("positive", "threshold", "rule", "val_sensitivity",
                                             "val_specificity")},
            "n": int(y.size), "at_threshold": rates(calls), "argmax": rates(argmax)}


def _provenance(records: Sequence[Mapping]) -> dict:
    provs = [r.get("provenance") for r in records if isinstance(r.get("provenance"), Mapping)]
    if not provs:
        return {}
    first = dict(provs[0])
    shas = {p.get("bundle_sha256") for p in provs}
    if len(shas) > 1:
        first["warning"] = f"records come from {len(shas)} different bundles"
    return first


def evaluate_predictions(
    predictions,
    labels,
    readers=None,
    level: str = "patient",
    split: str | None = None,
    *,
    ci_level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    stratified: bool = True,
    n_bins: int = 10,
    aggregation: Any = AGGREGATION,
    operating_point: Mapping | None = None,
    endpoints=None,
    conformal: Mapping | None = None,
) -> dict:
    """Evaluate prediction records against a labels manifest.

    ``predictions``: a ``results.jsonl``/``.csv`` written by ``thyrofast
    predict`` or an iterable of record dicts (docs/contracts.md); image
    records are matched to manifest rows by path.  ``labels``: the cohort
    manifest (``path, patient_id, label[, split]``; its ``bayes_*`` columns,
    if any, become the "bayes" reference).  ``readers``: an optional
    readers.csv.  ``level``: "patient" (default; image probabilities
    aggregated by ``aggregation``: a rule of :mod:`thyrofast.aggregation`,
    default mean log-probability, renormalized) or "image".
    Bootstrap intervals resample patients (``n_boot`` replicates, seeded,
    stratified by class).  ``endpoints``: named binary endpoints
    (``["malignant=NMTN+MMTN"]`` or ``{"malignant": ["NMTN", "MMTN"]}``,
    :mod:`thyrofast.evaluate.endpoints`), each reported with its AUC and the
    sensitivity / specificity of the calls (at ``operating_point`` when given,
    else the argmax).  Returns a dict of plain numbers and arrays; pass it to
    :func:`write_report`.
    """
    if level not in ("patient", "image"):
        raise ValueError(f"level must be 'patient' or 'image', got {level!r}")
    if n_boot < 100:
        raise ValueError("n_boot must be at least 100")
    records = I.load_records(predictions)
    # the classes of the predictions (a bundle's own label set), in the model's order
    with I.using_classes(I.record_classes(records) or I.classes()):
        return _evaluate_records(records, predictions, labels, readers, level, split, ci_level=ci_level,
                                 n_boot=n_boot, seed=seed, stratified=stratified, n_bins=n_bins,
                                 aggregation=aggregation, operating_point=operating_point,
                                 endpoints=endpoints, conformal=conformal)


def _conformal_report(conformal: Mapping, tables: Mapping[str, Any]) -> dict:
    """Coverage, per-class coverage, mean set size and refer rate of the bundle's prediction sets
    (:mod:`thyrofast.conformal`) at each level whose table is given."""
    from ..conformal import prediction_sets, set_coverage

    out: dict = {"alpha": conformal.get("alpha"), "method": conformal.get("method")}
    for lvl, t in tables.items():
        if t is None or lvl not in conformal:
            continue
        sets = prediction_sets(t.probs, conformal[lvl], _classes())
        out[lvl] = set_coverage(sets, [_classes()[int(k)] for k in t.y], _classes())
    return out


def _evaluate_records(records, predictions, labels, readers, level, split, *, ci_level, n_boot, seed,
                      stratified, n_bins, aggregation, operating_point=None, endpoints=None, conformal=None) -> dict:
    from .endpoints import parse_endpoints

    endpoints = parse_endpoints(endpoints, _classes())  # a bad endpoint fails before any work
    lab = I.load_labels(labels, split)
    src = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "records"
    n_image_records = sum(1 for r in records if r.get("kind", "image") != "patient")
    notes: list[str] = []
    stats: dict[str, Any] = {"records": len(records)}
    img = None
    if n_image_records:
        img, stats = I.image_table(records, lab, src)
        pat = I.aggregate_patients(img, aggregation)
    else:
        if level == "image":
            raise InputError("empty", "image level asked but the predictions hold only patient records",
                             source=src)
        pat = I.patient_records_table(records, lab, src)
        notes.append("patient probabilities taken from the prediction file's patient records")
    if stats.get("errors"):
        notes.append(f"{stats['errors']} prediction record(s) with status 'error' were left out")
    if stats.get("unmatched"):
        where = f"image of the {split!r} split" if split else "image"
        notes.append(f"{stats['unmatched']} prediction record(s) matched no manifest {where} and were left out")
    missing = sorted(set(lab.patient_label) - set(pat.ids))
    if missing:
        notes.append(f"{len(missing)} patient(s) of the manifest have no prediction and are not evaluated")
    kw = dict(level=ci_level, n_boot=n_boot, seed=seed, stratified=stratified)
    main = img if level == "image" else pat
    result: dict[str, Any] = {
        "format": "thyrofast-evaluation",
        "format_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": list(_classes()),
        "level": level,
        "aggregation": describe_aggregation(aggregation) if (level == "patient" and img is not None) else None,
        "split": split,
        "labels": lab.source,
        "predictions": src,
        "ci_level": ci_level,
        "counts": {
            "patients": len(pat.ids),
            "images": len(img.ids) if img is not None else None,
            "patients_per_class": {c: int((pat.y == k).sum()) for k, c in enumerate(_classes())},
            "images_per_class": ({c: int((img.y == k).sum()) for k, c in enumerate(_classes())}
                                 if img is not None else None),
            "records": stats,
        },
        "provenance": _provenance(records),
        "model": rater_metrics(main.y, main.probs, main.ids, n_bins=n_bins, unit=level, **kw),
    }
    if len(_classes()) == 2:  # binary: the AUC (DeLong CI) of the positive class, the second in order
        pos = (operating_point or {}).get("positive") or _classes()[1]
        result["binary"] = {"positive": pos, "auc": result["model"]["auc"][pos]}
    if operating_point and operating_point.get("positive") in _classes():
        result["operating_point"] = _at_operating_point(main.y, main.probs, operating_point)
    if endpoints:
        from ..operating_point import decide
        from .endpoints import endpoint_metrics

        op_ok = operating_point if (operating_point or {}).get("positive") in _classes() else None
        calls = np.array([_classes().index(c) for c in decide(main.probs, _classes(), op_ok)], dtype=np.int64)
        result["endpoints"] = {name: {**endpoint_metrics(main.y, main.probs, calls, _classes(), members, ci_level),
                                      "calls": "operating point" if op_ok else "argmax"}
                               for name, members in endpoints.items()}
    if conformal:  # the bundle's prediction sets: coverage and set size on these patients (and images)
        result["conformal"] = _conformal_report(conformal, {"patient": pat, "image": img})
    small = [c for k, c in enumerate(_classes()) if 0 < (pat.y == k).sum() < 10]
    if small:
        notes.append("few patients in " + ", ".join(
            f"{c} ({int((pat.y == _classes().index(c)).sum())})" for c in small)
            + ": intervals are wide; read them, not the point estimates")
    if level == "image":
        result["model_patient"] = rater_metrics(pat.y, pat.probs, pat.ids, n_bins=n_bins, **kw)
        notes.append("image level: model intervals resample patients (images of a patient are correlated); "
                     "reader and Bayes comparisons use the patient-level aggregate")
    pidx = {p: i for i, p in enumerate(pat.ids)}
    refs: dict[str, tuple[np.ndarray, np.ndarray, list[str], bool]] = {}
    if lab.bayes is not None:
        ids = [p for p in pat.ids if p in lab.bayes]
        S = np.vstack([lab.bayes[p] for p in ids])
        refs["bayes"] = (S, S.argmax(axis=1), ids, True)
    if readers is not None:
        rd = I.load_readers(readers) if not isinstance(readers, Mapping) else readers
        result["readers_source"] = str(readers) if not isinstance(readers, Mapping) else "in memory"
        for name in I.reader_order(rd):
            r = rd[name]
            ids = [p for p in pat.ids if p in r.calls]
            if not ids:
                notes.append(f"reader {name!r} rated none of the evaluated patients")
                continue
            if len(ids) < len(pat.ids):
                notes.append(f"reader {name!r} rated {len(ids)} of {len(pat.ids)} patients; "
                             "compared on those")
            refs[name] = (np.vstack([r.scores[p] for p in ids]), np.array([r.calls[p] for p in ids]),
                          ids, False)
    result["readers"] = {}
    result["comparisons"] = {}
    for name, (S, calls, ids, is_prob) in refs.items():
        idx = np.array([pidx[p] for p in ids])
        y = pat.y[idx]
        metrics_ = rater_metrics(y, S, ids, pred=calls, probabilities=is_prob, n_bins=n_bins, **kw)
        if name == "bayes":
            result["bayes"] = metrics_
        else:
            result["readers"][name] = metrics_
        P = pat.probs[idx]
        result["comparisons"][name] = compare(y, P, P.argmax(axis=1), S, calls, ids, **kw)
    result["notes"] = notes + [f"model: {n}" for n in result["model"].pop("notes")]
    for key in ("model_patient", "bayes"):
        if key in result:
            result[key].pop("notes", None)
    for r in result["readers"].values():
        r.pop("notes", None)
    return result


def _frames_of(obj) -> list[np.ndarray]:
    """Arrays out of whatever ``thyrofast.read`` returns (arrays or frame objects)."""
    if isinstance(obj, np.ndarray):
        return [obj] if obj.ndim <= 2 or (obj.ndim == 3 and obj.shape[-1] in (3, 4)) else list(obj)
    if isinstance(obj, (list, tuple)):
        out: list[np.ndarray] = []
        for o in obj:
            out.extend(_frames_of(o))
        return out
    for attr in ("pixels", "array", "image", "data", "frames"):
        if hasattr(obj, attr):
            return _frames_of(getattr(obj, attr))
    return [np.asarray(obj)]


def _pil_read(path) -> np.ndarray:
    """uint8/uint16 (H, W) or (H, W, 3), decoded as the training path decodes images."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode == "I":
                return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError("unreadable", f"cannot decode image: {exc}", source=str(path)) from None


def _default_reader():
    """``thyrofast.read`` (images and DICOM) when the ingest module is there, else Pillow."""
    try:
        from thyrofast.io import read  # noqa: PLC0415 - lazy: pydicom etc.
    except ImportError:
        return _pil_read
    return read


def predict_manifest(classifier, labels: I.Labels, *, reader=None, batch_frames: int = 64,
                     progress: bool = True) -> list[dict]:
    """Prediction records for every image of a manifest, with a progress bar unless ``progress=False``."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    read = reader or _default_reader()
    if reader is None and read is not _pil_read:
        # the reader options the model was trained with (tissue crop, annotation masking)
        opts = bundle_read_options(classifier)
        if opts != {"crop": "auto", "mask_annotations": False}:  # thyrofast.read's own defaults otherwise
            import functools  # noqa: PLC0415

            read = functools.partial(read, **opts)
    records = []
    wanted: dict[str, set[int] | None] = {}  # file -> frames listed in the manifest (None: all)
    for path, fi in zip(labels.path, labels.frame_index):
        if fi is None or (path in wanted and wanted[path] is None):
            wanted[path] = None
        else:
            wanted.setdefault(path, set()).add(fi)
    for path in tqdm(list(wanted), desc="evaluate: predicting", unit="file", leave=False, disable=not progress):
        try:
            got = read(path)
            frames = _frames_of(got)
            at = _frame_panes(got, len(frames))
        except InputError as exc:
            records.append({"kind": "image", "input": path, "status": "error",
                            "error": {"code": exc.code, "message": str(exc)}})
            continue
        want = wanted[path]
        probs = []
        for b0 in range(0, len(frames), batch_frames):
            chunk = frames[b0:b0 + batch_frames]
            batch = np.stack(chunk) if len({f.shape for f in chunk}) == 1 else chunk
            p = np.asarray(classifier.predict(batch), dtype=np.float64)
            probs.append(p.reshape(-1, len(_classes())))
        probs = np.vstack(probs)
        for n, p in enumerate(probs):
            fi, pane = at[n] if at is not None else (n, None)
            if want is not None and fi not in want and len(probs) > 1:
                continue
            rec = {"kind": "image", "input": path, "frame_index": fi, "status": "ok",
                   "probs": dict(zip(_classes(), map(float, p))),
                   "pred": _classes()[int(np.argmax(p))],
                   "provenance": getattr(classifier, "provenance", None)}
            if pane is not None:  # crop="panes": one record per frame and B-mode pane
                rec = {**dict(list(rec.items())[:3]), "pane": pane, **dict(list(rec.items())[3:])}
            records.append(rec)
    return records


def _frame_panes(obj, n: int) -> list[tuple[int, int]] | None:
    """``[(frame_index, pane)]`` of what ``thyrofast.read`` returned with ``crop="panes"`` (one per
    frame and pane); None for any other reader or crop (frames are then numbered in order)."""
    if not isinstance(obj, (list, tuple)) or len(obj) != n:
        return None
    at = [(getattr(f, "frame_index", None), getattr(f, "pane", None)) for f in obj]
    if any(pane is None or not isinstance(fi, (int, np.integer)) for fi, pane in at):
        return None
    return [(int(fi), int(pane)) for fi, pane in at]


def _manifest_of(data) -> str:
    p = os.fspath(data)
    if os.path.isdir(p):
        for name in ("manifest.csv", "labels.csv"):
            if os.path.isfile(os.path.join(p, name)):
                return os.path.join(p, name)
        raise InputError("bad_manifest", "no manifest.csv in the data folder", source=p)
    return p


def evaluate_bundle(
    bundle,
    data,
    split: str | None = "test",
    readers=None,
    level: str = "patient",
    report=None,
    *,
    backend: str = "auto",
    device: str = "auto",
    classifier=None,
    reader=None,
    progress: bool = True,
    **kwargs,
) -> dict:
    """Run a bundle on a data set's ``split`` and evaluate it.

    ``data``: a manifest CSV, or a folder holding ``manifest.csv`` (the
    synthetic cohort's layout).  ``classifier``: any object with
    ``predict(frames) -> (N, 3)`` probabilities; by default
    ``thyrofast.Classifier.load(bundle, backend=, device=)``.  ``readers``
    defaults to ``readers.csv`` beside the manifest when present.  With
    ``report`` (a folder) the report is written there too.  ``progress``: the
    prediction progress bar.  Extra keyword
    arguments go to :func:`evaluate_predictions`.
    """
    manifest = _manifest_of(data)
    if classifier is None:
        from thyrofast import Classifier  # noqa: PLC0415 - lazy: inference backends

        classifier = Classifier.load(bundle, backend=backend, device=device)
    with I.using_classes(getattr(classifier, "classes", None) or I.classes()):
        return _evaluate_bundle(bundle, manifest, split, readers, level, report, classifier, reader, progress,
                                **kwargs)


def _evaluate_bundle(bundle, manifest, split, readers, level, report, classifier, reader, progress, **kwargs):
    lab = I.load_labels(manifest, split)
    if readers is None:
        cand = os.path.join(os.path.dirname(os.path.abspath(manifest)), "readers.csv")
        readers = cand if os.path.isfile(cand) else None
    records = predict_manifest(classifier, lab, reader=reader, progress=progress)
    if "aggregation" not in kwargs:
        kwargs["aggregation"] = bundle_aggregation(classifier)
    if "operating_point" not in kwargs:
        from ..classifier import bundle_operating_point  # noqa: PLC0415

        kwargs["operating_point"] = bundle_operating_point(classifier)
    if kwargs.get("endpoints") is None:  # the endpoints the bundle declares (train --endpoint)
        card = getattr(getattr(classifier, "bundle", None), "manifest", None)
        kwargs["endpoints"] = card.get("endpoints") if isinstance(card, dict) else None
    if "conformal" not in kwargs:
        manifest_ = getattr(getattr(classifier, "bundle", None), "manifest", None)
        kwargs["conformal"] = manifest_.get("conformal") if isinstance(manifest_, dict) else None
    result = evaluate_predictions(records, manifest, readers=readers, level=level, split=split, **kwargs)
    result["predictions"] = f"bundle {os.fspath(bundle)}" if bundle is not None else "classifier"
    if report is not None:
        from .report import write_report  # noqa: PLC0415

        write_report(result, report)
    return result
