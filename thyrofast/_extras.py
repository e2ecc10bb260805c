"""Optional dependencies: which pip extra brings which module, and the one line
a command prints when one is missing (instead of a traceback).

The base install (``pip install thyrofast``) reads images and DICOM, runs the
preprocessing core and predicts/evaluates with ONNX Runtime.  Everything else
comes from an extra (pyproject.toml ``[project.optional-dependencies]``).
"""
from __future__ import annotations

import importlib.util

__all__ = ["MissingExtra", "EXTRAS", "install_hint", "is_optional", "missing", "missing_message", "require",
           "importable"]

#: top-level module -> (extra, what it is)
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("train", "PyTorch"),
    "torchvision": ("train", "torchvision"),
    "onnxscript": ("train", "onnxscript"),
    "openvino": ("openvino", "OpenVINO"),
    "cv2": ("bench", "OpenCV"),
    "gdcm": ("dicom", "python-gdcm"),
    "pylibjpeg": ("dicom", "pylibjpeg"),
    "openjpeg": ("dicom", "pylibjpeg-openjpeg"),
    "rle": ("dicom", "pylibjpeg-rle"),
    "highdicom": ("sr", "highdicom"),
}

#: optional modules no extra installs (they depend on the GPU and its drivers)
NOT_AN_EXTRA: dict[str, tuple[str, str]] = {
    "tensorrt": ("pip install tensorrt (NVIDIA GPUs only)", "TensorRT"),
    "cupy": ("pip install cupy-cuda12x (NVIDIA GPUs only)", "CuPy"),
}


class MissingExtra(ModuleNotFoundError):
    """An optional module a command needs is not installed (``name`` is the module)."""


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a parent package that is missing
        return False


def is_optional(module: str | None) -> bool:
    top = (module or "").partition(".")[0]
    return top in EXTRAS or top in NOT_AN_EXTRA


def install_hint(*modules: str) -> str:
    """``pip install "thyrofast[train]"`` for torch, ``"thyrofast[bench,train]"`` for cv2 and torch, ..."""
    tops = [m.partition(".")[0] for m in modules]
    extras = list(dict.fromkeys(EXTRAS[t][0] for t in tops if t in EXTRAS))
    hints = [f'pip install "thyrofast[{",".join(extras)}]"'] if extras else []
    hints += [NOT_AN_EXTRA[t][0] if t in NOT_AN_EXTRA else f"pip install {t}"
              for t in dict.fromkeys(tops) if t not in EXTRAS]
    return "; ".join(hints)


def missing(*modules: str) -> list[str]:
    """The modules (top-level names) that are not installed, one per extra."""
    out, extras = [], set()
    for m in modules:
        top = m.partition(".")[0]
        extra = EXTRAS.get(top, (top,))[0]
        if extra not in extras and not importable(top):
            extras.add(extra)
            out.append(top)
    return out


def missing_message(*modules: str, needed_for: str | None = None) -> str:
    """One line: what is missing, what needs it, how to install it."""
    tops = list(dict.fromkeys(m.partition(".")[0] for m in modules))
    names = [f"{(EXTRAS.get(t) or NOT_AN_EXTRA.get(t) or ('', t))[1]} ({t})" for t in tops]
    what = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    why = f" for {needed_for}" if needed_for else ""
    verb, it = ("is", "it") if len(tops) == 1 else ("are", "them")
    return f"needs {what}{why}, which {verb} not installed; install {it} with: {install_hint(*tops)}"


def require(*modules: str, needed_for: str | None = None) -> None:
    """Raise :class:`MissingExtra` (with the one-line message) if any of ``modules`` is not installed."""
    absent = missing(*modules)
    if absent:
        raise MissingExtra(missing_message(*absent, needed_for=needed_for), name=absent[0])
