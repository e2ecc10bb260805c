"""Layering of the package: the library never imports the command line.

CLI modules (``thyrofast/cli.py``, ``*_cli.py``, ``<package>/cli.py``) may
import the library; nothing else may import a CLI module, so the library can be
used (and tested) without argparse front ends, and the CLI stays a thin layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import thyrofast

PKG = Path(thyrofast.__file__).resolve().parent


def _is_cli(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "cli" or last.endswith("_cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(node, path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of one import node; ``from . import cli`` names ``<pkg>.cli``."""
    if isinstance(node, ast.Import):
        return [(node.lineno, a.name) for a in node.names]
    is_pkg = path.name == "__init__.py"
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_pkg else 0)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [(node.lineno, mod)] + [(node.lineno, f"{mod}.{a.name}") for a in node.names]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for each import in ``path`` (functions' too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [x for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for x in _imports_of(node, path, module)]


def test_library_never_imports_the_cli():
    bad = []
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        module = _module_name(path)
        if _is_cli(module):
            continue
        for line, imported in _imports(path, module):
            if imported.startswith("thyrofast") and any(_is_cli(p) for p in imported.split(".")[1:]):
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {imported}")
    assert not bad, "library modules import the CLI:\n" + "\n".join(bad)


def test_the_scan_resolves_relative_imports(tmp_path):
    # the checker itself: relative imports of CLI modules, inside functions too, are caught
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from ..export_cli import main\n\nfrom . import cli\n")
    got = {m for _, m in _imports(src, "thyrofast.demo.x")}
    assert {"thyrofast.export_cli", "thyrofast.demo.cli"} <= got
    init = tmp_path / "__init__.py"
    init.write_text("from .cli import main\n")
    assert "thyrofast.demo.cli" in {m for _, m in _imports(init, "thyrofast.demo")}


def _graph(package: str) -> dict[str, set[str]]:
    """Import graph among ``package``'s modules: every import, in functions too, except ``TYPE_CHECKING`` ones."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        if not module.startswith(package):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for _, imported in _imports_of(node, path, module):
                if imported in files and imported != module and imported.startswith(package):
                    deps.add(imported)
        graph[module] = deps
    return graph


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` meets, each as ``[a, b, ..., a]``."""
    cycles, done = [], set()

    def visit(node, trail):
        for dep in sorted(graph.get(node, ())):
            if dep in trail:
                cycles.append(trail[trail.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, trail + [dep])
        done.add(node)

    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    return cycles


def test_no_import_cycle_inside_thyrofast_io():
    graph = _graph("thyrofast.io")
    assert "thyrofast.io.manifest" in graph and "thyrofast.io.splits" in graph
    # the package __init__ imports its submodules lazily (on attribute access); submodules never import it
    cycles = [c for c in cycles_of(graph) if "thyrofast.io" not in c]
    assert not cycles, "import cycles in thyrofast.io: " + "; ".join(" -> ".join(c) for c in cycles)
