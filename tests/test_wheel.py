"""The portable wheel (slow): ``pip wheel .`` (THYROFAST_NATIVE off, the
default; THYROFAST_CUDA=OFF to keep it quick), repaired by ``auditwheel`` for
the manylinux tag this glibc allows, installed into a fresh venv with no
compiler on PATH, smoke-tested (tests/_wheel_smoke.py) natively and, where
``qemu-x86_64`` exists (Debian: qemu-user), on an emulated Nehalem (SSE4.2,
no AVX), where it must run the baseline variant and refuse a forced avx2.

The venv gets thyrofast from the wheel only; its dependencies come from this
environment (a .pth line after the venv's own site-packages), so the test
needs no index.  About 3-5 minutes on the 2-core CI machine (the build),
plus ~1-2 minutes under qemu.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                       reason="the manylinux x86-64 wheel"),
]


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd[:3]}...: {r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    pytest.importorskip("auditwheel")
    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, THYROFAST_CUDA="OFF")
    env.pop("THYROFAST_NATIVE", None)
    _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(tmp / "raw")], env=env,
         cwd=tmp, timeout=1800)
    raw = next((tmp / "raw").glob("thyrofast-*.whl"))
    # libopenvino stays outside: thyrofast._runtime loads the openvino wheel's own copy (RUNPATH)
    _run([sys.executable, "-m", "auditwheel", "repair", str(raw), "--exclude", "libopenvino.so.*",
          "-w", str(tmp / "fixed")], cwd=tmp, timeout=600)
    wheel = next((tmp / "fixed").glob("thyrofast-*manylinux*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = pathlib.Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)], timeout=600)
    # the dependencies (numpy, onnxruntime, ...) from this environment, after the wheel's thyrofast
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return {"wheel": wheel, "python": py, "bin": env_dir / "bin"}


def _smoke(wheel_venv, cwd, bundle=None, prefix=(), variant=None):
    env = {"PATH": str(wheel_venv["bin"]), "HOME": str(cwd)}  # no cc / c++ on PATH
    if variant:
        env["THYROFAST_CPU_VARIANT"] = variant
    cmd = [*prefix, str(wheel_venv["python"]), str(TESTS / "_wheel_smoke.py")] + ([str(bundle)] if bundle else [])
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)


def _check(r, venv_bin):
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["thyrofast_file"].startswith(str(venv_bin.parent)), out["thyrofast_file"]
    assert not out["cc_on_path"]
    for denoise, err in out["max_err"].items():
        assert err <= 1e-4, (denoise, err)
    return out


def test_wheel_is_manylinux_and_runs_without_a_compiler(wheel_venv, bundle_dir, tmp_path):
    assert "manylinux" in wheel_venv["wheel"].name
    out = _check(_smoke(wheel_venv, tmp_path, bundle_dir), wheel_venv["bin"])
    assert out["cpu_variant"] in {"baseline", "avx2"}
    assert out["prediction"]["backend"] == "onnxruntime"


def test_wheel_on_an_old_cpu_under_qemu(wheel_venv, bundle_dir, tmp_path):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 not found (Debian: apt-get install qemu-user)")
    prefix = (qemu, "-cpu", "Nehalem")
    out = _check(_smoke(wheel_venv, tmp_path, bundle_dir, prefix), wheel_venv["bin"])
    assert out["cpu_variant"] == "baseline" and out["cpu_variants_runnable"] == "baseline"
    assert out["prediction"]["backend"] == "onnxruntime"
    r = _smoke(wheel_venv, tmp_path, None, prefix, variant="avx2")
    assert r.returncode != 0 and "THYROFAST_CPU_VARIANT=avx2 needs x86-64-v3" in r.stderr


def test_wheel_ships_the_type_information(wheel_venv):
    """py.typed and the stubs of the compiled modules (tests/test_package_data.py checks the
    build configuration that puts them there, without building)."""
    import zipfile

    names = set(zipfile.ZipFile(wheel_venv["wheel"]).namelist())
    for rel in ("thyrofast/py.typed", "thyrofast/_core.pyi", "thyrofast/_runtime.pyi",
                "thyrofast/preprocessing/__init__.py", "thyrofast/preprocessing/device.py"):
        assert rel in names, rel
