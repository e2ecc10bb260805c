"""Hardening of batch prediction and of artifact loading (issue "Hardening")."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyrofast.predict import OutputError, predict_files

from _proc import rss_kib
from conftest import REPO

_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    from thyrofast.predict import predict_files
    class Slow:
        classes = ("BTN", "NMTN", "MMTN")
        provenance = {"thyrofast": "t", "bundle_sha256": "0", "backend": "fake", "precision": "fp32",
                      "device": "cpu"}
        def predict(self, frames):
            time.sleep(0.002)
            m = np.array([float(np.mean(f)) for f in frames])
            return np.stack([m, 255 - m, np.full_like(m, 100.0)], 1) / (m + (255 - m) + 100)[:, None]
    predict_files(Slow(), [sys.argv[1]], sys.argv[2], batch_frames=1, progress=False)
""")


class _Fake:
    classes = ("BTN", "NMTN", "MMTN")
    provenance = {"thyrofast": "t", "bundle_sha256": "0", "backend": "fake", "precision": "fp32", "device": "cpu"}

    def predict(self, frames):
        return np.full((len(frames), 3), 1 / 3)


def _inputs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        a = np.full((8, 8), i % 251, np.uint8)
        a[0, :4] = np.frombuffer(i.to_bytes(4, "little"), np.uint8)  # distinct content per file
        Image.fromarray(a).save(folder / f"f{i:04d}.png")


def _records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a partial last line was left behind"
    return [json.loads(line) for line in text.splitlines()]  # every line parses


@pytest.mark.slow
def test_sigkill_20_trials_over_500_inputs(tmp_path):
    """20 trials: start on 500 inputs, SIGKILL at a random point, resume; then
    exactly one complete record per input."""
    src = tmp_path / "in"
    _inputs(src, 500)
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    # how long an uninterrupted run takes here, so kills land inside the work
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "full.jsonl")], env=env, check=True)
    full = time.perf_counter() - t0
    rng = np.random.default_rng(2024)
    interrupted = 0
    for trial in range(20):
        out = tmp_path / f"trial{trial:02d}.jsonl"
        proc = subprocess.Popen([sys.executable, str(script), str(src), str(out)], env=env)
        time.sleep(float(rng.uniform(0.2, 0.95)) * full)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            interrupted += 1
        subprocess.run([sys.executable, str(script), str(src), str(out)], env=env, check=True)
        recs = [r for r in _records(out) if r.get("kind") == "image"]
        assert len(recs) == 500, f"trial {trial}: {len(recs)} image records"
        assert len({r["sha256"] for r in recs}) == 500, f"trial {trial}: duplicated records"
        assert all(r["status"] == "ok" for r in recs)
    assert interrupted >= 10, f"only {interrupted} of 20 runs were interrupted mid-work"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def test_full_disk_gives_a_clear_error_and_no_corrupt_output(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "48k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src = tmp_path / "in"
        _inputs(src, 400)
        out = disk / "results.jsonl"
        with pytest.raises(OutputError, match="(?i)space|disk|full"):
            predict_files(_Fake(), [src], out, progress=False)
        recs = _records(out)
        assert 0 < len(recs) < 400
        # resuming on a disk with room finishes the job without duplicates
        roomy = tmp_path / "roomy.jsonl"
        roomy.write_bytes(out.read_bytes())
        predict_files(_Fake(), [src], roomy, progress=False)
        images = [r for r in _records(roomy) if r.get("kind") == "image"]
        assert len(images) == 400 and len({r["sha256"] for r in images}) == 400
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_no_pickle_in_any_load_path():
    """Nothing in the package may unpickle: no pickle/dill/joblib/torch.load, no allow_pickle=True."""
    bad = re.compile(r"^\s*(import (pickle|dill|cloudpickle|joblib)|from (pickle|dill|cloudpickle|joblib) import)"
                     r"|torch\.load\(|allow_pickle\s*=\s*True|pickle\.loads?\(|\.load_state_dict\(torch", re.M)
    hits = []
    for path in (REPO / "thyrofast").rglob("*.py"):
        for m in bad.finditer(path.read_text()):
            hits.append(f"{path.relative_to(REPO)}: {m.group(0).strip()}")
    assert not hits, hits




@pytest.mark.slow
def test_classifier_predict_does_not_leak(bundle_dir):
    import thyrofast

    clf = thyrofast.Classifier.load(bundle_dir, backend="onnxruntime", device="cpu",
                                    precision="fp32", threads=1)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(96, 96), dtype=np.uint8)
    for _ in range(200):
        clf.predict(frame)
    before = rss_kib()
    for _ in range(2000):
        clf.predict(frame)
    grown = rss_kib() - before
    clf.close()
    assert grown < 5 * 1024, f"RSS grew by {grown} KiB over 2,000 predict calls"
