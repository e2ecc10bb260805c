"""Optional packages (issue 21): the base install works, a command that needs an
extra says which one in one line, and a missing benchmark peer is skipped.

The base install is simulated in a subprocess whose PYTHONPATH starts with
tests/_hide_optional: its sitecustomize makes torch, torchvision, cv2,
openvino, cupy, tensorrt, gdcm, pylibjpeg and onnxscript look uninstalled
(THYROFAST_HIDE picks fewer).  tests/_base_install_driver.py runs the API and
the commands there and reports back as JSON.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

import _base_install_driver as driver
import thyrofast

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOOK = HERE / "_hide_optional"

#: commands that need an extra, as the driver runs them in its "base" mode
NEEDS_EXTRA = {("demo", "train"), ("pretrain", "train"), ("train", "train"), ("export", "train"),
               ("predict", "train"), ("predict", "openvino"), ("bench", "train")}


def _env(hide: str | None) -> dict[str, str]:
    env = dict(os.environ)
    path = [str(HOOK)]
    src = Path(thyrofast.__file__).resolve().parents[1]
    if "site-packages" not in src.parts:  # a source checkout: the child imports this same thyrofast
        path.append(str(src))
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.pop("THYROFAST_HIDE", None)
    if hide is not None:
        env["THYROFAST_HIDE"] = hide
    return env


def _drive(mode: str, bundle: Path, work: Path, hide: str | None = None) -> dict:
    r = subprocess.run([sys.executable, str(HERE / "_base_install_driver.py"), mode, str(bundle), str(work)],
                       env=_env(hide), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _command(res: dict, *argv: str) -> dict:
    for c in res["commands"]:
        if c["argv"][:len(argv)] == list(argv):
            return c
    raise AssertionError(f"no command {argv}")


def test_base_install_api_and_commands(bundle_dir, tmp_path):
    res = _drive("base", bundle_dir, tmp_path)
    assert res["visible"] == []  # the hook hides every optional package
    api = res["api"]
    assert api["version"] == thyrofast.__version__
    assert api["preprocess_shape"] == [2, 1, 32, 32]
    assert api["read_png"] == [[120, 160], True]
    assert api["read_dicom"] == [[90, 140], True]  # cropped to the DICOM's tissue region
    if api["read_compressed_dicom"] is not None:  # pydicom-data installed: JPEG lossless needs the dicom extra
        assert api["read_compressed_dicom"]["code"] == "missing_decoder"
        assert 'pip install "thyrofast[dicom]"' in api["read_compressed_dicom"]["message"]
    # the Classifier on ONNX Runtime, the same numbers as with everything installed
    assert api["classifier"]["backend"] == "onnxruntime"
    clf = thyrofast.Classifier.load(bundle_dir, backend="onnxruntime", precision="fp32")
    try:
        np.testing.assert_allclose(api["classifier"]["probs"], clf.predict(driver.frames()), atol=1e-5)
    finally:
        clf.close()

    for c in res["commands"]:
        assert c["traceback"] is None, c
        assert "Traceback" not in c["stderr"], c
    for argv in (["info"], ["preprocess"], ["predict", str(bundle_dir), str(tmp_path / "frame.png"), "--out",
                                              str(tmp_path / "r1.jsonl")]):
        assert _command(res, *argv)["rc"] == 0
    assert "torch no" in _command(res, "info")["stdout"]
    assert (tmp_path / "pre" / "frame.npy").exists() and (tmp_path / "r1.jsonl").exists()
    # the benchmarks measure thyrofast and skip the peers that need an extra, in one line each
    e2e = _command(res, "bench", "e2e")
    assert e2e["rc"] == 0 and "e2e onnxruntime fp32" in e2e["stdout"]
    line = _one_line(e2e["stderr"])
    assert "OpenCV (cv2)" in line and 'pip install "thyrofast[bench,train]"' in line
    infer = _command(res, "bench", "infer", "--bundle")
    assert infer["rc"] == 0 and "infer batch 1: onnxruntime fp32" in infer["stdout"]
    assert 'pip install "thyrofast[train]"' in _one_line(infer["stderr"])
    # every command that needs an extra: exit 2, one line naming it
    needing = [c for c in res["commands"] if c["rc"] not in (0, None)]
    assert len(needing) == 10
    for c in needing:
        assert c["rc"] == 2, c
        line = _one_line(c["stderr"])
        assert line.startswith(f"thyrofast {c['argv'][0]}: "), line
        extras = [e for cmd, e in NEEDS_EXTRA if cmd == c["argv"][0] and f'pip install "thyrofast[{e}]"' in line]
        assert extras, line
    assert not (tmp_path / "demo" / "cohort").exists()  # the demo said so before rendering anything


def test_base_install_demo_is_one_line_not_a_traceback(tmp_path):
    """The real process: ``python -m thyrofast.cli demo`` without torch."""
    r = subprocess.run([sys.executable, "-m", "thyrofast.cli", "demo", str(tmp_path / "demo"), "--quick"],
                       env=_env(None), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert _one_line(r.stderr) == ('thyrofast demo: needs PyTorch (torch) for pretraining and training, which is '
                                   'not installed; install it with: pip install "thyrofast[train]"')
    assert r.stdout == ""


def test_without_the_bench_extra_the_e2e_bench_skips_its_peer(bundle_dir, tmp_path):
    """Everything installed but OpenCV (the README's main command before the bench extra existed)."""
    res = _drive("no-bench", bundle_dir, tmp_path, hide="cv2")
    assert "cv2" not in res["visible"] and "torch" in res["visible"]
    c = _command(res, "bench", "e2e")
    assert c["traceback"] is None and c["rc"] == 0
    assert _one_line(c["stderr"]) == ("bench: peer 'OpenCV preprocessing + torch eager fp32' skipped: needs OpenCV "
                                      "(cv2), which is not installed; install it with: pip install "
                                      '"thyrofast[bench]"')
    assert "e2e onnxruntime int8" in c["stdout"]


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed here")
def test_without_the_openvino_extra_predict_names_it(bundle_dir, tmp_path):
    res = _drive("no-openvino", bundle_dir, tmp_path, hide="openvino")
    c = _command(res, "predict")
    assert c["traceback"] is None and c["rc"] == 2
    assert 'openvino: not installed (pip install "thyrofast[openvino]")' in _one_line(c["stderr"])


# -- in-process: what the demo's bench step calls, with OpenCV missing -------------------------

@pytest.fixture
def no_cv2(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ModuleNotFoundError; find_spec -> None


def test_e2e_bench_without_opencv_measures_thyrofast(no_cv2, bundle_dir, capsys):
    from thyrofast.bench import inference_bench

    (name, res), = inference_bench.run("e2e", device="cpu", rounds=5, bundle=str(bundle_dir))
    assert name == "e2e"
    assert [line for line in res["skipped_peers"] if 'pip install "thyrofast[bench]"' in line]
    ours = [r for r in res["rows"] if r["peer"].startswith("OpenCV")]  # (OpenVINO's own row keeps its target)
    assert ours and all(r["pass"] is None and r["ours"]["median_ms"] > 0 and "skipped" in r["peer"] for r in ours)
    assert "skipped" in capsys.readouterr().err


def test_preprocess_bench_without_opencv_measures_thyrofast(no_cv2, capsys):
    from thyrofast.bench import bench_preprocess_cpu, format_rows

    res = bench_preprocess_cpu(rounds=5, batch=4)
    rows = {r["case"]: r for r in res["rows"]}
    for case in ("area->median5->percentile", "area->srad(10)->percentile"):
        assert rows[case]["pass"] is None and rows[case]["ours"]["median_ms"] > 0 and "skipped" in rows[case]["peer"]
    assert len(res["skipped_peers"]) == 1 and 'pip install "thyrofast[bench]"' in res["skipped_peers"][0]
    assert capsys.readouterr().err.strip() == res["skipped_peers"][0]
    format_rows(res)


# -- the extras themselves ----------------------------------------------------------------------

def test_all_extra_brings_the_bench_peers():
    from thyrofast import _extras

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("opencv-python-headless") for req in extras["bench"])
    (all_,) = extras["all"]
    assert set(all_.split("[")[1].rstrip("]").split(",")) == {"train", "openvino", "dicom", "bench", "sr"}
    for extra, _ in _extras.EXTRAS.values():
        assert extra in extras, extra


def test_every_optional_import_is_mapped_to_an_extra():
    """A module thyrofast imports is the standard library, a base dependency, or listed in _extras."""
    from thyrofast import _extras

    base = {"numpy", "PIL", "pydicom", "tqdm", "scipy", "matplotlib", "safetensors", "onnx", "onnxruntime",
            "google", "thyrofast"}  # google: protobuf
    found: dict[str, str] = {}
    for path in (REPO / "thyrofast").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                found.setdefault(n.partition(".")[0], str(path.relative_to(REPO)))
    unknown = {m: p for m, p in found.items()
               if m not in sys.stdlib_module_names and m not in base and not _extras.is_optional(m)}
    assert unknown == {}
