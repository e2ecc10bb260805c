"""Bounded coverage-guided fuzzing (atheris) of preprocess and the readers.

CI runs each target for FUZZ_SECONDS (default 30) on a seed corpus of real
files; docs/reliability.md records longer runs.  A finding makes atheris exit
non-zero and print the crashing input.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("atheris")
pytestmark = pytest.mark.slow
SECONDS = int(os.environ.get("FUZZ_SECONDS", "30"))


def _seed_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    try:
        from pydicom.data import get_testdata_file

        for name in ("US1_UNCR.dcm", "OBXXXX1A.dcm", "examples_palette.dcm", "ExplVR_BigEnd.dcm"):
            p = get_testdata_file(name)
            if p:
                with open(p, "rb") as f:
                    data = f.read()[:20000]
                (corpus / name).write_bytes(bytes([0]) + data)  # first byte picks the .dcm extension
    except ImportError:
        pass
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(buf, format="PNG")
    (corpus / "gray.png").write_bytes(bytes([1]) + buf.getvalue())
    return corpus


@pytest.mark.parametrize("target", ["fuzz_preprocess.py", "fuzz_readers.py"])
def test_fuzz_target_finds_nothing(target, tmp_path):
    args = [sys.executable, str(REPO / "tests" / "fuzz" / target), f"-max_total_time={SECONDS}",
            "-rss_limit_mb=4096", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"]
    if target == "fuzz_readers.py":
        args.append(str(_seed_corpus(tmp_path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    res = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=SECONDS + 300)
    log = res.stdout[-3000:] + res.stderr[-3000:]
    assert res.returncode == 0, log
    assert "stat::number_of_executed_units" in log, log
    shutil.rmtree(tmp_path / "corpus", ignore_errors=True)
