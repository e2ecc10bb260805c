"""Structure of the package (issue 23): no import cycle anywhere in thyrofast/, and no module
imports another module's ``_private`` names.

Both are checked on the source with ``ast`` (every import, inside functions too; imports under
``if TYPE_CHECKING:`` excepted, they never run).  Importing a private *module* of the package
(``from . import _core``, ``from .._fs import atomic_write_text``) is fine: a leading underscore on a
module says "not for users", while one on a name inside a module says "not for other modules".
"""
from __future__ import annotations

import ast

from test_layering import PKG, _graph, _imports_of, _module_name, cycles_of

_MODULES = {_module_name(p) for p in PKG.rglob("*.py")}
# compiled extensions: thyrofast/_core.cpython-311-x86_64-linux-gnu.so is thyrofast._core
_MODULES |= {_module_name(p.with_name(p.name.split(".")[0] + ".py")) for p in PKG.rglob("*.so")}


def _is_module(name: str) -> bool:
    return name in _MODULES


def _private_imports(source: str, path, module: str) -> list[str]:
    tree = ast.parse(source)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        (_, mod), *names = _imports_of(node, path, module)
        if not mod.startswith("thyrofast"):
            continue  # third-party privates (pydicom's) are the third party's business
        for (line, full), alias in zip(names, node.names):
            name = alias.name
            if name.startswith("_") and not name.startswith("__") and not _is_module(full):
                bad.append(f"{module}:{line} imports {name} from {mod}")
    return bad


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        bad += _private_imports(path.read_text(encoding="utf-8"), path, _module_name(path))
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_private_name_check_can_fail(tmp_path):
    src = ("from .cohort import _ss, seed_sequence\nfrom .. import _core\nfrom .._fs import atomic_write_text\n"
           "from pydicom.filereader import _read_file_meta_info\n")
    path = tmp_path / "x.py"
    got = _private_imports(src, path, "thyrofast.synth.x")
    assert got == ["thyrofast.synth.x:1 imports _ss from thyrofast.synth.cohort"]


def test_no_import_cycle_inside_thyrofast():
    graph = _graph("thyrofast")
    assert len(graph) > 50
    # a package's __init__ re-exports its submodules (lazily or not); an edge *into* a package
    # __init__ from its own submodule would be a cycle and is not excluded
    packages = {m for m in graph if (PKG.parent / m.replace(".", "/") / "__init__.py").is_file()}
    graph = {m: {d for d in deps if not (m in packages and d.startswith(m + "."))} for m, deps in graph.items()}
    cycles = cycles_of(graph)
    assert not cycles, "import cycles in thyrofast: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail():
    assert cycles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
