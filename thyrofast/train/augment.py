"""Ultrasound augmentation on preprocessed tensors (batched, deterministic).

Geometric: small rotation, isotropic scale and translation (one affine resample,
reflection padding) and horizontal flip -- a probe can be tilted and moved, and
left/right is arbitrary in a transverse view; no vertical flip (depth runs down).
Photometric: gain (multiplicative) and contrast around the image mean -- the
knobs an operator turns.  No colour jitter: B-mode is gray.

Each sample's random parameters come from a table drawn once per epoch from
``(seed, epoch)`` and indexed by the sample's dataset index, so a sample is
augmented identically whichever process (DDP rank) or batch it lands in.
"""
from __future__ import annotations

import dataclasses
import math

__all__ = ["AugmentConfig", "epoch_table", "augment"]

N_PARAMS = 6  # angle, scale, tx, ty, flip, gain/contrast


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    scale: float = 0.10          # scale in [1 - s, 1 + s]
    translate: float = 0.06      # fraction of the image size
    hflip: float = 0.5           # probability
    gain: float = 0.15           # multiplicative gain in [1 - g, 1 + g]
    contrast: float = 0.15       # contrast factor in [1 - c, 1 + c]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def epoch_table(n: int, seed: int, epoch: int):
    """(n, 7) uniform [0, 1) draws for epoch ``epoch`` (same on every rank)."""
    import torch

    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63))
    return torch.rand(n, N_PARAMS + 1, generator=g, dtype=torch.float64).float()


def augment(x, u, cfg: AugmentConfig):
    """Augment batch ``x`` (N, C, H, W) float with uniform draws ``u`` (N, 7) under ``cfg``.

    ``cfg`` has no default: the training loop once silently used the default
    instead of the configuration it recorded."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    if n == 0:
        return x
    u = u.to(device=x.device, dtype=torch.float32)
    angle = (u[:, 0] * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = 1 + (u[:, 1] * 2 - 1) * cfg.scale
    tx = (u[:, 2] * 2 - 1) * cfg.translate * 2  # affine_grid coordinates span [-1, 1]
    ty = (u[:, 3] * 2 - 1) * cfg.translate * 2
    flip = torch.where(u[:, 4] < cfg.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gain = 1 + (u[:, 5] * 2 - 1) * cfg.gain
    contrast = 1 + (u[:, 6] * 2 - 1) * cfg.contrast
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast.view(n, 1, 1, 1) + mean) * gain.view(n, 1, 1, 1)
