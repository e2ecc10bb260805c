"""The shape of the package ``thyrofast/preprocessing/`` (issue 23).

Its modules import one direction only (each only those before it in ``ORDER``: no cycle),
never a private (``_name``) name of another module, and ``thyrofast.preprocess`` is a plain
function, not a module.
"""
from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import thyrofast

PKG = Path(thyrofast.__file__).resolve().parent
#: the modules of thyrofast.preprocessing; each may import only those before it
ORDER = ["params", "layout", "device", "preprocessor", "info"]


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> list[tuple[str, str]]:
    """(module, imported name) of every ``from X import Y`` in thyrofast.preprocessing.<name>, functions' too."""
    module = f"thyrofast.preprocessing.{name}"
    tree = ast.parse((PKG / "preprocessing" / f"{name}.py").read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [(_absolute(node, module), a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names]
    return out


def test_the_package_has_exactly_these_modules():
    got = {p.stem for p in (PKG / "preprocessing").glob("*.py")} - {"__init__"}
    assert got == set(ORDER)
    for old in ("preprocess.py", "preprocessing.py", "_cuda_arrays.py"):
        assert not (PKG / old).exists(), old


def test_modules_import_only_earlier_ones():
    bad = []
    for i, name in enumerate(ORDER):
        for mod, item in _imports(name):
            target = f"{mod}.{item}" if mod == "thyrofast.preprocessing" else mod
            if not target.startswith("thyrofast.preprocessing"):
                continue
            sub = target.removeprefix("thyrofast.preprocessing").lstrip(".").split(".")[0]
            if sub not in ORDER[:i]:
                bad.append(f"{name} imports {target}")
    assert not bad, "imports against the order " + " < ".join(ORDER) + ":\n" + "\n".join(bad)


def test_no_private_name_crosses_a_module():
    bad = [f"{name}: from {mod} import {item}" for name in ORDER for mod, item in _imports(name)
           if mod.startswith("thyrofast") and item.startswith("_") and not item.startswith("__") and item != "_core"]
    # _core is the compiled module itself (a private module, imported by name)
    assert not bad, "\n".join(bad)
    users = [p for p in PKG.rglob("*.py") if "preprocessing" not in p.relative_to(PKG).parts]
    for path in users:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "preprocessing" in (node.module or ""):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.relative_to(PKG.parent)} imports {private} from {node.module}"


def test_preprocess_is_a_plain_function_and_the_public_names_stay():
    import thyrofast.preprocessing as pp

    assert inspect.isfunction(thyrofast.preprocess) and not isinstance(thyrofast.preprocess, types.ModuleType)
    assert thyrofast.preprocess is pp.preprocess
    assert thyrofast.Preprocessor is pp.Preprocessor
    assert thyrofast.PreprocessParams is pp.PreprocessParams
    assert thyrofast.build_info is pp.build_info
    for name in ("preprocess", "Preprocessor", "PreprocessParams", "build_info"):
        assert name in thyrofast.__all__


def test_preprocess_cuda_takes_one_device_frames_object():
    """The binding's argument object (no GPU needed: the checks run before any CUDA call)."""
    import pytest

    from thyrofast import _core

    f = _core.DeviceFrames(4096, 1, (2, 8, 9, 3), [-216, 27, 3, 1])
    assert (f.ptr, f.dtype_code, f.shape, f.strides) == (4096, 1, (2, 8, 9, 3), (-216, 27, 3, 1))
    with pytest.raises(TypeError):
        _core.DeviceFrames(4096, 0, (8, 9, 1), (9, 1, 0))  # (N, H, W, C): four of each
    params = _core.Params()
    with pytest.raises(ValueError, match="bad dtype code"):
        _core.preprocess_cuda(_core.DeviceFrames(4096, 2, (1, 8, 8, 1), (64, 8, 1, 0)), params, 4096)
    with pytest.raises(ValueError, match="no frames"):
        _core.preprocess_cuda(_core.DeviceFrames(4096, 0, (0, 8, 8, 1), (64, 8, 1, 0)), params, 4096)
    with pytest.raises(ValueError, match="null"):
        _core.preprocess_cuda(_core.DeviceFrames(0, 0, (1, 8, 8, 1), (64, 8, 1, 0)), params, 4096)
    if not _core.build_info()["cuda"]:
        with pytest.raises(RuntimeError, match="built without CUDA"):
            _core.preprocess_cuda(_core.DeviceFrames(4096, 0, (1, 8, 8, 1), (64, 8, 1, 0)), params, 4096, stream=0)


class _FakeDeviceArray:
    """Only ``__cuda_array_interface__`` (v3) over a host buffer: enough for the Python caller, never read."""

    def __init__(self, a, readonly=False):
        self.a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, readonly),
            "strides": a.strides, "version": 3}


def test_device_caller_hands_the_core_one_device_frames(monkeypatch):
    """What device.run_device passes to _core.preprocess_cuda, checked without a GPU: the
    (N, H, W, C) layout of frames_4d in element strides, the pixel code, the output pointer."""
    import numpy as np

    import thyrofast.preprocessing.preprocessor as pre_mod
    from thyrofast import _core

    calls = []
    monkeypatch.setattr(pre_mod, "require_cuda", lambda: None)
    monkeypatch.setattr(_core, "preprocess_cuda", lambda frames, params, out_ptr, stream=0: calls.append(
        (frames.ptr, frames.dtype_code, frames.shape, frames.strides, params.out_h, out_ptr, stream)))
    frames = np.zeros((2, 10, 12, 3), np.uint16)[:, ::-1, :, :]  # a negative stride
    out = np.zeros((2, 1, 6, 5), np.float32)
    pre = thyrofast.Preprocessor(size=(6, 5))
    got = pre(_FakeDeviceArray(frames), out=_FakeDeviceArray(out), stream=7)
    assert got.a is out
    assert calls == [(frames.ctypes.data, 1, (2, 10, 12, 3), (360, -36, 3, 1), 6, out.ctypes.data, 7)]
    gray = np.zeros((9, 4), np.uint8)
    pre(_FakeDeviceArray(gray), out=_FakeDeviceArray(np.zeros((1, 1, 6, 5), np.float32)))
    assert calls[-1][1:4] == (0, (1, 9, 4, 1), (0, 4, 1, 0)) and calls[-1][-1] == 0
