"""Study figures: reliability diagram and decision curve of the malignant endpoint (large cohort)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150
_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]


def draw(rep: dict, out: Path) -> dict[str, str]:
    """``reliability_malignant.png`` and ``decision_curve.png`` in ``out``: each rung a colour, each
    replicate a line (none is singled out).  Returns {name: file}."""
    rungs = list(rep["pooled"])
    if not rungs:
        return {}
    fig = Figure(figsize=(4.2 * 2, 4.0), dpi=DPI)
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    ax.plot([0, 1], [0, 1], color="#BBBBBB", lw=0.8, ls=":")
    for k, rung in enumerate(rungs):
        col = _COLORS[k % len(_COLORS)]
        for j, rep_id in enumerate(rep["pooled"][rung]["replicates"]):
            rel = rep["units"][f"{rep_id}/{rung}"]["large"]["malignant"]["reliability"]
            ax.plot([b["predicted"] for b in rel], [b["observed"] for b in rel], marker="o", ms=2.5, lw=0.8,
                    color=col, alpha=0.7, label=rung if j == 0 else None)
        dc = rep["pooled"][rung]["decision_curve_large"]
        bx.plot(dc["thresholds"], dc["model_mean"], color=col, lw=1.2, label=f"{rung} (mean)")
    dc = rep["pooled"][rungs[0]]["decision_curve_large"]
    bx.plot(dc["thresholds"], dc["bayes"], color="#555555", lw=1.2, ls="--", label="Bayes reference")
    bx.plot(dc["thresholds"], dc["treat_all"], color="#999999", lw=0.8, ls=":", label="treat all")
    bx.axhline(0, color="#999999", lw=0.8, label="treat none")
    lo = min(min(dc["bayes"]), 0.0) - 0.05
    bx.set_ylim(lo, max(dc["bayes"]) + 0.05)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(malignant)", ylabel="observed share malignant",
           title="Reliability, malignant (NMTN+MMTN), large cohort")
    bx.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve, malignant")
    ax.legend(fontsize=6.5, loc="upper left")
    bx.legend(fontsize=6.5, loc="lower left")
    fig.text(0.5, -0.02, "Phantom data, not clinical.", ha="center", fontsize=7)
    path = Path(out) / "calibration_decision_curve.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return {"calibration_decision_curve": path.name}
