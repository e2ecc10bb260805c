"""``predict`` against hostile inputs and outputs (issue 22, "Hardening II").

Anything that could hang runs in a child process with a timeout, so a
regression fails the test instead of blocking the suite.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thyrofast.errors import InputError
from thyrofast.predict import OutputError, predict_files, sha256_file

# Children import the thyrofast under test (the installed one in CI, where the
# source tree has no compiled core) and run outside the repository, whose
# thyrofast/ would otherwise shadow it ("python -m" and scripts put their
# folder or the cwd first on sys.path).
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and Path(p).resolve() != Path.cwd())}


def _under_test_first(env: dict) -> dict:
    import thyrofast

    src = str(Path(thyrofast.__file__).resolve().parents[1])
    return {**env, "PYTHONPATH": os.pathsep.join([src, env.get("PYTHONPATH", "")])}


_ENV = _under_test_first(_ENV)
_HANG_S = 60  # generous on a shared, loaded machine; a hang never ends

# A stand-in classifier (no model to load): mean brightness -> probabilities.
# With GATE set, predict() waits until that file exists, holding the run open.
_FAKE = textwrap.dedent("""
    import os, sys, time, numpy as np
    from thyrofast.predict import predict_files
    class Fake:
        classes = ("BTN", "NMTN", "MMTN")
        provenance = {"thyrofast": "t", "bundle_sha256": "0", "backend": "fake", "precision": "fp32",
                      "device": "cpu"}
        def predict(self, frames):
            gate = os.environ.get("GATE")
            if gate:
                open(gate + ".waiting", "w").close()
                while not os.path.exists(gate):
                    time.sleep(0.02)
            return np.full((len(frames), 3), 1 / 3)
    s = predict_files(Fake(), sys.argv[2:], sys.argv[1], batch_frames=1, progress=False)
    print(s.n_ok, s.n_error)
""")


class _Fake:
    classes = ("BTN", "NMTN", "MMTN")
    provenance = {"thyrofast": "t", "bundle_sha256": "0", "backend": "fake", "precision": "fp32", "device": "cpu"}

    def predict(self, frames):
        return np.full((len(frames), 3), 1 / 3)


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)
    return path


def _run(cmd: list[str], timeout: float = _HANG_S, **kw) -> subprocess.CompletedProcess:
    try:
        kw.setdefault("cwd", tempfile.gettempdir())
        return subprocess.run(cmd, env=kw.pop("env", _ENV), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        pytest.fail(f"{' '.join(cmd[:4])} ... hung for {timeout} s")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- 2. inputs that never end or block: only regular files are opened -----------------------


def test_fifo_and_dev_zero_inputs_become_error_records_not_a_hang(tmp_path):
    good = _png(tmp_path / "in" / "a_good.png")
    os.mkfifo(tmp_path / "in" / "b_pipe.png")  # inside a folder
    os.mkfifo(tmp_path / "in" / "c_pipe_no_ext")  # looked at for a DICOM preamble: must not block either
    os.mkfifo(tmp_path / "direct.png")  # given directly
    os.symlink("/dev/zero", tmp_path / "zero.png")  # endless behind a symlink
    out = tmp_path / "r.jsonl"
    script = tmp_path / "fake.py"
    script.write_text(_FAKE)
    res = _run([sys.executable, str(script), str(out), str(tmp_path / "in"), str(tmp_path / "direct.png"),
                str(tmp_path / "zero.png")])
    assert res.returncode == 0, res.stderr
    recs = {Path(r["input"]).name: r for r in _records(out)}
    assert recs[good.name]["status"] == "ok"
    for name, kind in (("b_pipe.png", "FIFO"), ("direct.png", "FIFO"), ("zero.png", "character device")):
        assert recs[name]["status"] == "error" and recs[name]["error"]["code"] == "unreadable", recs[name]
        assert kind in recs[name]["error"]["message"]
    assert "c_pipe_no_ext" not in recs and len(recs) == 4


def test_cli_predict_on_a_fifo_does_not_hang(bundle_dir, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    out = tmp_path / "r.jsonl"
    res = _run([sys.executable, "-m", "thyrofast.cli", "predict", str(bundle_dir), str(fifo), "--out", str(out),
                "--backend", "onnxruntime", "--threads", "1", "--no-progress"], timeout=180)
    assert res.returncode == 1, res.stderr  # an input failed, the run completed
    (rec,) = _records(out)
    assert rec["status"] == "error" and "FIFO" in rec["error"]["message"]


def test_hashing_applies_reads_size_limit(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"\x89PNG" + bytes(60))
    with pytest.raises(InputError) as e:
        sha256_file(f, max_bytes=32)
    assert e.value.code == "too_large"
    assert len(sha256_file(f, max_bytes=64)) == 64


def test_oversized_input_is_refused_before_it_is_hashed(tmp_path):
    from thyrofast.io.reader import DEFAULT_MAX_BYTES

    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # sparse: no disk, but stat says 1 GiB + 1
        f.truncate(DEFAULT_MAX_BYTES + 1)
    out = tmp_path / "r.jsonl"
    t0 = time.perf_counter()
    s = predict_files(_Fake(), [big], out, progress=False)
    assert s.error_codes == {"too_large": 1}
    (rec,) = _records(out)
    assert rec["sha256"] is None  # not read at all
    assert time.perf_counter() - t0 < 5


# -- 3. an --out that is not ours is refused untouched ------------------------------------


_FOREIGN = {
    "notes.txt": b"first line\nsecond line without newline",
    "table.csv": b"patient,label\nP1,BTN\nP2,MMT",
    "photo.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4 + b"\n\xff\xd9",
    "other.jsonl": b'{"id": 1}\n{"id": 2}',
    "partial.jsonl": b'{"kind": "image", "status": "ok"}\nhello',
}


@pytest.mark.parametrize("name", sorted(_FOREIGN))
def test_out_that_is_not_a_results_file_is_refused_untouched(tmp_path, name):
    _png(tmp_path / "in" / "a.png")
    out = tmp_path / name
    out.write_bytes(_FOREIGN[name])
    before = os.stat(out)
    with pytest.raises(OutputError, match="refusing to touch"):
        predict_files(_Fake(), [tmp_path / "in"], out, progress=False)
    assert out.read_bytes() == _FOREIGN[name]
    assert os.stat(out).st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])  # no lock file left


def test_cli_refuses_a_foreign_out_in_one_line_and_saliency_on_a_file(bundle_dir, tmp_path, capsys):
    from thyrofast.cli import main

    _png(tmp_path / "in" / "a.png")
    out = tmp_path / "notes.txt"
    out.write_bytes(_FOREIGN["notes.txt"])
    base = ["predict", str(bundle_dir), str(tmp_path / "in"), "--backend", "onnxruntime", "--threads", "1",
            "--no-progress"]
    assert main(base + ["--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "refusing to touch" in err[1] and "Traceback" not in err[1]  # line 1: "model ..."
    assert out.read_bytes() == _FOREIGN["notes.txt"]
    # 5. --saliency naming a file: the message names the saliency folder, and nothing is left behind
    sal = tmp_path / "sal.png"
    sal.write_bytes(b"x")
    res = tmp_path / "r.jsonl"
    assert main(base + ["--out", str(res), "--saliency", str(sal)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert "saliency folder" in err[-1] and str(res) not in err[-1]
    assert not res.exists() and not Path(str(res) + ".lock").exists() and sal.read_bytes() == b"x"


def test_out_that_is_a_fifo_is_refused(tmp_path):
    _png(tmp_path / "in" / "a.png")
    os.mkfifo(tmp_path / "r.jsonl")
    script = tmp_path / "fake.py"
    script.write_text(_FAKE)
    res = _run([sys.executable, str(script), str(tmp_path / "r.jsonl"), str(tmp_path / "in")])
    assert res.returncode != 0 and "not a regular file" in res.stderr


def test_our_own_partial_last_line_is_still_recovered(tmp_path):
    """The refusal must not break crash recovery: a cut record of ours is dropped."""
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "in" / "b.png", 7)
    out = tmp_path / "r.jsonl"
    predict_files(_Fake(), [tmp_path / "in"], out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + lines[1][:9])  # killed mid-append (9 bytes: '{"kind": ')
    s = predict_files(_Fake(), [tmp_path / "in"], out, progress=False)
    assert s.n_ok == 1 and s.n_skipped == 1 and len(_records(out)) == 2


# -- 4. one writer per results file ---------------------------------------------------------


def test_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path):
    for i in range(3):
        _png(tmp_path / "in" / f"{i}.png", 10 * i)
    out = tmp_path / "r.jsonl"
    gate = tmp_path / "gate"
    script = tmp_path / "fake.py"
    script.write_text(_FAKE)
    first = subprocess.Popen([sys.executable, str(script), str(out), str(tmp_path / "in")],
                             env={**_ENV, "GATE": str(gate)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + _HANG_S
        while not Path(str(gate) + ".waiting").exists():  # the first run is inside predict, out is open
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started predicting"
            time.sleep(0.05)
        before = out.read_bytes()
        with pytest.raises(OutputError, match="being written by another thyrofast run"):
            predict_files(_Fake(), [tmp_path / "in"], out, progress=False)
        assert out.read_bytes() == before
        gate.touch()
        stdout, stderr = first.communicate(timeout=_HANG_S)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert stdout.split() == ["3", "0"]
    recs = _records(out)
    assert len(recs) == 3 and len({r["sha256"] for r in recs}) == 3
    assert not Path(str(out) + ".lock").exists()  # released and removed
    # once the first run is done, the next run on the file resumes normally
    s = predict_files(_Fake(), [tmp_path / "in"], out, progress=False)
    assert s.n_skipped == 3


def test_the_lock_follows_symlinks_to_the_results_file(tmp_path):
    from thyrofast.predict import RecordWriter

    _png(tmp_path / "in" / "a.png")
    real = tmp_path / "r.jsonl"
    (tmp_path / "alias.jsonl").symlink_to(real)
    with RecordWriter(real):  # a run holds the file ...
        with pytest.raises(OutputError, match="being written by another"):  # ... under another name too
            predict_files(_Fake(), [tmp_path / "in"], tmp_path / "alias.jsonl", progress=False)
    assert real.read_bytes() == b"" and not (tmp_path / "r.jsonl.lock").exists()


# -- 5. --saliency naming a file ----------------------------------------------------------------


def test_saliency_dir_that_is_a_file_is_named_and_nothing_is_left(tmp_path):
    _png(tmp_path / "in" / "a.png")
    sal = tmp_path / "overlays"
    sal.write_text("not a folder")
    out = tmp_path / "r.jsonl"
    with pytest.raises(OutputError) as e:
        predict_files(_Fake(), [tmp_path / "in"], out, saliency_dir=sal, progress=False)
    assert "saliency folder" in str(e.value) and str(sal) in str(e.value)
    assert not out.exists() and sal.read_text() == "not a folder"


def test_region_fallback_is_recorded_in_the_prediction(tmp_path):
    # A DICOM ultrasound region of (0,0,0,0) is replaced by the detected field
    # (io.read); the prediction record says so, so a reader of results.jsonl
    # can tell which images were not cropped by their own DICOM region.
    import _dicom_bombs as bombs

    bad = tmp_path / "zero_region.dcm"
    bad.write_bytes(bombs.zero_region())
    png = _png(tmp_path / "plain.png")
    out = tmp_path / "r.jsonl"
    predict_files(_Fake(), [str(bad), str(png)], str(out), batch_frames=4, progress=False)
    recs = {Path(r["input"]).name: r for r in _records(out) if r["kind"] == "image"}
    rec = recs["zero_region.dcm"]
    assert rec["status"] == "ok" and rec["region_source"] == "detected"
    assert any(n.startswith("region fallback:") for n in rec["notes"])
    assert recs["plain.png"].get("region_source") != "dicom"
