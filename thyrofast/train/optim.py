"""The optimizer's parameter groups and the learning-rate schedule (training and pretraining)."""
from __future__ import annotations

import dataclasses
import math

__all__ = ["lr_at", "param_groups", "Schedule"]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 1% of ``base`` at step ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The learning rate per optimizer step (:func:`lr_at`); each group's rate is this times its ``lr_scale``."""

    base_lr: float
    total_steps: int
    warmup_steps: int

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.base_lr)

    def apply(self, optimizer, step: int) -> None:
        """Set every parameter group's rate for ``step``."""
        for g in optimizer.param_groups:
            g["lr"] = self.lr(step) * g.get("lr_scale", 1.0)


def param_groups(model, weight_decay: float, heads=(), backbone_lr_scale: float = 1.0):
    """AdamW groups: no decay on biases / norms; parameters outside ``heads`` (modules)
    learn at ``backbone_lr_scale`` times the schedule's rate (group key ``lr_scale``)."""
    head_ids = {id(p) for h in heads for p in h.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((p.ndim <= 1, id(p) in head_ids), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if no_decay else weight_decay,
             "lr_scale": 1.0 if is_head else float(backbone_lr_scale)}
            for (no_decay, is_head), ps in sorted(groups.items())]
