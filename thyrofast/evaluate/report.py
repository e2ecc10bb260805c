"""report.json (every number), report.md (the paper's tables) and the figures."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._fs import atomic_write_text
from .inputs import classes as _classes
from .inputs import with_result_classes as _result_classes

#: Display names, in the paper's order.
RATER_TITLES = {"model": "Model (thyrofast)", "bayes": "Bayes reference", "junior": "Junior radiologist",
                "senior": "Senior radiologist"}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: arrays to lists, tuples to lists, nan/inf to null."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def raters(result: Mapping) -> list[tuple[str, str, Mapping]]:
    """(key, title, metrics) for the model, the Bayes reference and each reader."""
    out = [("model", RATER_TITLES["model"], result["model"])]
    if "bayes" in result:
        out.append(("bayes", RATER_TITLES["bayes"], result["bayes"]))
    for name, m in result.get("readers", {}).items():
        out.append((name, RATER_TITLES.get(name, f"Reader {name}"), m))
    return out


# ----------------------------------------------------------------------------
# number formatting


def _f(x, d=3) -> str:
    if x is None or not math.isfinite(float(x)):
        return "–"
    return f"{float(x):.{d}f}".replace("-", "−")


def _ci(entry: Mapping, d=3, key="ci") -> str:
    v = entry.get("value")
    lo, hi = entry.get(key, (None, None))
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_f(v, d)}"
    sep = " to " if lo < 0 or hi < 0 else "–"
    return f"{_f(v, d)} ({_f(lo, d)}{sep}{_f(hi, d)})"


def _pct(entry: Mapping) -> str:
    v = entry.get("value")
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    lo, hi = entry.get("ci", (math.nan, math.nan))
    frac = f" [{entry['k']}/{entry['n']}]" if "k" in entry else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{100 * v:.1f}%{frac}"
    return f"{100 * v:.1f}% ({100 * lo:.1f}–{100 * hi:.1f}){frac}"


def _p(p) -> str:
    if p is None or not math.isfinite(float(p)):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _p_is(p) -> str:
    """"p=0.123" or "p<0.001" for running text."""
    text = _p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# ----------------------------------------------------------------------------
# markdown


@_result_classes
def render_markdown(result: Mapping, figures: Mapping[str, str] | None = None,
                    reference: Mapping[str, Mapping] | None = None) -> str:
    """The report as Markdown, laid out like the paper's tables.

    ``reference``: optional published numbers to print beside ours in Table 2,
    ``{row title: {"auc": {class: value}, "macro_auc": v, "accuracy": v}}``
    (any key may be missing), e.g. the paper's clinical results; they are
    labelled as given and carry no interval.
    """
    lvl = result["level"]
    c = result["counts"]
    pct = int(round(100 * result.get("ci_level", 0.95)))
    L: list[str] = ["# thyrofast evaluation report", ""]
    desc = (f"Level: **{lvl}**"
            + (f" (image probabilities aggregated per patient by the rule {result['aggregation']!r})"
               if result.get("aggregation") else "")
            + f". Split: {result.get('split') or 'all'}. Patients: {c['patients']} ("
            + ", ".join(f"{k} {v}" for k, v in c["patients_per_class"].items()) + ")"
            + (f"; images: {c['images']}" if c.get("images") else "") + ".")
    L += [desc, "", f"Intervals are {pct}% CIs: AUC by DeLong, proportions by Wilson, "
          "F1 / macro / micro AUC / ECE by a patient-level bootstrap "
          f"({result['model']['bootstrap']['n_boot']} replicates, seed {result['model']['bootstrap']['seed']}, "
          "stratified by class)"
          + ("; at image level every model interval is the patient-level bootstrap." if lvl == "image" else "."),
          ""]
    prov = result.get("provenance") or {}
    if prov:
        L += ["Model: " + ", ".join(f"{k} `{v}`" for k, v in prov.items() if v is not None), ""]

    # Table 1: model per class
    m = result["model"]
    L += [f"## Table 1. Model performance per class (one-vs-rest, {lvl} level)", ""]
    rows = []
    for cls in _classes():
        pc = m["per_class"][cls]
        rows.append([cls, _ci(m["auc"][cls]), _pct(pc["sensitivity"]), _pct(pc["specificity"]),
                     _pct(pc["ppv"]), _pct(pc["npv"]), _ci(pc["f1"]), str(pc["support"])])
    L += _table(["Class", "AUC (95% CI)", "Sensitivity", "Specificity", "PPV", "NPV", "F1", "n"], rows)
    bal = f"; balanced accuracy {_ci(m['balanced_accuracy'])}" if "balanced_accuracy" in m else ""
    L += ["", f"Macro AUC {_ci(m['macro_auc'])}; micro AUC {_ci(m['micro_auc'])}; "
          f"accuracy {_pct(m['accuracy'])}{bal}; Cohen's κ {_ci(m['kappa'])}"
          + (f"; ECE {_ci(m['calibration']['ece'])}, Brier {_f(m['calibration']['brier'])}"
             if "calibration" in m else "") + ".", ""]
    conf = result.get("conformal")
    if conf:
        L += [f"Conformal prediction sets ({conf.get('method')}, alpha {conf['alpha']:g}, calibrated on the "
              "validation patients); refer = the set is not exactly one class.", ""]
        L += _table(["Level", "Coverage", *[f"Coverage {c}" for c in _classes()], "Mean set size", "Refer", "n"],
                    [[lvl, _f(cf["coverage"]), *[_f(cf["per_class"][c]["coverage"]) for c in _classes()],
                      _f(cf["mean_set_size"]), _pct_plain(cf["refer_rate"]), str(cf["n"])]
                     for lvl in ("patient", "image") if (cf := conf.get(lvl))]) + [""]
    opr = result.get("operating_point")
    if opr:
        at, am = opr["at_threshold"], opr["argmax"]
        L += [f"Operating point ({opr['rule']}, chosen on the validation patients): {opr['positive']} when "
              f"P({opr['positive']}) ≥ {opr['threshold']:.3f}.", ""]
        L += _table(["Call", "Accuracy", "Balanced accuracy", f"Sensitivity ({opr['positive']})", "Specificity"],
                    [[name, _f(r["accuracy"]), _f(r["balanced_accuracy"]), _f(r["sensitivity"]),
                      _f(r["specificity"])] for name, r in (("operating point", at), ("argmax", am))]) + [""]
    eps = result.get("endpoints") or {}
    if eps:
        L += ["Named endpoints (probability = the sum of the member classes'; calls at the "
              + next(iter(eps.values()))["calls"] + "):", ""]
        L += _table(["Endpoint", "Classes", "AUC (95% CI, DeLong)", "Sensitivity (95% CI)", "Specificity (95% CI)",
                     "n pos / neg"],
                    [[name, " + ".join(e["members"]), _ci(e["auc"]), _ci(e["sensitivity"]), _ci(e["specificity"]),
                      f"{e['n_pos']} / {e['n_neg']}"] for name, e in eps.items()]) + [""]

    # Table 2: raters side by side
    rs = raters(result)
    if len(rs) > 1 or lvl == "patient":
        title = "## Table 2. Model vs the Bayes reference and the readers (patient level)"
        L += [title, ""]
        rows = []
        for key, name, mm in rs:
            if key == "model" and "model_patient" in result:
                mm = result["model_patient"]
            rows.append([name] + [_ci(mm["auc"][cls]) for cls in _classes()]
                        + [_ci(mm["macro_auc"]), _pct(mm["accuracy"]), _ci(mm["kappa"])])
        for title, ref in (reference or {}).items():
            auc_ref = ref.get("auc") or {}
            acc = ref.get("accuracy")
            rows.append([f"*{title}*"] + [_f(auc_ref.get(cls), 2) for cls in _classes()]
                        + [_f(ref.get("macro_auc"), 2), "–" if acc is None else f"{100 * acc:.0f}%", "–"])
        L += _table(["Rater"] + [f"AUC {cls}" for cls in _classes()] + ["Macro AUC", "Accuracy", "κ"], rows)
        L += [""]
        if len(rs) > 1:
            L += ["Per-class sensitivity / specificity at each rater's call:", ""]
            rows = []
            for key, name, mm in rs:
                if key == "model" and "model_patient" in result:
                    mm = result["model_patient"]
                rows.append([name] + [f"{_pct(mm['per_class'][cls]['sensitivity'])} / "
                                      f"{_pct(mm['per_class'][cls]['specificity'])}" for cls in _classes()])
            L += _table(["Rater"] + [f"{cls} sens / spec" for cls in _classes()], rows) + [""]

    # Table 3: tests
    comps = result.get("comparisons") or {}
    if comps:
        L += ["## Table 3. Model vs each reference: paired tests (patient level)", ""]
        rows = []
        for ref, cm in comps.items():
            name = RATER_TITLES.get(ref, ref)
            for cls in _classes():
                d = cm["delong"][cls]
                rows.append([name, f"AUC {cls}", f"{_f(d['auc_model'])} vs {_f(d['auc_reference'])}",
                             _ci({"value": d["diff"], "ci": d["ci"]}), _f(d["z"], 2), _p(d["p"]),
                             "DeLong (paired)"])
            mc = cm["mcnemar"]
            ad = cm["accuracy_diff"]
            rows.append([name, "Accuracy", f"model-only correct {mc['b_model_only_correct']}, "
                         f"reference-only {mc['c_reference_only_correct']}", _ci(ad), _f(mc["statistic"], 2),
                         _p(mc["p"]), f"McNemar ({mc['method']})"])
        L += _table(["Reference", "Measure", "Model vs reference", "Difference (95% CI)", "Statistic", "p",
                     "Test"], rows)
        L += ["", "Differences are model − reference. Accuracy difference CIs are paired patient-level "
              "bootstrap intervals. p values are not adjusted for multiple comparisons.", ""]

    # confusion matrices
    L += [f"## Confusion matrix (model, {lvl} level; rows = truth, columns = prediction)", ""]
    cmx = m["confusion_matrix"]
    rows = []
    for i, cls in enumerate(_classes()):
        cnt = cmx["counts"][i]
        rn = cmx["row_normalized"][i]
        rows.append([f"**{cls}**"] + [f"{int(cnt[j])} ({_pct_plain(rn[j])})" for j in range(len(_classes()))])
    L += _table(["truth \\ predicted"] + list(_classes()), rows) + [""]
    for _key, name, mm in rs[1:]:
        cmx = mm["confusion_matrix"]
        rows = [[f"**{cls}**"] + [str(int(v)) for v in cmx["counts"][i]] for i, cls in enumerate(_classes())]
        L += [f"{name}:", ""] + _table(["truth \\ call"] + list(_classes()), rows) + [""]

    if figures:
        L += ["## Figures", ""]
        for title, path in figures.items():
            L += [f"![{title}]({path})", ""]
    notes = result.get("notes") or []
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(L)


def _pct_plain(x) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.0f}%"


@_result_classes
def write_report(result: Mapping, out_dir, figures: bool = True,
                 reference: Mapping[str, Mapping] | None = None) -> dict[str, str]:
    """Write ``report.json``, ``report.md`` and (by default) PNG figures into ``out_dir``.

    ``reference``: published numbers to show beside ours (see
    :func:`render_markdown`); stored under ``"reference"`` in report.json.
    Returns ``{name: path}`` of what was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    figs: dict[str, str] = {}
    if figures:
        from . import figures as F  # noqa: PLC0415 - matplotlib only when drawing

        figs = F.draw_all(result, out)
        written.update({f"figure:{k}": str(out / v) for k, v in figs.items()})
    data = to_jsonable(result)
    data["figures"] = figs
    if reference:
        data["reference"] = to_jsonable(reference)
    atomic_write_text(out / "report.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    written["report.json"] = str(out / "report.json")
    titles = {"roc": "ROC curves per class", "confusion": "Confusion matrix",
              "calibration": "Calibration (reliability diagram)"}
    atomic_write_text(out / "report.md", render_markdown(result, {titles.get(k, k): v for k, v in figs.items()},
                                                     reference))
    written["report.md"] = str(out / "report.md")
    return written


@_result_classes
def summary_lines(result: Mapping) -> list[str]:
    """A compact fixed-width table for the terminal."""
    w = 18
    head = f"{'':<19}" + "".join(f"{'AUC ' + c:>{w}}" for c in _classes()) + f"{'macro AUC':>{w}}{'accuracy':>{w}}"
    lines = [head, "-" * len(head)]
    for key, name, mm in raters(result):
        if key == "model" and "model_patient" in result:
            name = f"Model ({result['level']})"
        acc = mm["accuracy"]
        lo, hi = acc["ci"]
        acc_s = (f"{100 * acc['value']:.0f}% ({100 * lo:.0f}–{100 * hi:.0f})"
                 if math.isfinite(acc["value"]) and math.isfinite(lo) else "n/a")
        cells = [_ci(mm["auc"][c], 2) for c in _classes()] + [_ci(mm["macro_auc"], 2), acc_s]
        lines.append(f"{name.replace(' radiologist', '')[:19]:<19}" + "".join(f"{x:>{w}}" for x in cells))
    bal = result["model"].get("balanced_accuracy")
    if bal:
        lines.append(f"model balanced accuracy (argmax) {_ci(bal, 2)}")
    for lvl in ("patient", "image"):
        cf = (result.get("conformal") or {}).get(lvl)
        if cf:
            lines.append(f"conformal sets ({lvl} level, alpha {result['conformal']['alpha']:g}): coverage "
                         f"{_f(cf['coverage'], 3)} (" + ", ".join(f"{c} {_f(v['coverage'], 3)}"
                                                        for c, v in cf["per_class"].items())
                         + f"), mean set size {_f(cf['mean_set_size'], 2)}, refer {_pct_plain(cf['refer_rate'])}")
    opr = result.get("operating_point")
    if opr:
        at, am = opr["at_threshold"], opr["argmax"]
        lines.append(f"operating point ({opr['rule']}): {opr['positive']} when P >= {opr['threshold']:.3f}: "
                     f"balanced accuracy {_f(at['balanced_accuracy'], 2)} (argmax {_f(am['balanced_accuracy'], 2)}), "
                     f"sensitivity {_f(at['sensitivity'], 2)}, specificity {_f(at['specificity'], 2)}")
    for name, e in (result.get("endpoints") or {}).items():
        lines.append(f"endpoint {name} = {'+'.join(e['members'])}: AUC {_ci(e['auc'], 2)}, sensitivity "
                     f"{_ci(e['sensitivity'], 2)}, specificity {_ci(e['specificity'], 2)} ({e['calls']} calls)")
    for ref, cm in (result.get("comparisons") or {}).items():
        ps = ", ".join(f"{c} {_p_is(cm['delong'][c]['p'])}" for c in _classes())
        who = "model (patients)" if "model_patient" in result else "model"
        lines.append(f"{who} vs {ref}: DeLong {ps}; McNemar {_p_is(cm['mcnemar']['p'])}")
    return lines
