"""Precise BatchNorm statistics (Wu & Johnson 2021), recomputed after each epoch."""
from __future__ import annotations

__all__ = ["bn_layers", "precise_bn"]


def bn_layers(model) -> list:
    """The BatchNorm layers of ``model``."""
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def precise_bn(model, frames, dev, seed: int, n: int = 512, batch: int = 64) -> None:
    """Recompute BatchNorm running statistics with the current weights.

    The exponential running averages lag behind fast-changing weights (few
    steps, high learning rate), which can wreck eval-mode predictions on small
    data; averaging the batch statistics of up to ``n`` un-augmented training
    frames fixes that (Wu & Johnson 2021, "precise BN").
    """
    import torch

    bns = bn_layers(model)
    if not bns or len(frames) == 0:
        return
    g = torch.Generator().manual_seed(int(seed) + 12345)
    idx = torch.randperm(len(frames), generator=g)[:n]
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            x = frames[idx[i:i + batch]].to(dev, dtype=torch.float32)
            if len(x) > 1:
                model(x)
    for m, mom in zip(bns, moms):
        m.momentum = mom
    model.train(was_training)
