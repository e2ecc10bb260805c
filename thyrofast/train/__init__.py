"""Training: ``train(data, out, ...) -> Bundle`` (see :mod:`thyrofast.train.loop`).

Importing this package is cheap; torch is imported when training starts.
"""
from __future__ import annotations

__all__ = ["train", "TrainConfig", "DEFAULTS"]


def __getattr__(name: str):
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'thyrofast.train' has no attribute {name!r}")
