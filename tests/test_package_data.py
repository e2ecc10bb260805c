"""The wheel carries the type information: ``thyrofast/py.typed`` (PEP 561) and the stubs of the
compiled modules (``_core.pyi``, ``_runtime.pyi``), next to the modules they describe.

Checked without building anything: scikit-build-core copies the whole package directory
named in ``wheel.packages`` (less what ``.gitignore`` and ``wheel.exclude`` leave out) and
CMake installs the compiled modules into the same directory.  ``tests/test_wheel.py``
(slow) checks the built wheel itself.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
TYPE_FILES = ["thyrofast/py.typed", "thyrofast/_core.pyi", "thyrofast/_runtime.pyi"]


def _skbuild() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["scikit-build"]


def test_the_type_files_exist():
    for rel in TYPE_FILES:
        assert (REPO / rel).is_file(), rel
    assert (REPO / "thyrofast/py.typed").read_bytes().strip() == b""  # a marker: a full package, not partial


def test_the_wheel_copies_the_package_directory_with_them():
    sk = _skbuild()
    wheel = sk.get("wheel", {})
    assert wheel.get("packages") == ["thyrofast"], "the wheel must copy the whole thyrofast directory"
    excludes = list(wheel.get("exclude", [])) + list(sk.get("sdist", {}).get("exclude", []))
    for rel in TYPE_FILES:
        hit = [p for p in excludes if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(Path(rel).name, p)]
        assert not hit, f"{rel} is excluded from the wheel by {hit}"


def test_cmake_installs_the_compiled_modules_beside_their_stubs():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"install\(TARGETS _core DESTINATION thyrofast\)", text)
    assert re.search(r"install\(TARGETS _runtime\b[^)]*DESTINATION thyrofast\)", text)


def test_the_type_files_are_tracked_and_not_ignored():
    """scikit-build-core leaves files matching .gitignore out of the wheel, tracked or not (hence
    --no-index); a file git does not track is missing from every clean checkout (CI, releases)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for rel in TYPE_FILES:
        ignored = subprocess.run([git, "check-ignore", "-q", "--no-index", rel], cwd=REPO)
        assert ignored.returncode == 1, f"{rel} is ignored by .gitignore (check-ignore rc {ignored.returncode})"
        tracked = subprocess.run([git, "ls-files", "--error-unmatch", rel], cwd=REPO, capture_output=True)
        assert tracked.returncode == 0, f"{rel} is not tracked by git"
