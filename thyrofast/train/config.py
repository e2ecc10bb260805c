"""The training configuration (:class:`TrainConfig`) and the settings shared by training and pretraining."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ..io.schema import CROP_MODES, file_read_options
from .augment import AugmentConfig

__all__ = ["TrainConfig", "DEFAULTS", "config_to_dict", "default_width", "resolve_device", "merged_fields"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained model (saved in the bundle)."""

    # Defaults sized for a 2-core CPU (measured on the `paper` phantom cohort:
    # ~25-35 s per epoch with one thread on a shared machine); on a GPU use a
    # wider network and larger images (--width 1 --image-size 224).
    arch: str = "resnet18"
    width: float = 0.25
    in_channels: int = 1
    image_size: int = 128
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    patience: int = 8
    val_fraction: float = 0.15
    class_weighting: str = "balanced"   # or "none"
    label_smoothing: float = 0.0
    seed: int = 0
    ghost_batches: int = 1
    augment: AugmentConfig = AugmentConfig()
    preprocess: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # overrides
    pretrained: str | None = None
    aux_weight: float = 1.0             # weight of the auxiliary finding heads (0: class head only)
    aggregation: str = "pooled_logistic"  # image -> patient rule fitted after training, or "mean_log_prob"
    crop: str = "detect"                # thyrofast.read crop: DICOM tissue region, else the detected field
    mask_annotations: bool = False      # thyrofast.read(mask_annotations=...): fill burned-in calipers/text
    backbone_lr_scale: float = 1.0      # backbone learning rate / head learning rate (< 1 keeps pretrained features)

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.epochs == 0 and not self.pretrained:
            raise ValueError("epochs=0 keeps a pretrained network as it is: it needs a pretrained checkpoint "
                             "(--pretrained FILE)")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch, got {self.patience}")
        if self.class_weighting not in ("balanced", "none"):
            raise ValueError(f"class_weighting must be 'balanced' or 'none', got {self.class_weighting!r}")
        if self.ghost_batches < 1 or self.batch_size % self.ghost_batches:
            raise ValueError("ghost_batches must divide batch_size")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}, got {self.crop!r}")
        if not isinstance(self.mask_annotations, bool):
            raise ValueError(f"mask_annotations must be True or False, got {self.mask_annotations!r}")
        if self.aggregation not in ("pooled_logistic", "mean_log_prob"):
            raise ValueError(f"aggregation must be 'pooled_logistic' or 'mean_log_prob', got {self.aggregation!r}")
        if not 0.0 <= self.backbone_lr_scale <= 1.0:
            raise ValueError(f"backbone_lr_scale must be in [0, 1], got {self.backbone_lr_scale}")
        if not (self.aux_weight >= 0 and math.isfinite(self.aux_weight)):
            raise ValueError(f"aux_weight must be a finite number >= 0, got {self.aux_weight}")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @property
    def read_options(self) -> dict:
        """How every training and validation file is read (:func:`thyrofast.io.schema.file_read_options`:
        ``crop`` and ``mask_annotations``); the bundle's card records them, so every later step reads
        files the same way."""
        return file_read_options({"crop": self.crop, "mask_annotations": self.mask_annotations})

    @property
    def card_read(self) -> dict:
        """:attr:`read_options` as the card's ``read`` field: ``mask_annotations`` only when set
        (a card without it reads unmasked, as cards before the option do)."""
        return {k: v for k, v in self.read_options.items() if k != "mask_annotations" or v}


def config_to_dict(cfg) -> dict:
    """A training/pretraining config as plain JSON-able values."""
    d = dataclasses.asdict(cfg)
    d["augment"] = cfg.augment.to_dict()
    d["preprocess"] = dict(cfg.preprocess)
    return d


DEFAULTS = TrainConfig()


def default_width(arch: str) -> float:
    """The width multiplier used when none is given: the CPU-sized one for resnets."""
    return DEFAULTS.width if arch in ("resnet18", "resnet34", "resnet50") else 1.0


def resolve_device(device: str) -> str:
    """"cpu" / "cuda" from "cpu" | "cuda" | "auto"; refuses "cuda" without a GPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is available to torch")
    return device


def merged_fields(base, overrides: Mapping[str, Any], *, what: str, aliases: Mapping[str, str] = {},
                  coerce: Mapping[str, Any] = {}) -> dict:
    """The fields of the config ``base`` (a dataclass instance) with those in ``overrides`` replaced,
    as a dict for the config's constructor (which validates them).

    ``aliases`` maps a keyword's name to its field (``augment_config`` -> ``augment``); ``coerce``
    a field to the function that converts a given value (``int``, ``float``, ...).  TypeError names
    every keyword that is neither a field nor an alias (as Python does for an unknown keyword)."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    unknown = sorted(k for k in overrides if aliases.get(k, k) not in fields)
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                        + ", ".join(repr(k) for k in unknown))
    for k, v in overrides.items():
        name = aliases.get(k, k)
        fields[name] = coerce[name](v) if name in coerce else v
    return fields
