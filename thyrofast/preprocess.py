"""``thyrofast.preprocess`` is both the function and a namespace.

Calling it runs :func:`thyrofast.preprocessing.preprocess`; its attributes are
the preprocessing API, so ``thyrofast.preprocess(frames, size=(224, 224))`` and
``from thyrofast.preprocess import PreprocessParams`` both work (importing a
submodule named like the function would otherwise shadow the function).
"""
from __future__ import annotations

import sys
import types

from .preprocessing import PreprocessParams, Preprocessor, build_info, preprocess as _preprocess

__all__ = ["PreprocessParams", "Preprocessor", "build_info"]


class _CallableModule(types.ModuleType):
    def __call__(self, frames, **kwargs):
        return _preprocess(frames, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
