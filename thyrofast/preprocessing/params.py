"""Spec v1's parameters: :class:`PreprocessParams` (validated once, serializable) and
the limits and checks they share with the rest of thyrofast (``check_threads``).

Each value is checked here, in Python, with an error that names it; the core
checks the frames against them again (``csrc/include/thyrofast/preprocess.h``).
``csrc/runtime/card.cpp`` repeats these checks for a bundle card: keep the two in step.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

from .. import _core

__all__ = ["PreprocessParams", "check_threads", "MAX_ROI", "MAX_THREADS", "OUTPUT_DTYPES"]

_DENOISE = {"none": _core.Denoise.none, "median3": _core.Denoise.median3,
            "median5": _core.Denoise.median5, "srad": _core.Denoise.srad}
_NORMALIZE = {"percentile": _core.Normalize.percentile, "minmax": _core.Normalize.minmax,
              "zscore": _core.Normalize.zscore, "none": _core.Normalize.none}
_ORDER = {"rgb": _core.ChannelOrder.rgb, "bgr": _core.ChannelOrder.bgr}
_OUT = {"float32": _core.OutputType.float32, "float16": _core.OutputType.float16}
#: The NumPy dtype of each output dtype name.
OUTPUT_DTYPES = {"float32": np.float32, "float16": np.float16}


def _choice(name: str, value: Any, options: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value


def _number(name: str, value: Any, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if integer:
        if isinstance(value, (float, np.floating)) and not float(value).is_integer():
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return int(value)
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


#: Largest roi coordinate / extent (frames are far smaller; the core works in int64).
MAX_ROI = (1 << 31) - 1
#: Largest thread count (the core's and the engines' thread arguments are C ints).
MAX_THREADS = 4096
#: Largest finite value of each output dtype.
_OUT_MAX = {"float32": float(np.finfo(np.float32).max), "float16": float(np.finfo(np.float16).max)}


def check_threads(threads: Any, name: str = "threads") -> int | None:
    """``threads`` as an int in [1, MAX_THREADS] (None stays None); TypeError/ValueError naming it."""
    if threads is None:
        return None
    threads = _number(name, threads, integer=True)
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"{name} must be an integer in [1, {MAX_THREADS}], got {threads}")
    return threads


def _pair(name: str, value: Any, what: str) -> tuple:
    """A 2- or 4-sequence parameter as a tuple; TypeError naming it for a scalar or a string."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return tuple(value)


def _output_bound(p: "PreprocessParams") -> float:
    """Largest |z| step 5 of the spec can produce before ``(z - mean) / std``.

    percentile / minmax: z in [0, 1].  zscore (population std) over n pixels:
    |z| <= sqrt(n - 1).  none: y = pixel / max_value, at most 65535 / max_value
    (1 with the default max_value), which SRAD (log of J = exp(y) clamped to 88)
    and medians do not exceed.
    """
    if p.normalize in ("percentile", "minmax"):
        return 1.0
    if p.normalize == "zscore":
        return float(np.sqrt(p.size[0] * p.size[1]))
    y_max = 1.0 if p.max_value is None else 65535.0 / p.max_value
    return max(1.0, min(y_max, 88.0) if p.denoise == "srad" else y_max)


@dataclasses.dataclass(frozen=True)
class PreprocessParams:
    """The serializable preprocessing parameters (what a model bundle stores)."""

    roi: tuple[int, int, int, int] | None = None  # (x, y, w, h)
    channel_order: str = "rgb"
    max_value: float | None = None  # None: 255 (uint8) / 65535 (uint16)
    size: tuple[int, int] = (224, 224)  # (out_h, out_w)
    denoise: str = "srad"
    srad_iterations: int = 10
    srad_lambda: float = 0.5
    srad_rho: float = 1.0 / 6.0
    normalize: str = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    mean: float = 0.0
    std: float = 1.0
    channels: int = 1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.roi is not None:
            roi = _pair("roi", self.roi, "(x, y, w, h) or None")
            if len(roi) != 4:
                raise ValueError(f"roi must be (x, y, w, h), got {self.roi!r}")
            roi = tuple(_number("roi", v, integer=True) for v in roi)
            x, y, w, h = roi
            if x < 0 or y < 0:
                raise ValueError(f"roi {roi} does not lie inside any frame: x and y must be >= 0")
            if w < 1 or h < 1:
                raise ValueError(f"roi width and height must be >= 1, got {roi}")
            if max(x + w, y + h) > MAX_ROI:
                raise ValueError(f"roi {roi} reaches beyond {MAX_ROI} pixels: x + w and y + h must be "
                                 f"at most {MAX_ROI}")
            set_("roi", roi)
        _choice("channel_order", self.channel_order, _ORDER)
        if self.max_value is not None:
            mv = _number("max_value", self.max_value)
            if not 1e-3 <= mv <= 1e12:
                raise ValueError(f"max_value must be > 0 and within [0.001, 1e12] (pixel / max_value must "
                                 f"stay a finite float32), got {self.max_value!r}")
            set_("max_value", mv)
        if isinstance(self.size, (int, float, np.integer, np.floating)) and not isinstance(self.size, bool):
            size = (self.size, self.size)  # one number: a square output
        else:
            size = _pair("size", self.size, "(out_h, out_w) or one integer (square)")
        if len(size) != 2:
            raise ValueError(f"size must be (out_h, out_w), got {self.size!r}")
        size = tuple(_number("size", v, integer=True) for v in size)
        if not all(1 <= v <= 4096 for v in size):
            raise ValueError(f"size must be between 1 and 4096 per side, got {size}")
        set_("size", size)
        _choice("denoise", self.denoise, _DENOISE)
        set_("srad_iterations", _number("srad_iterations", self.srad_iterations, integer=True))
        if not 0 <= self.srad_iterations <= 1000:
            raise ValueError(f"srad_iterations must be in [0, 1000], got {self.srad_iterations}")
        set_("srad_lambda", _number("srad_lambda", self.srad_lambda))
        if not 0 < self.srad_lambda <= 1:
            raise ValueError(f"srad_lambda must lie in (0, 1], got {self.srad_lambda}")
        set_("srad_rho", _number("srad_rho", self.srad_rho))
        if not 0 <= self.srad_rho <= 1e3:
            raise ValueError(f"srad_rho must be in [0, 1000], got {self.srad_rho}")
        _choice("normalize", self.normalize, _NORMALIZE)
        percentiles = _pair("percentiles", self.percentiles, "(lo, hi)")
        if len(percentiles) != 2:
            raise ValueError(f"percentiles must be (lo, hi), got {self.percentiles!r}")
        lo, hi = (_number("percentiles", v) for v in percentiles)
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got ({lo}, {hi})")
        set_("percentiles", (lo, hi))
        set_("mean", _number("mean", self.mean))
        set_("std", _number("std", self.std))
        if self.std <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        for name in ("mean", "std"):  # the core computes in float32
            if abs(getattr(self, name)) > _OUT_MAX["float32"]:
                raise ValueError(f"{name} must be a finite float32 (|{name}| <= 3.4e38), got {getattr(self, name)!r}")
        set_("channels", _number("channels", self.channels, integer=True))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        _choice("dtype", self.dtype, _OUT)
        # (z - mean) / std must be finite in the output dtype for every frame.
        bound = (_output_bound(self) + abs(self.mean)) / self.std
        if not bound <= _OUT_MAX[self.dtype]:
            raise ValueError(
                f"mean={self.mean!r} and std={self.std!r} can give outputs of magnitude {bound:.3g} "
                f"({self.normalize} normalization gives |z| <= {_output_bound(self):.3g}), beyond the largest "
                f"finite {self.dtype} ({_OUT_MAX[self.dtype]:.6g}): they would come out as inf")

    # -- serialization ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["roi"] = list(self.roi) if self.roi is not None else None
        d["size"] = list(self.size)
        d["percentiles"] = list(self.percentiles)
        d["spec"] = 1
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessParams":
        if not isinstance(d, Mapping):
            raise TypeError(f"preprocessing parameters must be a mapping (dict), got {type(d).__name__}")
        d = dict(d)
        spec = d.pop("spec", 1)
        if spec != 1:
            raise ValueError(f"unsupported preprocessing spec version {spec!r} (this thyrofast implements 1)")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {sorted(unknown)}")
        for k in ("roi", "size", "percentiles"):
            if isinstance(d.get(k), list):  # JSON lists; anything else is checked (and named) by __post_init__
                d[k] = tuple(d[k])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "PreprocessParams":
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> "PreprocessParams":
        return dataclasses.replace(self, **changes)

    def core_params(self) -> "_core.Params":
        p = _core.Params()
        if self.roi is not None:
            p.has_roi = True
            p.roi_x, p.roi_y, p.roi_w, p.roi_h = self.roi
        p.channel_order = _ORDER[self.channel_order]
        p.max_value = 0.0 if self.max_value is None else self.max_value
        p.out_h, p.out_w = self.size
        p.denoise = _DENOISE[self.denoise]
        p.srad_iterations = self.srad_iterations
        p.srad_lambda = self.srad_lambda
        p.srad_rho = self.srad_rho
        p.normalize = _NORMALIZE[self.normalize]
        p.percentile_lo, p.percentile_hi = self.percentiles
        p.mean = self.mean
        p.std = self.std
        p.channels = self.channels
        p.out_type = _OUT[self.dtype]
        return p
