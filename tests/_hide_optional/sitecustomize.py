"""Make optional packages look uninstalled in this process and its children.

Put this folder first on PYTHONPATH; ``THYROFAST_HIDE`` names the top-level
modules to hide (comma-separated; default: every optional one, the base
install's view).  Python's own finders are wrapped so a hidden module is not
found at all: ``import torch`` raises ``ModuleNotFoundError: No module named
'torch'`` and ``importlib.util.find_spec("torch")`` returns ``None``, exactly
as on a machine without it (a finder that raised instead would not look like
a missing package to ``find_spec``).  Used by tests/test_optional_deps.py.
"""
import os
import sys

DEFAULT = "torch,torchvision,cv2,openvino,cupy,tensorrt,gdcm,pylibjpeg,openjpeg,rle,onnxscript,highdicom"
HIDDEN = frozenset(m for m in os.environ.get("THYROFAST_HIDE", DEFAULT).split(",") if m)


class _HidingFinder:
    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self._inner.find_spec(name, path, target)

    def invalidate_caches(self):
        fn = getattr(self._inner, "invalidate_caches", None)
        if fn is not None:
            fn()

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


sys.meta_path[:] = [_HidingFinder(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
