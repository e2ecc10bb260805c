"""thyrofast/_core.pyi describes the compiled module: the same public names, classes and members.

The stub is written by hand from csrc/python/bindings.cpp; a binding added or removed
there without the stub (or the reverse) fails here.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import thyrofast
from thyrofast import _core

STUB = Path(thyrofast.__file__).resolve().parent / "_core.pyi"


def _public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def _stub_names(body) -> set[str]:
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return _public(names)


def _stub_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in _stub_tree().body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")}


def test_stub_and_module_export_the_same_names():
    module = _public(dir(_core))
    stub = _stub_names(_stub_tree().body)
    assert stub - module == set(), "in _core.pyi but not exported by the built module"
    assert module - stub == set(), "exported by the built module but missing from _core.pyi"


@pytest.mark.parametrize("name", sorted(_stub_classes()))
def test_stub_class_members_match(name):
    runtime = getattr(_core, name)
    assert inspect.isclass(runtime)
    stub = _stub_names(_stub_classes()[name].body)
    # pybind11's own helpers (e.g. _pybind11_conduit_v1_) are private and left out
    module = _public(dir(runtime)) - _public(dir(RuntimeError) if issubclass(runtime, BaseException) else ())
    assert stub == module


def test_stub_functions_match_signatures():
    """Parameter names of every function as the bindings declare them (py::arg)."""
    for node in _stub_tree().body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        args = node.args
        stub_params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        doc = getattr(_core, node.name).__doc__.splitlines()[0]
        # pybind11's signature line: name(p1: T, p2: T = default, ...) -> R
        inner = doc[len(node.name) + 1 : doc.rindex(") ->")]
        depth, cur, params = 0, "", []
        for ch in inner:
            if ch in "[(":
                depth += 1
            elif ch in "])":
                depth -= 1
            if ch == "," and depth == 0:
                params.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            params.append(cur)
        assert stub_params == [p.split(":")[0].strip() for p in params], node.name
