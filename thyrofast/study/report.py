"""The study report: per replicate x rung, pooled (mean ± SD over replicates) and the protocol's tests.

Never a best-of: every finished unit is in every summary; missing ones are listed.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import atomic_write_text
from . import analysis as A


def oracle_note(proto: dict) -> str:
    """What the pretraining rungs know that real data would not (the sentence every result carries)."""
    n = max([int((r.get("pretrain") or {}).get("images", 0)) for r in proto["rungs"].values()] or [0])
    return (f"Rungs (b)-(d) pretrain on up to {n:,} phantom lesions with noise-free findings and true node "
            "metastasis status from the same generator; (c) and (d) add a class target, and (d)'s is the generator's "
            "exact per-lesion posterior (oracle information real data lacks). Rung (a) is the paper's setting.")


def _git(args: list[str]) -> tuple[int, str]:
    repo = Path(__file__).resolve().parents[2]
    try:
        p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return -1, ""
    return p.returncode, p.stdout.strip()


def provenance(proto: dict) -> dict:
    rc, head = _git(["rev-parse", "HEAD"])
    out: dict[str, Any] = {"run_commit": head if rc == 0 else None}
    frozen = proto.get("frozen_code_commit")
    if frozen and rc == 0:
        rc2, diff = _git(["diff", "--stat", frozen, "--", *proto.get("frozen_paths", [])])
        out["frozen_code_commit"] = frozen
        out["frozen_paths_unchanged"] = (rc2 == 0 and diff == "") if rc2 in (0, 1) else None
        if diff:
            out["frozen_paths_diff"] = diff.splitlines()[-1]
    return out


def _arrays(table: dict, ids: list[str]):
    pat = table["patients"]
    y = np.array([pat[i]["label"] for i in ids], dtype=np.int64)
    bayes = np.array([pat[i]["bayes"] for i in ids], dtype=np.float64)
    return y, bayes


def _v(d: dict, key: str = "value"):
    x = d.get(key) if isinstance(d, dict) else None
    return None if x is None else float(x)


def _summ(m: dict) -> dict:
    """The scalar endpoints of one rater_metrics result."""
    nmtn = m["per_class"].get("NMTN", {}).get("sensitivity", {})
    out = {"macro_auc": _v(m["macro_auc"]), "macro_auc_ci": list(m["macro_auc"]["ci"]),
           "auc": {c: _v(e) for c, e in m["auc"].items()},
           "accuracy": _v(m["accuracy"]), "accuracy_ci": list(m["accuracy"]["ci"]),
           "balanced_accuracy": _v(m["balanced_accuracy"]), "balanced_accuracy_ci": list(m["balanced_accuracy"]["ci"]),
           "nmtn_recall": _v(nmtn), "n": m["n"]}
    if "calibration" in m:
        out["ece"] = _v(m["calibration"]["ece"])
        out["ece_ci"] = list(m["calibration"]["ece"]["ci"])
    return out


def _rater(y, S, ids, proto, pred=None, probabilities=True) -> dict:
    from ..evaluate.core import rater_metrics

    return rater_metrics(y, S, ids, pred=pred, probabilities=probabilities, n_boot=int(proto["n_boot"]),
                         level=float(proto["ci_level"]))


def _compare(y, P, S, calls, ids, proto) -> dict:
    from ..evaluate.core import compare

    c = compare(y, P, P.argmax(1), S, calls, ids, n_boot=int(proto["n_boot"]), level=float(proto["ci_level"]))
    mad = c.get("macro_auc_diff", {})
    return {"macro_auc_diff": _v(mad), "macro_auc_diff_se": mad.get("se"), "macro_auc_diff_ci": mad.get("ci"),
            "accuracy_diff": _v(c["accuracy_diff"]), "accuracy_diff_ci": list(c["accuracy_diff"]["ci"]),
            "mcnemar_b_model_only": c["mcnemar"]["b_model_only_correct"],
            "mcnemar_c_reference_only": c["mcnemar"]["c_reference_only_correct"],
            "mcnemar_p_exact": c["mcnemar"]["p_exact"],
            "delong_p": {k: v["p"] for k, v in c["delong"].items()},
            "delong_diff": {k: v["diff"] for k, v in c["delong"].items()}}


def _malignant(y, P, bayes, proto) -> dict:
    ym = (y > 0).astype(int)
    pm = P[:, 1:].sum(1)
    thr = proto.get("decision_curve_thresholds") or [0.1, 0.3, 0.5, 0.7, 0.9]
    return {"calibration": A.calibration_slope_intercept(ym, pm), "reliability": A.reliability_table(ym, pm),
            "decision_curve": {"thresholds": thr, "model": A.net_benefit(ym, pm, thr),
                               "bayes": A.net_benefit(ym, bayes[:, 1:].sum(1), thr),
                               "treat_all": A.treat_all_net_benefit(ym, thr)}}


def _subgroups(y, P, bayes, ids, table) -> dict:
    from .. import metrics as M

    pat = table["patients"]
    out = {}
    for flag in ("node_view", "multifocal", "small"):
        f = np.array([bool(pat[i][flag]) for i in ids])
        for val in (True, False):
            m = f == val
            if not m.any():
                continue
            present = [k for k in range(P.shape[1]) if 0 < (y[m] == k).sum() < m.sum()]
            mauc = float(np.mean([M.roc_auc((y[m] == k).astype(int), P[m, k]) for k in present])) if present \
                else math.nan
            bauc = float(np.mean([M.roc_auc((y[m] == k).astype(int), bayes[m, k]) for k in present])) if present \
                else math.nan
            out[f"{flag}={'yes' if val else 'no'}"] = {
                "n": int(m.sum()), "accuracy": float(np.mean(P[m].argmax(1) == y[m])),
                "bayes_accuracy": float(np.mean(bayes[m].argmax(1) == y[m])), "macro_auc": mauc,
                "bayes_macro_auc": bauc}
    return out


def _references(table: dict, ids: list[str], proto) -> dict:
    y, bayes = _arrays(table, ids)
    out = {"bayes": _summ(_rater(y, bayes, ids, proto))}
    for name, r in table["readers"].items():
        S = np.array([r["scores"][i] for i in ids])
        calls = np.array([r["call"][i] for i in ids])
        out[name] = _summ(_rater(y, S, ids, proto, pred=calls, probabilities=False))
    return out


def unit_analysis(res: dict, tables: dict, which: str, proto: dict) -> dict:
    """Endpoints and comparisons of one unit on one cohort ("test" or "large")."""
    from ..evaluate import inputs as I
    from ..synth.features import CLASSES

    table = tables[res["cohort"]] if which == "test" else tables["large"]
    ids = res[which]["ids"]
    P = np.asarray(res[which]["probs"], dtype=np.float64)
    y, bayes = _arrays(table, ids)
    with I.using_classes(CLASSES):
        out = {"model": _summ(_rater(y, P, ids, proto)), "vs": {}}
        out["vs"]["bayes"] = _compare(y, P, bayes, bayes.argmax(1), ids, proto)
        for name, r in table["readers"].items():
            S = np.array([r["scores"][i] for i in ids])
            calls = np.array([r["call"][i] for i in ids])
            out["vs"][name] = _compare(y, P, S, calls, ids, proto)
    out["malignant"] = _malignant(y, P, bayes, proto)
    if which == "large":
        out["subgroups"] = _subgroups(y, P, bayes, ids, table)
    return out


def build_report(study) -> dict:
    from ..evaluate import inputs as I
    from ..synth.features import CLASSES

    proto = study.proto
    tables = {}
    lc = proto["large_cohort"]
    _, tables["large"] = study.large()
    results: dict[tuple[str, str], dict] = {}
    for rep, rung in study.units():
        p = study.result_path(rep, rung)
        if p.is_file():
            res = json.loads(p.read_text())
            results[(rep, rung)] = res
            if res["cohort"] not in tables:
                r = next(x for x in proto["replicates"] if x["id"] == rep)
                _, tables[res["cohort"]] = study.cohort(int(r["cohort_seed"]), proto.get("study_cohort_patients"))
    units = {f"{rep}/{rung}": {"test": unit_analysis(res, tables, "test", proto),
                               "large": unit_analysis(res, tables, "large", proto), "seconds": res["seconds"]}
             for (rep, rung), res in results.items()}
    large_ids = tables["large"]["ids"]
    with I.using_classes(CLASSES):
        refs = {"large": _references(tables["large"], large_ids, proto)}
        for name, t in tables.items():
            if name != "large":
                test_ids = [i for i in t["ids"] if t["patients"][i]["split"] == "test"]
                refs[name + " (test)"] = _references(t, test_ids, proto)
    reader_draws = {name: {k: A.mean_sd(v) for k, v in d.items()}
                    for name, d in tables["large"]["reader_draws"].items()}

    # ---- pooled over replicates, per rung
    pooled: dict[str, Any] = {}
    margin = float(proto["primary"]["non_inferiority_margin"])
    readers = list(tables["large"]["readers"])
    for rung in proto["rungs"]:
        reps = [rep for rep, r in results if r == rung]
        if not reps:
            continue
        u = [units[f"{rep}/{rung}"] for rep in reps]
        entry: dict[str, Any] = {"replicates": reps}
        for which in ("test", "large"):
            entry[which] = {k: A.mean_sd([x[which]["model"].get(k) for x in u])
                            for k in ("macro_auc", "accuracy", "balanced_accuracy", "nmtn_recall", "ece")}
            entry[which]["calibration_slope"] = A.mean_sd(
                [x[which]["malignant"]["calibration"]["slope"] for x in u])
            entry[which]["calibration_intercept"] = A.mean_sd(
                [x[which]["malignant"]["calibration"]["intercept"] for x in u])
        d = [x["large"]["vs"]["bayes"]["macro_auc_diff"] for x in u]
        se = [x["large"]["vs"]["bayes"]["macro_auc_diff_se"] for x in u]
        ni = A.pooled_difference(d, se, float(proto["ci_level"]))
        ni["margin"] = margin
        ni["non_inferior"] = bool(ni["ci"][0] > -margin)
        entry["vs_bayes_macro_auc_large"] = ni
        mc = {}
        for name in readers:
            b = sum(x["test"]["vs"][name]["mcnemar_b_model_only"] for x in u)
            c = sum(x["test"]["vs"][name]["mcnemar_c_reference_only"] for x in u)
            from ..metrics import mcnemar_counts

            r = mcnemar_counts(b, c, exact=True)
            mc[name] = {"b_model_only_correct": b, "c_reader_only_correct": c, "p_exact": r.pvalue,
                        "n_patients": sum(x["test"]["model"]["n"] for x in u),
                        "large_per_replicate_p_exact": [x["large"]["vs"][name]["mcnemar_p_exact"] for x in u],
                        "large_accuracy_diff": A.mean_sd([x["large"]["vs"][name]["accuracy_diff"] for x in u])}
        adj = A.holm({n: mc[n]["p_exact"] for n in mc})
        for n in mc:
            mc[n]["p_holm"] = adj[n]
            mc[n]["better_than_reader"] = bool(adj[n] < 0.05 and mc[n]["b_model_only_correct"]
                                               > mc[n]["c_reader_only_correct"])
        entry["vs_readers_pooled_test"] = mc
        dcs = [x["large"]["malignant"]["decision_curve"] for x in u]
        entry["decision_curve_large"] = {"thresholds": dcs[0]["thresholds"],
                                         "model_mean": np.mean([dc["model"] for dc in dcs], 0).tolist(),
                                         "bayes": dcs[0]["bayes"], "treat_all": dcs[0]["treat_all"]}
        subs = [x["large"]["subgroups"] for x in u]
        entry["subgroups_large"] = {k: {m: A.mean_sd([s[k][m] for s in subs if k in s])
                                        for m in ("accuracy", "macro_auc", "bayes_accuracy", "bayes_macro_auc", "n")}
                                    for k in subs[0]}
        pooled[rung] = entry

    # ---- the ladder: paired differences on the large cohort
    ladder = {}
    pairs = [("b_findings", "a_none"), ("c_patient", "b_findings"), ("d_lesion", "c_patient"), ("d_lesion", "a_none")]
    for hi, lo in pairs:
        if hi not in proto["rungs"] or lo not in proto["rungs"]:
            continue
        vals, ses = [], []
        for r in proto["replicates"]:
            a, b = results.get((r["id"], hi)), results.get((r["id"], lo))
            if not (a and b):
                continue
            ids = a["large"]["ids"]
            y, _ = _arrays(tables["large"], ids)
            Pa = np.asarray(a["large"]["probs"])
            pb = dict(zip(b["large"]["ids"], b["large"]["probs"]))
            Pb = np.asarray([pb[i] for i in ids])
            with I.using_classes(CLASSES):
                c = _compare(y, Pa, Pb, Pb.argmax(1), ids, proto)
            vals.append(c["macro_auc_diff"])
            ses.append(c["macro_auc_diff_se"])
        if vals:
            ladder[f"{hi} - {lo}"] = A.pooled_difference(vals, ses, float(proto["ci_level"]))

    state = study.state
    wall = wall_summary(state)
    missing = [f"{rep}/{rung}" for rep, rung in study.units() if (rep, rung) not in results]
    return {"format": "thyrofast-study", "protocol": {"name": proto["name"], "sha256": proto["sha256"]},
            "provenance": provenance(proto), "wall_time_s": wall["wall_s"], "wall": wall, "units_done": sorted(units),
            "units_missing": missing, "large_cohort": lc, "references": refs, "reader_draws_large": reader_draws,
            "reader_models": tables["large"]["reader_models"],
            "reader_description": tables["large"]["reader_description"], "units": units, "pooled": pooled,
            "ladder_large": ladder, "oracle_note": oracle_note(proto), "data": "phantom (thyrofast synth): NOT clinical"}


def wall_summary(state: dict) -> dict:
    """The study's time from its state.json: the calls' wall time together (a call cut off counts up to its
    last finished unit; one still marked running was killed), and the compute time, every unit's and cohort's
    seconds summed (a unit's seconds exclude the cohorts it generated, which have their own entries)."""
    calls = state.get("calls") or []
    wall = (sum(float(c.get("wall_s", 0.0)) for c in calls) if calls else float(state.get("wall_s_total", 0.0)))
    return {"wall_s": round(wall, 1), "calls": len(calls),
            "calls_cut_off": sum(1 for c in calls if c.get("status") in ("running", "interrupted")),
            "compute_s": round(sum(float(v) for v in (state.get("seconds") or {}).values()), 1)}


def _f(x, d=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{d}f}"


def _ms(e: dict, d=3) -> str:
    if not e or e.get("n", 0) == 0:
        return "n/a"
    return f"{_f(e['mean'], d)} ± {_f(e['sd'], d)}" if e["n"] > 1 else _f(e["mean"], d)


def render_markdown(rep: dict, proto: dict) -> str:
    L = [f"# Study report: {rep['protocol']['name']}", "",
         "**Phantom data, not clinical data; no model here is for diagnosis.**", "",
         f"- protocol SHA-256 `{rep['protocol']['sha256'][:16]}…`; run commit `{rep['provenance'].get('run_commit')}`; "
         + (f"frozen code `{rep['provenance']['frozen_code_commit'][:7]}`, frozen paths unchanged: "
            f"{rep['provenance'].get('frozen_paths_unchanged')}" if rep["provenance"].get("frozen_code_commit")
            else "no frozen code commit in this protocol (not checked)"),
         f"- wall time, all calls together: {rep['wall_time_s']:.0f} s ({rep['wall_time_s'] / 3600:.2f} h"
         + (f"; {rep['wall']['calls']} calls, {rep['wall']['calls_cut_off']} cut off, counted to their last "
            "finished unit" if rep["wall"]["calls_cut_off"] else "")
         + f"); compute, units and cohorts summed: {rep['wall']['compute_s']:.0f} s; "
         f"units done {len(rep['units_done'])}, "
         f"missing {len(rep['units_missing'])}" + (f" ({', '.join(rep['units_missing'])})" if rep["units_missing"]
                                                   else ""),
         f"- large cohort: seed {rep['large_cohort']['seed']}, {rep['large_cohort'].get('patients')} patients, "
         "every patient scored by every replicate's model", "",
         f"**{rep['oracle_note']}**", "",
         f"Readers: {rep['reader_description']} (fitted: "
         + ", ".join(f"{n} eps {m['eps']:.4f}, decision noise {m['decision_noise']:.3f}"
                     for n, m in rep["reader_models"].items()) + "). Accuracy on the large cohort over "
         + ", ".join(f"{n}: {_ms(d['accuracy'])} ({d['accuracy']['n']} draws)"
                     for n, d in rep["reader_draws_large"].items()) + ".", ""]
    L += ["## Primary: non-inferiority to the Bayes reference (macro-AUC, large cohort)", "",
          "| rung | replicates | model macro-AUC (mean ± SD) | Bayes | mean difference | 95% CI | margin | non-inferior |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    bayes_large = rep["references"]["large"]["bayes"]["macro_auc"]
    for rung, e in rep["pooled"].items():
        ni = e["vs_bayes_macro_auc_large"]
        star = " (primary)" if rung == proto["primary"]["rung"] else ""
        L.append(f"| {rung}{star} | {len(e['replicates'])} | {_ms(e['large']['macro_auc'])} | {_f(bayes_large)} | "
                 f"{_f(ni['mean'])} | {_f(ni['ci'][0])} to {_f(ni['ci'][1])} | −{ni['margin']} | "
                 f"{'yes' if ni['non_inferior'] else 'no'} |")
    L += ["", "## Endpoints per rung (mean ± SD over replicates)", ""]
    for which, title in (("large", "large cohort"), ("test", "study cohorts' test patients")):
        L += [f"### {title}", "", "| rung | macro-AUC | accuracy | balanced accuracy | NMTN recall | ECE | "
              "calibration slope (malignant) | intercept |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rung, e in rep["pooled"].items():
            x = e[which]
            L.append(f"| {rung} | {_ms(x['macro_auc'])} | {_ms(x['accuracy'])} | {_ms(x['balanced_accuracy'])} | "
                     f"{_ms(x['nmtn_recall'])} | {_ms(x['ece'])} | {_ms(x['calibration_slope'], 2)} | "
                     f"{_ms(x['calibration_intercept'], 2)} |")
        L.append("")
    L += ["### References (Bayes, readers draw 0)", "", "| cohort | rater | macro-AUC | accuracy | balanced accuracy | "
          "NMTN recall |", "| --- | --- | --- | --- | --- | --- |"]
    for coh, d in rep["references"].items():
        for name, m in d.items():
            L.append(f"| {coh} | {name} | {_f(m['macro_auc'])} | {_f(m['accuracy'])} | {_f(m['balanced_accuracy'])} "
                     f"| {_f(m['nmtn_recall'])} |")
    L += ["", "## Against the readers (accuracy; exact McNemar)", "",
          "Pooled over the replicates' test patients (discordant pairs summed; Holm over the two readers); "
          "large cohort per replicate.", "",
          "| rung | reader | model-only / reader-only correct (pooled test) | p exact | p Holm | better? | "
          "large: accuracy difference | large: p per replicate |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rung, e in rep["pooled"].items():
        for name, m in e["vs_readers_pooled_test"].items():
            L.append(f"| {rung} | {name} | {m['b_model_only_correct']} / {m['c_reader_only_correct']} of "
                     f"{m['n_patients']} | {_f(m['p_exact'], 3)} | {_f(m['p_holm'], 3)} | "
                     f"{'yes' if m['better_than_reader'] else 'no'} | {_ms(m['large_accuracy_diff'])} | "
                     + ", ".join(_f(p, 3) for p in m["large_per_replicate_p_exact"]) + " |")
    L += ["", "## The information ladder (paired macro-AUC differences, large cohort)", "",
          "| step | replicates | mean ± SD | 95% CI |", "| --- | --- | --- | --- |"]
    for k, d in rep["ladder_large"].items():
        L.append(f"| {k} | {d['n_replicates']} | {_f(d['mean'])} ± {_f(d.get('sd'))} | "
                 f"{_f(d['ci'][0])} to {_f(d['ci'][1])} |")
    L += ["", "## Subgroups (large cohort, mean over replicates)", "",
          "| rung | subgroup | patients | accuracy (Bayes) | macro-AUC (Bayes) |", "| --- | --- | --- | --- | --- |"]
    for rung, e in rep["pooled"].items():
        for k, s in e["subgroups_large"].items():
            L.append(f"| {rung} | {k} | {_f(s['n']['mean'], 0)} | {_f(s['accuracy']['mean'])} "
                     f"({_f(s['bayes_accuracy']['mean'])}) | {_f(s['macro_auc']['mean'])} "
                     f"({_f(s['bayes_macro_auc']['mean'])}) |")
    L += ["", "## Decision curve, malignant endpoint (large cohort; net benefit, model mean over replicates)", ""]
    for rung, e in rep["pooled"].items():
        dc = e["decision_curve_large"]
        L += [f"**{rung}**", "", "| threshold | " + " | ".join(f"{t:.2f}" for t in dc["thresholds"]) + " |",
              "| --- |" + " --- |" * len(dc["thresholds"]),
              "| model | " + " | ".join(_f(v) for v in dc["model_mean"]) + " |",
              "| Bayes | " + " | ".join(_f(v) for v in dc["bayes"]) + " |",
              "| treat all | " + " | ".join(_f(v) for v in dc["treat_all"]) + " |", ""]
    L += ["## Every unit", "", "| unit | large: macro-AUC | accuracy | balanced | NMTN recall | ECE (95% CI) | "
          "test: macro-AUC | test accuracy | seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, u in sorted(rep["units"].items()):
        g, t = u["large"]["model"], u["test"]["model"]
        L.append(f"| {name} | {_f(g['macro_auc'])} | {_f(g['accuracy'])} | {_f(g['balanced_accuracy'])} | "
                 f"{_f(g['nmtn_recall'])} | {_f(g.get('ece'))} ({_f((g.get('ece_ci') or [None])[0])}–"
                 f"{_f((g.get('ece_ci') or [None, None])[1])}) | {_f(t['macro_auc'])} | {_f(t['accuracy'])} | "
                 f"{u['seconds']:.0f} |")
    return "\n".join(L) + "\n"


def write_report(study) -> dict:
    from ..evaluate.report import to_jsonable
    from .figures import draw

    rep = to_jsonable(build_report(study))
    rep["figures"] = draw(rep, study.out)
    atomic_write_text(study.out / "report.json", json.dumps(rep, indent=2))
    md = render_markdown(rep, study.proto)
    for name, file in rep["figures"].items():
        md += f"\n![{name}]({file})\n"
    atomic_write_text(study.out / "report.md", md)
    return rep
