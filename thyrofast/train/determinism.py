"""Deterministic CPU training: ``torch.use_deterministic_algorithms`` for the span of a run."""
from __future__ import annotations

import contextlib

__all__ = ["deterministic"]


@contextlib.contextmanager
def deterministic(enabled: bool):
    """Deterministic torch kernels on (``enabled``) or off inside the block; the previous setting after it."""
    import torch

    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)
