"""Report figures: ROC per class with reader points, confusion matrix, calibration.

Drawn with matplotlib's object API on an Agg canvas, so the global backend
(and any interactive session of the caller) is left alone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .inputs import classes as _classes
from .inputs import with_result_classes as _result_classes

DPI = 200
# colour-blind safe (Okabe & Ito 2008)
MODEL_COLOR = "#0072B2"
BAYES_COLOR = "#555555"
READER_STYLE = {
    "junior": {"color": "#E69F00", "marker": "^"},
    "senior": {"color": "#009E73", "marker": "s"},
}
_OTHER_MARKERS = ["D", "v", "P", "X", "*"]
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5}


def _new(w: float, h: float, **kw) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, **kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")


def _ci_text(e: Mapping) -> str:
    v = e.get("value")
    if v is None or not math.isfinite(v):
        return "n/a"
    lo, hi = e.get("ci", (math.nan, math.nan))
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:.2f}"
    return f"{v:.2f} ({lo:.2f}–{hi:.2f})"


def _style_axes(ax) -> None:
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.plot([0, 1], [0, 1], color="#BBBBBB", lw=0.8, ls=":", zorder=0)
    ax.grid(True, color="#EEEEEE", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_yticks(np.linspace(0, 1, 6))


@_result_classes
def draw_roc(result: Mapping, path: Path) -> None:
    """One panel per class: model curve (AUC and CI in the legend), Bayes curve,
    reader operating points (their one-vs-rest sensitivity and 1 − specificity)."""
    import matplotlib  # noqa: PLC0415

    lvl = result["level"]
    with matplotlib.rc_context(_RC):
        fig = _new(11.0, 5.0, layout="constrained")
        axes = fig.subplots(1, len(_classes()))
        model = result["model"]
        mpat = result.get("model_patient")
        others = [n for n in result.get("readers", {}) if n not in READER_STYLE]
        for k, cls in enumerate(_classes()):
            ax = axes[k]
            _style_axes(ax)
            r = model["roc"][cls]
            a = model["auc"][cls]
            lab = f"Model{' (images)' if lvl == 'image' else ''}: AUC {_ci_text(a)}"
            ax.plot(r["fpr"], r["tpr"], color=MODEL_COLOR, lw=1.8, label=lab, drawstyle="default", zorder=3)
            if mpat is not None:
                rp = mpat["roc"][cls]
                ax.plot(rp["fpr"], rp["tpr"], color=MODEL_COLOR, lw=1.2, ls="--",
                        label=f"Model (patients): AUC {_ci_text(mpat['auc'][cls])}", zorder=3)
            op = (mpat or model)["operating_points"][cls]
            if math.isfinite(op["fpr"]) and math.isfinite(op["tpr"]):
                ax.plot([op["fpr"]], [op["tpr"]], "o", ms=5, mfc=MODEL_COLOR, mec="white", mew=0.8,
                        zorder=5, label="Model's call (argmax of 3 classes)")
            if "bayes" in result:
                b = result["bayes"]
                rb = b["roc"][cls]
                ax.plot(rb["fpr"], rb["tpr"], color=BAYES_COLOR, lw=1.0, ls=(0, (4, 2)),
                        label=f"Bayes reference: AUC {_ci_text(b['auc'][cls])}", zorder=2)
            for name, rd in result.get("readers", {}).items():
                st = READER_STYLE.get(name) or {"color": "#CC79A7",
                                                 "marker": _OTHER_MARKERS[others.index(name) % 5]}
                p = rd["operating_points"][cls]
                if not (math.isfinite(p["fpr"]) and math.isfinite(p["tpr"])):
                    continue
                sens = rd["per_class"][cls]["sensitivity"]
                spec = rd["per_class"][cls]["specificity"]
                # Wilson intervals of the reader's sensitivity/specificity as cross-hairs
                ylo, yhi = sens["ci"]
                xlo, xhi = 1 - spec["ci"][1], 1 - spec["ci"][0]
                # max(0, ...): Wilson bounds can sit a rounding error inside the point
                ax.errorbar([p["fpr"]], [p["tpr"]],
                            yerr=[[max(0.0, p["tpr"] - ylo)], [max(0.0, yhi - p["tpr"])]]
                            if math.isfinite(ylo) else None,
                            xerr=[[max(0.0, p["fpr"] - xlo)], [max(0.0, xhi - p["fpr"])]]
                            if math.isfinite(xlo) else None,
                            fmt=st["marker"], ms=7, color=st["color"], mec="black", mew=0.6,
                            elinewidth=0.7, capsize=2, alpha=0.95, zorder=6,
                            label=f"{name.capitalize()} radiologist (call; score AUC {_ci_text(rd['auc'][cls])})")
            n_pos = a.get("n_pos", 0)
            ax.set_title(f"{cls} vs rest  (n+ = {n_pos}, n− = {a.get('n_neg', 0)})")
            ax.set_xlabel("1 − specificity")
            if k == 0:
                ax.set_ylabel("Sensitivity")
            if not math.isfinite(a.get("value", math.nan)):
                ax.text(0.5, 0.5, a.get("note", "AUC undefined"), ha="center", va="center", fontsize=7,
                        wrap=True, transform=ax.transAxes, color="#AA0000")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
                      handlelength=2.0, borderpad=0.2, labelspacing=0.35)
        unit = "patients" if lvl == "patient" else "images; dashed: patients"
        fig.suptitle(f"One-vs-rest ROC curves ({unit}). AUC with 95% CI; reader points with 95% Wilson CIs",
                     fontsize=10)
        _save(fig, path)


def _heat(ax, M, fmt, title, cmap, vmax, cbar_label, fig):
    im = ax.imshow(M, cmap=cmap, vmin=0, vmax=vmax)
    K = M.shape[0]
    ax.set_xticks(range(K), _classes())
    ax.set_yticks(range(K), _classes())
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    for i in range(K):
        for j in range(K):
            v = M[i, j]
            txt = fmt(v, i, j)
            dark = np.isfinite(v) and vmax > 0 and v / vmax > 0.55
            ax.text(j, i, txt, ha="center", va="center", color="white" if dark else "#222222", fontsize=9)
    for s in ax.spines.values():
        s.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label(cbar_label)
    cb.outline.set_visible(False)


@_result_classes
def draw_confusion(result: Mapping, path: Path) -> None:
    """Counts and row-normalized (recall per true class) heat maps of the model."""
    import matplotlib  # noqa: PLC0415

    cm = result["model"]["confusion_matrix"]
    C = np.asarray(cm["counts"], dtype=float)
    Rn = np.asarray(cm["row_normalized"], dtype=float)
    unit = "images" if result["level"] == "image" else "patients"
    with matplotlib.rc_context(_RC):
        fig = _new(8.6, 3.6)
        a1, a2 = fig.subplots(1, 2)
        _heat(a1, C, lambda v, i, j: f"{int(v)}", f"Counts ({unit})", "Blues", max(C.max(), 1), unit, fig)
        _heat(a2, np.nan_to_num(Rn), lambda v, i, j: "–" if not np.isfinite(Rn[i, j]) else f"{100 * v:.0f}%",
              "Row-normalized (recall per class)", "Blues", 1.0, "fraction of true class", fig)
        fig.tight_layout()
        _save(fig, path)


@_result_classes
def draw_calibration(result: Mapping, path: Path) -> None:
    """Reliability diagram (top-label confidence vs accuracy) with Wilson bars and counts."""
    import matplotlib  # noqa: PLC0415

    m = result["model"]
    cal = m["calibration"]
    bins = cal["bins"]
    edges = np.asarray(bins["edges"], dtype=float)
    count = np.asarray(bins["count"], dtype=float)
    conf = np.asarray(bins["confidence"], dtype=float)
    acc = np.asarray(bins["accuracy"], dtype=float)
    lo = np.asarray(bins["accuracy_ci_lo"], dtype=float)
    hi = np.asarray(bins["accuracy_ci_hi"], dtype=float)
    ok = count > 0
    unit = "images" if result["level"] == "image" else "patients"
    with matplotlib.rc_context(_RC):
        fig = _new(4.6, 5.4)
        ax, ah = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3.2, 1]}, sharex=True)
        ax.plot([0, 1], [0, 1], color="#BBBBBB", lw=0.8, ls=":", label="Perfect calibration")
        centers = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        ax.bar(centers[ok], acc[ok], width=width * 0.92, color=MODEL_COLOR, alpha=0.18, edgecolor="none")
        ax.errorbar(conf[ok], acc[ok], yerr=[np.maximum(acc[ok] - lo[ok], 0), np.maximum(hi[ok] - acc[ok], 0)], fmt="o-", color=MODEL_COLOR,
                    ms=4, lw=1.2, elinewidth=0.8, capsize=2,
                    label="Model (95% Wilson CI per bin" + (";\nimages counted as independent)"
                                                            if result["level"] == "image" else ")"))
        # the Bayes reference rates patients: overlay it only on a patient-level diagram
        if result["level"] == "patient" and "bayes" in result and "calibration" in result["bayes"]:
            bb = result["bayes"]["calibration"]["bins"]
            bc = np.asarray(bb["count"], dtype=float) > 0
            ax.plot(np.asarray(bb["confidence"], dtype=float)[bc], np.asarray(bb["accuracy"], dtype=float)[bc],
                    "s--", color=BAYES_COLOR, ms=3, lw=0.9, label="Bayes reference")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("Accuracy of the top class")
        e = cal["ece"]
        ax.set_title(f"Reliability ({unit}): ECE {_ci_text(e)}, Brier {cal['brier']:.3f}")
        ax.grid(True, color="#EEEEEE", lw=0.6)
        ax.legend(loc="upper left", frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ah.bar(centers, count, width=width * 0.92, color="#888888")
        ah.set_xlabel("Confidence (top-class probability)")
        ah.set_ylabel(unit.capitalize())
        ah.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        for side in ("top", "right"):
            ah.spines[side].set_visible(False)
        fig.tight_layout()
        _save(fig, path)


@_result_classes
def draw_all(result: Mapping, out_dir) -> dict[str, str]:
    """Draw every figure that applies; returns ``{name: file name}``."""
    out = Path(out_dir)
    made = {}
    draw_roc(result, out / "roc.png")
    made["roc"] = "roc.png"
    draw_confusion(result, out / "confusion_matrix.png")
    made["confusion"] = "confusion_matrix.png"
    if "calibration" in result["model"]:
        draw_calibration(result, out / "calibration.png")
        made["calibration"] = "calibration.png"
    return made
