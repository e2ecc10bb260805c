"""The core's tests under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds thyrofast._core with -fsanitize=address,undefined (CMake, CUDA off)
into a temporary package next to copies of the Python sources, then runs the
core's test files in a subprocess with libasan preloaded
(PYTHONMALLOC=malloc, ASAN_OPTIONS=detect_leaks=0; any report is fatal).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                 reason="needs cmake and g++")]

CORE_TESTS = ["preprocessing/test_preprocess_inputs.py", "preprocessing/test_preprocess_properties.py",
              "preprocessing/test_preprocess_reference.py", "preprocessing/test_preprocess_resize_cv2.py",
              # strided gather of the area pass; sizes at and past the frame limits
              "test_hardening_core.py::test_layout_does_not_change_a_bit",
              "test_hardening_core.py::test_layout_does_not_change_a_bit_with_roi_and_float16",
              "test_hardening_core.py::test_frames_beyond_the_size_limits_are_refused_before_any_work",
              "test_hardening_core.py::test_the_limits_apply_to_the_roi_crop",
              "test_hardening_core.py::test_frames_at_the_size_limits_are_resized_exactly"]


def _preload() -> str:
    """libasan first; libstdc++ too, since python itself does not link it and
    ASan's __cxa_throw interceptor must find the real one at start-up."""
    libs = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not path or not pathlib.Path(path).exists():
            pytest.skip(f"{name} is not installed")
        libs.append(path)
    return " ".join(libs)


def _build_module(tmp_path, *cmake_args: str) -> pathlib.Path:
    """Build _core with extra CMake options into tmp_path/site/thyrofast beside the Python sources."""
    import pybind11

    build = tmp_path / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), *gen, "-DTHYROFAST_PYTHON=ON", "-DTHYROFAST_CUDA=OFF",
         *cmake_args, f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
        capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(build), "--target", "_core"], capture_output=True, text=True,
                         env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"})
    assert bld.returncode == 0, bld.stdout + bld.stderr
    pkg = tmp_path / "site" / "thyrofast"
    shutil.copytree(REPO / "thyrofast", pkg, ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    for so in build.glob("_core*.so"):
        shutil.copy2(so, pkg)
    return tmp_path / "site"


def test_debug_build_threads_without_gil_assertions(tmp_path):
    """A Debug build with pybind11's GIL-held assertions on every refcount change
    runs the 8-thread test: the GIL is released only around pure C++ work."""
    site = _build_module(tmp_path, "-DCMAKE_BUILD_TYPE=Debug", "-DTHYROFAST_GIL_CHECKS=ON")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}",
         "-c", str(REPO / "pyproject.toml"), str(REPO / "tests" / "test_hardening_core.py") + "::"
         "test_threads_are_bit_identical_to_serial"],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
    check = subprocess.run([sys.executable, "-c", "import thyrofast._core as c; print(c.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(site) in check.stdout


def test_core_tests_are_clean_under_asan_ubsan(tmp_path):
    preload = _preload()
    _build_module(tmp_path, "-DTHYROFAST_SANITIZE=address,undefined", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    env = {**os.environ, "LD_PRELOAD": preload, "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
           "PYTHONPATH": str(tmp_path / "site")}
    tests = [str(REPO / "tests" / t) for t in CORE_TESTS]
    run = subprocess.run(
        # the largest reference sizes add minutes under ASan and no new code paths
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k",
         "not torch and not 1024x1280 and not 600x800",
         f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml"), *tests],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    report = run.stdout[-4000:] + run.stderr[-4000:]
    assert "ERROR: AddressSanitizer" not in report and "runtime error:" not in report, report
    assert run.returncode == 0, report
    assert " passed" in run.stdout
    # the sanitized module really was the one under test
    check = subprocess.run([sys.executable, "-c", "import thyrofast._core as c; print(c.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(tmp_path / "site") in check.stdout, check.stdout + check.stderr
