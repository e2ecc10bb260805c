"""Contact sheet of synthetic frames, a few per class, labelled with their latent features.

``python -m thyrofast.synth.contact_sheet docs/synth_contact_sheet.png``
"""
from __future__ import annotations

import sys

import numpy as np

from .cohort import plan_cohort
from .features import CLASSES


def _label(pl, spec) -> str:
    p = pl.patient
    if spec.view == "lymph_node":
        x = p.nodes[spec.target]
        bits = [f"node {x.short_axis_mm:.1f} mm", "round" if x.round else "oval",
                "no hilum" if x.hilum_absent else "hilum"]
        bits += [b for b, on in (("microcalc", x.microcalc), ("cystic", x.cystic), ("hyperechoic", x.hyperechoic)) if on]
        bits.append("(metastatic)" if x.metastatic else "(reactive)")
        return ", ".join(bits)
    n = p.nodules[spec.target]
    return (f"{spec.view[:5]}: {n.composition}, {n.echogenicity.replace('_', ' ')}, {n.shape.replace('_', '-')},\n"
            f"{n.margin.replace('_', ' ')}, foci {n.foci.replace('_', ' ')}, {n.size_mm:.0f} mm, TR{n.tirads_level}")


def make_contact_sheet(path: str, seed: int = 0, per_class: int = 4, patients: int = 40) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cohort import seed_sequence
    from .imaging import Device, render

    plans = plan_cohort("paper", seed, patients)
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(4.2 * per_class, 3.6 * len(CLASSES)), dpi=110)
    for row, cls in enumerate(CLASSES):
        chosen = []
        for pl in (q for q in plans if q.label == cls):
            views = {s.view: s for s in pl.images}
            if pl.patient.nodes and "lymph_node" in views and not any(s.view == "lymph_node" for _, s in chosen):
                chosen.append((pl, views["lymph_node"]))
            for v in ("transverse", "longitudinal"):
                if v in views and len(chosen) < per_class:
                    chosen.append((pl, views[v]))
                    break
            if len(chosen) >= per_class:
                break
        chosen.sort(key=lambda t: t[1].view == "lymph_node")
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(chosen):
                continue
            pl, spec = chosen[col]
            device = Device.sample(np.random.default_rng(seed_sequence(seed, 5, pl.index)))
            r = render(pl.patient, seed_sequence(seed, 2, pl.index, spec.index), view=spec.view, target=spec.target,
                       device=device)
            ax.imshow(r.image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{cls}  |  " + _label(pl, spec), fontsize=7.5, loc="left")
    fig.suptitle("thyrofast synthetic thyroid ultrasound (paper preset, seed %d): rows BTN / NMTN / MMTN" % seed,
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    make_contact_sheet(sys.argv[1] if len(sys.argv) > 1 else "synth_contact_sheet.png")
