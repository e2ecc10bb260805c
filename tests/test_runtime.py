"""thyrofast::runtime (issue 26): the whole classifier in C++, checked against Python.

Builds the runtime, its C++ test program and the C example with CMake (OpenVINO from the
``openvino`` wheel), writes the data the C++ test compares against -- 200 phantom frames and
what Python's ``thyrofast.Classifier`` (OpenVINO FP32, the Python engine) makes of them, a
card with an operating point and a fitted pooled-logistic rule, and tampered bundles with the
code Python's loader refuses them with -- then runs ctest on it (tests/cpp/test_runtime.cpp,
examples/cpp/classify_cine.c), again under ASan/UBSan, and installs + links the example with
``find_package(thyrofast COMPONENTS runtime)``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.slow,  # a CMake build of the runtime (~1.5 min on 2 cores) before the first test
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None, reason="needs cmake and g++"),
]
ov = pytest.importorskip("openvino")

N_FRAMES = 200


def _run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def _build(build, *args, target=None):
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    _run(["cmake", "-S", REPO, "-B", build, *gen, "-DTHYROFAST_BUILD_TESTS=ON", "-DTHYROFAST_CUDA=OFF",
          "-DTHYROFAST_RUNTIME=ON", "-DTHYROFAST_PYTHON=OFF", f"-DPython_EXECUTABLE={sys.executable}", *args], env=env)
    _run(["cmake", "--build", build, *(["--target", target] if target else [])], env=env)
    return build


# ------------------------------------------------------------------ the data
def _tamper(src, dst, how):
    """A copy of bundle ``src`` at ``dst`` changed one way (``how``)."""
    shutil.copytree(src, dst)
    card_path = dst / "thyrofast.json"
    card = json.loads(card_path.read_text())
    art = card["artifacts"]
    if how == "weights_flipped":  # same size, other bytes: the SHA-256 check
        f = dst / art["weights"]["path"]
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0xFF
        f.write_bytes(bytes(b))
    elif how == "onnx_truncated":
        f = dst / art["onnx_fp32"]["path"]
        f.write_bytes(f.read_bytes()[:-100])
    elif how == "int8_missing":
        (dst / art["onnx_int8_cpu"]["path"]).unlink()
    elif how == "onnx_external_data":  # hashes updated: only the external-data check can refuse it
        import hashlib

        import onnx

        f = dst / art["onnx_fp32"]["path"]
        m = onnx.load_model_from_string(f.read_bytes())
        t = m.graph.initializer[0]
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "weights.bin"
        data = m.SerializeToString()
        f.write_bytes(data)
        art["onnx_fp32"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    elif how == "temperature_tiny":
        card["temperature"] = 1e-320
    elif how == "unsafe_path":
        art["weights"]["path"] = "../weights.safetensors"
    elif how == "format_version_2":
        card["format_version"] = 2
    elif how == "classes_duplicate":
        card["classes"] = ["BTN", "btn", "MMTN"]
    elif how == "preprocess_unknown_key":
        card["preprocess"]["sharpen"] = True
    elif how == "op_bad_positive":
        card["operating_point"] = {"positive": "XYZ", "threshold": 0.5, "rule": "youden"}
    elif how == "too_deep":
        deep = 0
        for _ in range(70):
            deep = [deep]
        card["training"] = {"deep": deep}
    if how == "duplicate_key":
        text = json.dumps(card, indent=1)
        text = text.replace('"temperature":', '"temperature": 2.0, "temperature":', 1)
        card_path.write_text(text)
    elif how not in ("weights_flipped", "onnx_truncated", "int8_missing"):
        card_path.write_text(json.dumps(card, indent=1))
    return dst


TAMPERINGS = ("weights_flipped", "onnx_truncated", "int8_missing", "onnx_external_data", "temperature_tiny",
              "unsafe_path", "format_version_2", "classes_duplicate", "preprocess_unknown_key", "op_bad_positive",
              "too_deep", "duplicate_key")


def _python_classifier(bundle):
    import thyrofast

    return thyrofast.Classifier.load(bundle, backend="openvino", precision="fp32", runtime=False)


def _op_bundle(src, dst):
    """The fixture bundle with an operating point and a (made-up, seeded) pooled-logistic rule."""
    from thyrofast.bundle import Bundle

    shutil.copytree(src, dst)
    rng = np.random.default_rng(26)
    k = 3
    spec = {"method": "pooled_logistic", "coef": rng.normal(0, 0.5, (k, 5 * k)).tolist(),
            "intercept": rng.normal(0, 0.2, k).tolist(), "mean": rng.normal(-1, 0.3, 5 * k).tolist(),
            "scale": rng.uniform(0.5, 2.0, 5 * k).tolist()}
    Bundle.load(dst).update(aggregation=spec, operating_point={"positive": "MMTN", "threshold": 0.3, "rule": "youden"})
    return dst


@pytest.fixture(scope="module")
def runtime_data(bundle_dir, tmp_path_factory):
    from thyrofast.aggregation import aggregate
    from thyrofast.bundle import Bundle
    from thyrofast.errors import InputError
    from thyrofast.operating_point import decide

    import _bundle_fixture

    d = tmp_path_factory.mktemp("runtime_data")
    frames, _, _ = _bundle_fixture.phantom(N_FRAMES, seed=26)
    frames = np.ascontiguousarray(frames)
    n, h, w = frames.shape
    op_dir = _op_bundle(bundle_dir, d / "bundle_op")
    ids = [i % 4 for i in range(n)]
    for suffix, bundle in (("", bundle_dir), ("_op", op_dir)):
        with _python_classifier(bundle) as clf:
            p = np.asarray(clf.predict(frames))
            b = Bundle.load(bundle)
            dec = [clf.classes.index(c) for c in decide(p, clf.classes, b.operating_point)]
            pat = aggregate(p, ids, b.aggregation)
        p.astype("<f8").tofile(d / f"probs{suffix}.f64")
        np.asarray(dec, "<i4").tofile(d / f"decisions{suffix}.i32")
        np.array([pat[g][0] for g in range(4)], "<f8").tofile(d / f"patient{suffix}.f64")
        (d / f"bundle{suffix}.txt").write_text(str(bundle))
    (d / "meta.txt").write_text(f"{n} {h} {w} {p.shape[1]}\n")
    frames.tofile(d / "frames.u8")
    lines = []
    for how in TAMPERINGS:
        t = _tamper(bundle_dir, d / f"tampered_{how}", how)
        with pytest.raises(InputError) as exc:
            Bundle.load(t)
        lines.append(f"{t}\t{exc.value.code}")
    (d / "tampered.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def runtime_build(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("runtime_build") / "b")


# ------------------------------------------------------------------ the tests
def test_cpp_runtime_matches_python_under_ctest(runtime_build, runtime_data):
    """ctest: the C++ test (200 frames within 1e-5 of Python, same decisions, tampered bundles refused
    with Python's code, 8 threads == serial, bounded stream) and the C example, on Python's data."""
    env = {**os.environ, "THYROFAST_RUNTIME_TEST_DATA": str(runtime_data), "THYROFAST_QUIET": "1"}
    out = _run(["ctest", "--test-dir", runtime_build, "--output-on-failure", "-V"], env=env)
    assert "100% tests passed" in out
    assert "PASSED (0 failures)" in out and "Skipped" not in out.split("tests passed")[-1]
    assert out.count("refused with 'unreadable' (Python: 'unreadable')") == len(TAMPERINGS)
    diff = float(re.search(r"max \|dp\| vs Python \(batches of 32\): (\S+)", out).group(1))
    assert diff <= 1e-5
    assert re.search(r"classified \d+  dropped \d+", out)  # the example ran to its statistics


def test_cpp_runtime_test_without_data_is_skipped_not_passed(runtime_build):
    env = {k: v for k, v in os.environ.items() if k != "THYROFAST_RUNTIME_TEST_DATA"}
    res = subprocess.run([str(runtime_build / "thyrofast_runtime_test")], capture_output=True, text=True, env=env)
    assert res.returncode == 77, res.stdout + res.stderr
    assert "ok: sha256('abc')" in res.stdout


def test_example_links_no_libpython_and_installs(runtime_build, runtime_data, tmp_path):
    """The example links only thyrofast::runtime (ldd: no libpython); installed, it is found with
    find_package(thyrofast COMPONENTS runtime) and runs on a cine."""
    ldd = _run(["ldd", runtime_build / "classify_cine"])
    assert "libthyrofast_runtime" in ldd and "libpython" not in ldd
    prefix, consumer = tmp_path / "prefix", tmp_path / "consumer"
    _run(["cmake", "--install", runtime_build, "--prefix", prefix])
    assert (prefix / "include" / "thyrofast" / "thyrofast.h").exists()
    assert (prefix / "include" / "thyrofast" / "runtime.hpp").exists()
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", REPO / "examples" / "cpp", "-B", consumer, *gen, f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run(["cmake", "--build", consumer])
    assert "libpython" not in _run(["ldd", consumer / "classify_cine"])
    meta = (runtime_data / "meta.txt").read_text().split()
    out = _run([consumer / "classify_cine", (runtime_data / "bundle.txt").read_text(), runtime_data / "frames.u8",
                meta[0], meta[1], meta[2], "0"], env={**os.environ, "THYROFAST_QUIET": "1"})
    assert re.search(rf"frames {meta[0]}  classified \d+  dropped \d+", out)


def test_example_refuses_a_tampered_bundle_with_exit_2(runtime_build, runtime_data):
    meta = (runtime_data / "meta.txt").read_text().split()
    t = runtime_data / "tampered_weights_flipped"
    res = subprocess.run([str(runtime_build / "classify_cine"), str(t), str(runtime_data / "frames.u8"), *meta[:3]],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "[unreadable]" in res.stderr and "SHA-256" in res.stderr


def test_cpp_runtime_clean_under_asan_ubsan(runtime_data, tmp_path):
    """The whole C++ runtime test under AddressSanitizer (leaks included) + UndefinedBehaviorSanitizer: any
    report fails it.  (OpenVINO's own libraries are not instrumented; their calls into ours are.)"""
    build = _build(tmp_path / "asan", "-DTHYROFAST_SANITIZE=address,undefined", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                   target="thyrofast_runtime_test")
    env = {**os.environ, "THYROFAST_RUNTIME_TEST_DATA": str(runtime_data),
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    res = subprocess.run([str(build / "thyrofast_runtime_test")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    assert "PASSED (0 failures)" in res.stdout
    assert "runtime error" not in res.stderr and "AddressSanitizer" not in res.stderr
