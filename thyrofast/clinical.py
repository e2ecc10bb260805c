"""The clinical fields of a prediction record: prediction set, refer flag and its reasons.

``predict`` adds them to each record when the bundle carries the calibrations
(:mod:`thyrofast.conformal`, :mod:`thyrofast.ood`); bundles without them give
the records they always gave.  Each set says its level (``set_level``:
``"image"`` for an image record, ``"patient"`` for a patient record).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["clinical_fields"]


def clinical_fields(probs, classes: Sequence[str], conformal: Mapping[str, Any] | None, level: str,
                    ood: Mapping[str, Any] | None = None, n_ood: int = 0) -> dict:
    """``{prediction_set, set_level, alpha, refer, refer_reasons[, ood]}`` for one image or patient.

    ``ood``: the frame's gate result (:meth:`thyrofast.ood.OODGate.check`); ``n_ood``: for a
    patient, how many of its images the gate referred.  Empty without calibrations.
    """
    out: dict = {}
    reasons: list[str] = []
    if conformal:
        from .conformal import prediction_sets

        cal = conformal[level]
        s = prediction_sets(np.asarray(probs, np.float64)[None, :], cal, classes)[0]
        out.update(prediction_set=s, set_level=level, alpha=float(cal["alpha"]))
        if len(s) != 1:
            reasons.append(f"prediction set {{{', '.join(s)}}} at alpha {cal['alpha']:g}: "
                           + ("no class fits" if not s else "the model cannot commit to one class"))
    if ood is not None:
        out["ood"] = dict(ood)
        if ood.get("refer"):
            reasons.append(str(ood.get("reason")))
    if n_ood:
        reasons.append(f"{n_ood} of its images out of distribution")
    if out or reasons:
        out.update(refer=bool(reasons), refer_reasons=reasons)
    return out
