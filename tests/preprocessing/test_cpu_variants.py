"""Runtime CPU dispatch: the variant is reported, can be forced lower, refuses
what the build or the CPU lacks, and every variant gives the same bits (on a
wider matrix than the golden table: dtypes, colour, layouts, up- and
downscaling, every denoise and normalize mode, float16)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import thyrofast

from _cpu_variants import run_in_variant, runnable_variants
from _reference import speckle_frames

HERE = Path(__file__).resolve().parent  # the child imports this module by name


def test_build_info_reports_the_running_variant():
    info = thyrofast.build_info()
    built = info["cpu_variants_built"].split(",")
    runnable = info["cpu_variants_runnable"].split(",")
    assert set(runnable) <= set(built) <= {"baseline", "avx2", "native"}
    # without THYROFAST_CPU_VARIANT the best one this CPU runs
    if "THYROFAST_CPU_VARIANT" not in os.environ:
        assert info["cpu_variant"] == runnable[-1]


def test_info_cli_names_the_variant(capsys):
    from thyrofast import cli

    assert cli.main(["info"]) == 0
    assert f"CPU code: {thyrofast.build_info()['cpu_variant']}" in capsys.readouterr().out


@pytest.mark.parametrize("variant", runnable_variants())
def test_forced_variant_runs(variant, tmp_path):
    got = run_in_variant(variant, "import json, thyrofast; print(json.dumps(thyrofast.build_info()))", tmp_path)
    assert got["cpu_variant"] == variant


def _run_cli(tmp_path, value):
    env = dict(os.environ, THYROFAST_CPU_VARIANT=value)
    return subprocess.run([sys.executable, "-m", "thyrofast.cli", "info"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_unknown_variant_is_refused_with_one_line(tmp_path):
    r = _run_cli(tmp_path, "avx9000")
    assert r.returncode == 2
    assert "THYROFAST_CPU_VARIANT=avx9000 is not a variant of this build" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_variant_the_cpu_lacks_is_refused(tmp_path):
    """Only where the build holds a variant this CPU cannot run (e.g. avx2 on
    a pre-Haswell CPU, or under qemu; tests/test_wheel_qemu.py checks it there)."""
    built = thyrofast.build_info()["cpu_variants_built"].split(",")
    missing = [v for v in built if v not in runnable_variants()]
    if not missing:
        pytest.skip("this CPU runs every variant of this build")
    r = _run_cli(tmp_path, missing[-1])
    assert r.returncode == 2 and "which this CPU lacks" in r.stderr


_CHILD = """
import hashlib, json
import numpy as np
import thyrofast
from _reference import speckle_frames
import test_cpu_variants as t
print(json.dumps(t.matrix_hashes()))
"""


def matrix_hashes() -> dict:
    rng = np.random.default_rng
    inputs = {
        "u16": speckle_frames(rng(11), 2, 60, 300, dtype=np.uint16),
        "u8": speckle_frames(rng(12), 2, 67, 301, dtype=np.uint8),
        "rgb8": speckle_frames(rng(13), 2, 45, 70, color=True, dtype=np.uint8),
        "rgb16": speckle_frames(rng(14), 1, 33, 41, color=True, dtype=np.uint16),
    }
    inputs["u8flip"] = inputs["u8"][:, ::-1, ::-1]
    modes = [("none", 0, "percentile", "float32"), ("median3", 0, "minmax", "float32"),
             ("median5", 0, "percentile", "float16"), ("srad", 1, "zscore", "float32"),
             ("srad", 3, "percentile", "float32"), ("srad", 2, "none", "float16")]
    out = {}
    for name, frames in inputs.items():
        for size in [(11, 13), (31, 37), (90, 330), (20, 700)]:  # down and up, vector tails of every length
            for denoise, it, norm, dt in modes:
                kw = dict(size=size, denoise=denoise, normalize=norm, dtype=dt, threads=1)
                if denoise == "srad":
                    kw["srad_iterations"] = it
                r = thyrofast.preprocess(frames, **kw)
                out[repr((name, size, denoise, it, norm, dt))] = hashlib.sha256(r.tobytes()).hexdigest()
    return out


@pytest.mark.skipif(len(runnable_variants()) < 2, reason="this CPU runs one variant only")
def test_every_variant_gives_the_same_bits(tmp_path):
    results = {v: run_in_variant(v, _CHILD, tmp_path, path=HERE) for v in runnable_variants()}
    first, *rest = results
    for v in rest:
        wrong = [k for k in results[first] if results[v][k] != results[first][k]]
        assert not wrong, f"{v} differs from {first} on {len(wrong)} of {len(results[first])}, e.g. {wrong[:3]}"
    assert len(results[first]) == 5 * 4 * 6
    json.dumps(results)  # plain data
