"""Out-of-distribution gate: refer frames that are not what the model was trained on.

A classifier answers with a class for any array it is given: a liver scan, a
colour-Doppler frame, a photograph, a blank screen.  The gate refers such
frames (``refer: true`` with a reason) in two stages:

1. **Pre-gate** (pixels only, no model): blank frames (no contrast), saturated
   frames (half the pixels at the top of the range) and colour frames (at least
   1% strongly coloured pixels: a colour / power Doppler overlay, the rule
   :func:`thyrofast.read` uses for its ``doppler`` flag).
2. **Model score** (the trained network): per-channel mean and standard deviation
   of the activations of the network's stem and first stage (ResNet ``relu`` and
   ``layer1``; the texture statistics that the B-mode speckle of the training
   data fixes), as a
   class-conditional diagonal Mahalanobis distance: ``min_k mean_d ((f_d - mu_kd) /
   sigma_d)^2`` with per-class means ``mu_k`` and the pooled within-class
   standard deviation ``sigma`` of the *training* frames (Lee et al. 2018 use
   class-conditional Gaussians on intermediate features).  The threshold is the
   ``quantile`` (default 0.975: half a 5% false-refer budget) of the training frames' scores, each scored by a
   model of the other folds (5-fold cross-fitting, so the threshold is not
   fitted on scores the statistics have already seen).  Stored in the card's
   ``ood`` entry.

Why not the logits: energy, maximum softmax probability and Mahalanobis on the
logits or on the last pooled features were measured on the test phantom model
and refer 0-40% of photographs and 0-9% of non-thyroid ultrasound at a 1%
training false-refer rate; the early statistics refer most of them
(tests/test_clinical_ood.py reports the numbers).

The model score needs torch (the features come from the bundle's network, not
from an exported engine, which only returns logits).  Without torch the gate
runs the pre-gate only and says so in every record (``ood.model_checked: false``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["pre_gate", "feature_stats", "fit_gate", "gate_scores", "check_ood", "OODGate", "DEFAULT_QUANTILE"]

DEFAULT_QUANTILE = 0.975  # half the 5% in-distribution false-refer budget
SCORE = "class-conditional diagonal Mahalanobis on stem + first-stage channel mean/std"
COLOR_SPREAD = 40 / 255  # a strongly coloured pixel: max - min channel > 40 (of 255)
COLOR_FRACTION = 0.01
BLANK_RANGE = 8 / 255  # a frame whose 1st..99th percentile span is under this share of its range
SATURATED_FRACTION = 0.5


def _full_scale(frame: np.ndarray) -> float:
    return 65535.0 if frame.dtype == np.uint16 else 255.0


def pre_gate(frame: np.ndarray) -> str | None:
    """Why ``frame`` (uint8/uint16, (H, W) or (H, W, 3|4)) is refused before the model, or None."""
    f = np.asarray(frame)
    full = _full_scale(f)
    if f.ndim == 3 and f.shape[-1] >= 3:
        rgb = f[..., :3].astype(np.float32)
        spread = rgb.max(axis=-1) - rgb.min(axis=-1)
        share = float(np.mean(spread > COLOR_SPREAD * full))
        if share >= COLOR_FRACTION:
            return f"colour frame ({100 * share:.1f}% strongly coloured pixels: Doppler / colour overlay)"
        gray = rgb.mean(axis=-1)
    else:
        gray = f[..., 0].astype(np.float32) if f.ndim == 3 else f.astype(np.float32)
    sat = float(np.mean(gray >= 0.98 * full))
    if sat >= SATURATED_FRACTION:
        return f"saturated frame ({100 * sat:.0f}% of pixels at full scale)"
    lo, hi = np.percentile(gray, [1, 99])
    if hi - lo < BLANK_RANGE * full:
        return "blank frame (no contrast)"
    return None


def early_stages(model, layer: str | None = None) -> tuple[list, str]:
    """The modules whose outputs give the statistics, and their names joined by ``+``: ``layer`` (a card's
    ``ood.layer``) or by default the stem's activation and the first stage after it."""
    members = getattr(model, "members", None)
    if members is not None:
        model = members[0]
    if layer is None:
        if hasattr(model, "layer1") and hasattr(model, "relu"):  # ResNets: model.relu is used by the stem only
            layer = "relu+layer1"
        elif getattr(model, "features", None) is not None and len(model.features) > 2:  # EfficientNet / MobileNet
            layer = "features.0+features.2"
        else:
            raise ValueError(f"no first stage known for {type(model).__name__}")
    try:
        return [model.get_submodule(n) for n in layer.split("+")], layer
    except AttributeError:
        raise ValueError(f"the network has no module {layer!r}") from None


def feature_stats(model, x: np.ndarray, batch: int = 64, layer: str | None = None) -> np.ndarray:
    """``(N, D)``: per-channel mean and std of the stem's and the first stage's activations for
    preprocessed ``x`` (N, C, H, W)."""
    import torch

    stages, _ = early_stages(model, layer)
    grabbed: list = []
    hooks = [m.register_forward_hook(lambda m, i, o: grabbed.append(o.detach().float())) for m in stages]
    out = []
    try:
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                grabbed.clear()
                model(torch.as_tensor(np.asarray(x[i:i + batch], dtype=np.float32)))
                parts = []
                for a in grabbed[:len(stages)]:  # in forward order: stem, then stage
                    parts += [a.mean(dim=(2, 3)), a.std(dim=(2, 3))]
                out.append(torch.cat(parts, dim=1).numpy().astype(np.float64))
    finally:
        for h in hooks:
            h.remove()
    return np.concatenate(out) if out else np.zeros((0, 0))


def _fit_stats(f: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    present = [k for k in range(n_classes) if np.any(y == k)]
    mus = np.stack([f[y == k].mean(axis=0) for k in present])
    resid = f - mus[[present.index(k) for k in y]]
    sd = resid.std(axis=0)
    sd = np.maximum(sd, 0.1 * float(np.median(sd)) + 1e-6)  # dead channels must not dominate
    return mus, sd


def _scores(f: np.ndarray, mus: np.ndarray, sd: np.ndarray) -> np.ndarray:
    d = np.stack([np.mean(((f - m) / sd) ** 2, axis=1) for m in mus])
    return d.min(axis=0)


def fit_gate(features: np.ndarray, labels, classes: Sequence[str], *, quantile: float = DEFAULT_QUANTILE,
             folds: int = 5, seed: int = 0, layer: str = "relu+layer1") -> dict:
    """The card's ``ood`` entry from training frames' :func:`feature_stats` and labels."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int).ravel()
    if f.ndim != 2 or len(f) != len(y) or len(y) < 2 * folds:
        raise ValueError(f"need at least {2 * folds} training frames with features, got {len(y)}")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0.5, 1), got {quantile!r}")
    order = np.random.default_rng(seed).permutation(len(y))
    cross = np.empty(len(y))
    for part in np.array_split(order, folds):
        keep = np.ones(len(y), bool)
        keep[part] = False
        cross[part] = _scores(f[part], *_fit_stats(f[keep], y[keep], len(classes)))
    mus, sd = _fit_stats(f, y, len(classes))
    return {"score": SCORE, "layer": layer, "quantile": float(quantile), "threshold": float(np.quantile(cross, quantile)),
            "means": mus.tolist(), "scale": sd.tolist(), "n_train": int(len(y)), "folds": int(folds)}


def gate_scores(features: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    """The model OOD score of each row of :func:`feature_stats` (higher: further from the training frames)."""
    return _scores(np.asarray(features, np.float64), np.asarray(entry["means"], np.float64),
                   np.asarray(entry["scale"], np.float64))


def check_ood(entry: Any, classes: Sequence[str]) -> None:
    """ValueError unless ``entry`` is a valid ``ood`` card entry."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"must be an object, got {type(entry).__name__}")
    if not isinstance(entry.get("layer"), str) or not entry["layer"]:
        raise ValueError(f"layer must name the network's module(s), got {entry.get('layer')!r}")
    t = entry.get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {t!r}")
    try:
        mus = np.asarray(entry.get("means"), dtype=np.float64)
        sd = np.asarray(entry.get("scale"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("means and scale must be numeric arrays") from None
    if mus.ndim != 2 or not 1 <= len(mus) <= len(classes) or sd.shape != (mus.shape[1],):
        raise ValueError(f"means must be (classes, D) and scale (D,), got {mus.shape} and {sd.shape}")
    if not (np.all(np.isfinite(mus)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
        raise ValueError("means and scale must be finite, scale > 0")


class OODGate:
    """The bundle's gate, applied to raw frames: ``gate.check(frames)`` -> one dict per frame."""

    def __init__(self, bundle, entry: Mapping[str, Any] | None):
        self.entry = dict(entry) if entry else None
        self._model = None
        self._pre = None
        self.model_unavailable: str | None = None
        if self.entry is None:
            self.model_unavailable = "the bundle has no OOD calibration"
            return
        try:
            import torch  # noqa: F401
        except ImportError:
            self.model_unavailable = "torch is not installed (pip install thyrofast[train])"
            return
        from .preprocessing import Preprocessor

        self._model = bundle.build_model()
        self._pre = Preprocessor(bundle.preprocess_params.replace(dtype="float32"), threads=1)
        self._shape = tuple(bundle.input_shape)

    @classmethod
    def for_classifier(cls, classifier) -> "OODGate":
        bundle = getattr(classifier, "bundle", None)
        manifest = getattr(bundle, "manifest", None)
        entry = manifest.get("ood") if isinstance(manifest, dict) else None
        return cls(bundle, entry if isinstance(entry, dict) else None)

    def check(self, frames: Sequence[np.ndarray]) -> list[dict]:
        out: list[dict] = []
        todo: list[int] = []
        for i, f in enumerate(frames):
            reason = pre_gate(f)
            out.append({"refer": reason is not None, "reason": reason, "score": None,
                        "threshold": None if self.entry is None else self.entry["threshold"],
                        "model_checked": False})
            if reason is None and self._model is not None:
                todo.append(i)
        if todo:
            x = np.zeros((len(todo), *self._shape), np.float32)
            for j, i in enumerate(todo):
                f = np.asarray(frames[i])
                f = f[..., :3] if f.ndim == 3 and f.shape[-1] == 4 else f
                self._pre(np.ascontiguousarray(f), out=x[j:j + 1])
            feats = feature_stats(self._model, x, layer=self.entry.get("layer"))
            if feats.shape[1] != len(self.entry["scale"]):
                self.model_unavailable = (f"the card's OOD statistics have {len(self.entry['scale'])} features, "
                                          f"the network gives {feats.shape[1]}")
                self._model = None
                todo = []
                scores = []
            else:
                scores = gate_scores(feats, self.entry)
            for i, s in zip(todo, scores):
                far = bool(s > self.entry["threshold"])
                out[i].update(score=float(s), model_checked=True, refer=far,
                              reason=(f"out of distribution: feature score {s:.2f} > {self.entry['threshold']:.2f} "
                                      "(training frames' "
                                      f"{self.entry['quantile']:g} quantile)") if far else None)
        if self.model_unavailable:
            for o in out:
                if not o["model_checked"]:
                    o["model_unavailable"] = self.model_unavailable
        return out
