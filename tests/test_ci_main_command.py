"""CI runs the README's main command in its quick form (.ci/main-command, issue 21)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "main-command"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _quick(readme: Path, out: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(readme), out], capture_output=True, text=True, timeout=60)


def _readme(tmp_path: Path, block: str, marker: str = "<!-- main-command -->") -> Path:
    p = tmp_path / "README.md"
    p.write_text(f"# x\n\nInstall and run:\n\n{marker}\n```bash\n{block}\n```\n\n<!-- test-command -->\n"
                 "```bash\npip install \".[test]\" && pytest\n```\n")
    return p


def test_readme_main_command_has_a_quick_form(tmp_path):
    r = _quick(REPO / "README.md", "/tmp/demo out")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'pip install ".[all]" && thyrofast demo --quick --no-progress /tmp/demo\\ out\n'


def test_multi_line_block_keeps_every_line(tmp_path):
    r = _quick(_readme(tmp_path, 'python -m pip install ".[all]"\nthyrofast demo  '), "o")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'python -m pip install ".[all]"\nthyrofast demo --quick --no-progress o\n'


@pytest.mark.parametrize("block", ['pip install ".[all]" && thyrofast demo --epochs 3',
                                   'pip install ".[all]" && thyrofast demo OUT',
                                   'pip install ".[all]" && thyrofast train data --out b',
                                   'pip install ".[all]"; mythyrofast demo'])
def test_a_changed_main_command_fails_loudly(tmp_path, block):
    r = _quick(_readme(tmp_path, block), "o")
    assert r.returncode == 2 and r.stdout == ""
    assert "must end in `thyrofast demo`" in r.stderr and block.splitlines()[-1] in r.stderr


def test_no_marker_fails_loudly(tmp_path):
    r = _quick(_readme(tmp_path, 'pip install ".[all]" && thyrofast demo', marker=""), "o")
    assert r.returncode == 2 and "no main command found after <!-- main-command -->" in r.stderr


def test_ci_runs_the_quick_form_as_bash_would(tmp_path):
    """The quick form, run the way .ci/run runs it, installs as the README says and passes OUT intact."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    for name in ("pip", "thyrofast"):
        (fake / name).write_text(f'#!/bin/sh\nprintf "%s|" {name} "$@" >> "{log}"\necho >> "{log}"\n')
        (fake / name).chmod(0o755)
    out = str(tmp_path / "demo dir")
    cmd = _quick(REPO / "README.md", out).stdout
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], check=True, env=env, cwd=tmp_path, timeout=60)
    assert log.read_text().splitlines() == ["pip|install|.[all]|", f"thyrofast|demo|--quick|--no-progress|{out}|"]
    ci = (REPO / ".ci" / "run").read_text()
    assert 'main=$(bash .ci/main-command README.md "$demo_dir/demo")' in ci
    assert 'bash -euo pipefail -c "$main"' in ci
