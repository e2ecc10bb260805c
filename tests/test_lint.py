"""ruff (configured in pyproject.toml) passes on the package, tests, benchmarks and tools."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401  (the wheel ships the binary; `python -m ruff` runs it)
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def test_ruff_check():
    cmd = _ruff()
    if cmd is None:
        pytest.skip("ruff is not installed (pip install ruff, or the test extra)")
    paths = [p for p in ("thyrofast", "tests", "bench", "tools") if (REPO / p).is_dir()]
    proc = subprocess.run(cmd + ["check", "--no-cache", *paths], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
