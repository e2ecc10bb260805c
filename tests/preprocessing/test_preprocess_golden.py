"""The CPU core's exact output bits, pinned, on every CPU variant.

The reference tests allow a tolerance, so a change that moves the last bits
of the output (another order of additions, a different vector width) passes
them; these hashes do not.  A change may move the bits on purpose: then say
why in its commit and renew the table.  Frames that train or test a model
(the demo's recorded bundle included) are only reproduced bit for bit while
this table holds.

Source of the table: thyrofast at commit 66b2d0b, gcc 12.2.0 with
-march=native on the project's AMD EPYC (Zen 3: AVX2 + FMA, no AVX-512) VM,
2026-11-27.  Since then the core states which products are fused
(detail::fma_f, -ffp-contract=off) and spells out the vector code's order of
additions in its portable code, so the bits no longer depend on the compiler's
tuning or the CPU: every variant this CPU runs (baseline x86-64-v2, avx2,
native) must give them, each forced in a subprocess (THYROFAST_CPU_VARIANT).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import thyrofast

from _cpu_variants import run_in_variant, runnable_variants
from _reference import speckle_frames

HERE = Path(__file__).resolve().parent  # the child imports this module by name

GOLDEN = {
    (5, "srad", 1): "9ce151d1c87c3665",
    (5, "srad", 2): "a4e58ead616cc66c",
    (5, "srad", 3): "b41ef438c89b340c",
    (5, "median5", 10): "757d62bfcbc356ec",
    (5, "none", 10): "557683a5f63f1ed7",
    (8, "srad", 1): "5ecd8022f47af558",
    (8, "srad", 2): "1fd33f276170fc32",
    (8, "srad", 3): "7951be99fa9b00aa",
    (8, "median5", 10): "deeef725d0d84797",
    (8, "none", 10): "4baad777cac73cf4",
    (13, "srad", 1): "cb493efc1e4efb8c",
    (13, "srad", 2): "ec8535d227daefaa",
    (13, "srad", 3): "c531fb124998436b",
    (13, "median5", 10): "3b12fe2bc0fb946f",
    (13, "none", 10): "7877eac667caf7a7",
    (16, "srad", 1): "d719530936f3c4c8",
    (16, "srad", 2): "5735cae6480baf24",
    (16, "srad", 3): "f6eb18bc913fc5c5",
    (16, "median5", 10): "a8ca88adc0c19d6c",
    (16, "none", 10): "039b4e869060a530",
    (24, "srad", 1): "8645e0b7df2092af",
    (24, "srad", 2): "bfb51b6e6fa1b7a1",
    (24, "srad", 3): "f2f416b9b7779d3a",
    (24, "median5", 10): "5571df6b3f7559ff",
    (24, "none", 10): "ed7f5d93f8105531",
    (29, "srad", 1): "d35fab9c252af9f5",
    (29, "srad", 2): "9e65e290c0b57efb",
    (29, "srad", 3): "80712bab5498d366",
    (29, "median5", 10): "2d72c2ecbd584ce3",
    (29, "none", 10): "5cf6e5557d75fd7d",
    (224, "srad", 1): "c2e40a0898ae7eb8",
    (224, "srad", 2): "0539c77f79f090ec",
    (224, "srad", 3): "ff0e22dee228b90e",
    (224, "median5", 10): "893731b3fdb59c16",
    (224, "none", 10): "7a73ccee701c6ed8",
}


def output_hashes() -> dict:
    """The table's keys (as strings) -> the first 16 hex digits of this process's output."""
    f = speckle_frames(np.random.default_rng(11), 2, 60, 300, dtype=np.uint16)
    out = {}
    for w, denoise, iterations in sorted(GOLDEN):
        r = thyrofast.preprocess(f, size=(11, w), denoise=denoise, srad_iterations=iterations, threads=1)
        out[repr((w, denoise, iterations))] = hashlib.sha256(r.tobytes()).hexdigest()[:16]
    return out


_CHILD = """
import json, thyrofast, test_preprocess_golden as g
print(json.dumps({"variant": thyrofast.build_info()["cpu_variant"], "hashes": g.output_hashes()}))
"""


@pytest.mark.parametrize("variant", runnable_variants())
def test_output_bits_unchanged(variant, tmp_path):
    got = run_in_variant(variant, _CHILD, tmp_path, path=HERE)
    assert got["variant"] == variant
    wrong = [key for key in sorted(GOLDEN) if got["hashes"][repr(key)] != GOLDEN[key]]
    assert not wrong, f"variant {variant}: {len(wrong)} of {len(GOLDEN)} outputs moved, e.g. {wrong[:3]}"
