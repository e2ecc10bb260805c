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


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for each import in ``path`` (functions' too)."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # from . import cli
    return out


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
