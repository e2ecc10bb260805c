"""The C++ core without Python: build with CMake, run the test program under
ctest, install, and link an outside project against the installed package."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_cpp_core_builds_runs_and_installs(tmp_path):
    build, prefix, consumer = tmp_path / "build", tmp_path / "prefix", tmp_path / "consumer"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    _run(["cmake", "-S", REPO, "-B", build, *gen, "-DTHYROFAST_BUILD_TESTS=ON", "-DTHYROFAST_CUDA=OFF",
          f"-DCMAKE_INSTALL_PREFIX={prefix}"], env=env)
    _run(["cmake", "--build", build], env=env)
    out = _run(["ctest", "--test-dir", build, "--output-on-failure"], env=env)
    assert "100% tests passed" in out
    _run(["cmake", "--install", build], env=env)
    assert (prefix / "include" / "thyrofast" / "preprocess.h").exists()
    assert (prefix / "include" / "thyrofast" / "version.h").exists()
    assert not (prefix / "include" / "thyrofast" / "version.h.in").exists()
    _run(["cmake", "-S", REPO / "tests" / "cpp" / "consumer", "-B", consumer, *gen,
          f"-DCMAKE_PREFIX_PATH={prefix}"], env=env)
    _run(["cmake", "--build", consumer], env=env)
    out = _run([consumer / "consumer"])
    assert "PASSED (0 failures)" in out


@pytest.mark.parametrize("mode,ok,message", [
    ("ON", False, "THYROFAST_CUDA=ON but no CUDA compiler"),
    ("AUTO", True, "building without CUDA"),
    ("OFF", True, None),
    ("MAYBE", False, "must be AUTO, ON or OFF"),
])
def test_cuda_option_without_nvcc(tmp_path, mode, ok, message):
    """THYROFAST_CUDA with no usable nvcc: ON fails clearly, AUTO falls back, OFF never looks."""
    env = {**os.environ, "CUDACXX": str(tmp_path / "no-such-nvcc")}
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    res = subprocess.run(["cmake", "-S", REPO, "-B", tmp_path / "b", *gen, f"-DTHYROFAST_CUDA={mode}"],
                         capture_output=True, text=True, env=env)
    assert (res.returncode == 0) == ok, res.stdout + res.stderr
    if message:
        assert message in res.stdout + res.stderr
