"""Robustness: 1,000 seeded mutations of the ultrasound test files, and the bombs.

Every mutated file must either read or raise InputError: no other exception,
no crashed process, no hang.  Cases run in two child processes under a
watchdog, which kills a worker stuck on one case for HANG_S seconds (a hang
guard, not a speed assertion; the measured per-case maximum is printed).
Workers run under a 4 GiB address-space limit (``ulimit -v 4G``) and report
each case's peak RSS; the targeted bombs (tests/_dicom_bombs.py: NumberOfFrames
10^8, JPEG 2000 / JPEG / JPEG-LS frames larger than the header, a (0,0,0,0)
tissue region, a deflated data set of 2 GiB) must each stay under BOMB_RSS_LIMIT.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import warnings

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/io/ -> the repository
WORKER = os.path.join(ROOT, "tests", "_io_fuzz_worker.py")
HANG_S = 20.0
N_WORKERS = 2
KINDS = ("truncate", "flip_header", "flip", "pixel_length", "edit")
# every US test file but the 120-frame cine (1.7 s a read unmutated; its decode
# path, JPEG baseline YBR cine, is covered by the 30-frame examples_ybr_color)
FUZZ_FILES = [
    "ExplVR_BigEnd.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm",
    "examples_ybr_color.dcm", "OBXXXX1A.dcm", "OBXXXX1A_2frame.dcm", "OBXXXX1A_expb.dcm",
    "OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_rle.dcm", "OBXXXX1A_rle_2frame.dcm", "US1_UNCR.dcm", "US1_UNCI.dcm",
    "US1_J2KR.dcm", "US1_J2KI.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "color-pl.dcm", "color-px.dcm",
    "gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm",
]
N_CASES = 1000
#: Peak RSS a bomb may reach (the worker's own ~100 MB of Python, NumPy, pydicom and decoders included).
BOMB_RSS_LIMIT = 512 << 20


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(), text=True, bufsize=1)
        self.case = None
        self.started = 0.0

    def send(self, case):
        self.case, self.started = case, time.monotonic()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()

    def stop(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except Exception:  # a dead worker's broken pipe
                    pass


def _run_cases(cases: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    results, crashes, hangs = [], [], []
    todo = list(reversed(cases))
    sel = selectors.DefaultSelector()
    workers = []

    def start():
        w = _Worker()
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    def feed(w):
        if todo:
            w.send(todo.pop())
        else:
            w.case = None

    def replace(w):
        sel.unregister(w.proc.stdout)
        workers.remove(w)
        if w.proc.poll() is None:
            w.proc.kill()
        w.stop()
        feed(start())

    for _ in range(min(N_WORKERS, len(cases))):
        feed(start())
    try:
        while any(w.case is not None for w in workers):
            for key, _ in sel.select(timeout=0.5):
                w = key.data
                line = w.proc.stdout.readline()
                if not line:  # the worker died: a crash in C code
                    crashes.append({**w.case, "error": f"worker died, exit code {w.proc.poll()}"})
                    replace(w)
                    continue
                res = json.loads(line)
                results.append(res)
                if res["status"] == "crash":
                    crashes.append({**w.case, "error": res["error"]})
                feed(w)
            now = time.monotonic()
            for w in list(workers):
                if w.case is not None and now - w.started > HANG_S:
                    hangs.append(dict(w.case))
                    replace(w)
    finally:
        for w in workers:
            w.stop()
        sel.close()
    return results, crashes, hangs


def _files() -> list[str]:
    paths = [get_testdata_file(n, download=False) for n in FUZZ_FILES]
    if any(p is None for p in paths):
        pytest.skip("pydicom-data is not installed")
    return paths


# the full 1,000 cases take ~45 s of wall time on 2 busy cores: `slow`; a 200-case
# subset (every file x every mutation kind, 2 seeds each) runs by default
@pytest.mark.parametrize("n_cases", [pytest.param(N_CASES, marks=pytest.mark.slow, id="1000"),
                                     pytest.param(200, id="200")])
def test_mutated_us_files_never_crash_or_hang(n_cases):
    files = _files()
    cases = [{"id": i, "file": files[i % len(files)], "seed": 1000 + i,
              "kind": KINDS[(i // len(files)) % len(KINDS)]} for i in range(n_cases)]
    t0 = time.monotonic()
    results, crashes, hangs = _run_cases(cases)
    wall = time.monotonic() - t0
    assert not crashes, f"{len(crashes)} crash(es), e.g. {crashes[:3]}"
    assert not hangs, f"{len(hangs)} case(s) hung > {HANG_S} s, e.g. {hangs[:3]}"
    assert len(results) == n_cases
    assert {r["status"] for r in results} <= {"ok", "input_error"}
    codes: dict[str, int] = {}
    for r in results:
        key = r["status"] if r["status"] == "ok" else r["code"]
        codes[key] = codes.get(key, 0) + 1
    # the mutations must actually bite: most cases fail, and some still read
    assert codes.get("ok", 0) > 0 and sum(v for k, v in codes.items() if k != "ok") > n_cases // 3
    slowest = max(results, key=lambda r: r["seconds"])
    fattest = max(results, key=lambda r: r["peak_rss_kib"])
    print(f"\nfuzz: {n_cases} cases in {wall:.1f} s, outcomes {dict(sorted(codes.items()))}, "
          f"slowest {slowest['seconds']:.2f} s (case {slowest['id']}), "
          f"largest peak RSS {fattest['peak_rss_kib'] / 1024:.0f} MB (case {fattest['id']})")


def test_mutated_deflated_file_never_crashes_or_hangs():
    """The Deflated Explicit VR LE file (whose inflated size read() checks before pydicom
    inflates it): 60 mutations, every kind, each reads or is an InputError."""
    path = get_testdata_file("image_dfl.dcm", download=False)
    cases = [{"id": i, "file": path, "seed": 5000 + i, "kind": KINDS[i % len(KINDS)]} for i in range(60)]
    results, crashes, hangs = _run_cases(cases)
    assert not crashes, crashes[:3]
    assert not hangs, hangs[:3]
    assert len(results) == len(cases) and {r["status"] for r in results} <= {"ok", "input_error"}
    assert max(r["peak_rss_kib"] for r in results) * 1024 < BOMB_RSS_LIMIT


def test_targeted_bombs_are_refused_in_bounded_memory():
    """Each hostile file of tests/_dicom_bombs.py, under ``ulimit -v 4G``: the expected outcome,
    peak RSS under 512 MB and no hang.  The reader before issue 22 took 3-4 GB (up to the 4 GiB
    limit, 4.7-6 GB without it) and 1-15 s on the NumberOfFrames and J2K bombs, and cropped the
    (0,0,0,0) region to one pixel."""
    import _dicom_bombs

    _files()
    names = sorted(_dicom_bombs.BOMBS)
    cases = [{"id": i, "kind": "bomb", "bomb": n} for i, n in enumerate(names)]
    t0 = time.monotonic()
    results, crashes, hangs = _run_cases(cases)
    wall = time.monotonic() - t0
    assert not crashes, crashes
    assert not hangs, hangs
    assert len(results) == len(names)
    lines = []
    for r in sorted(results, key=lambda r: r["id"]):
        name = names[r["id"]]
        want = _dicom_bombs.BOMBS[name][2]
        got = "ok" if r["status"] == "ok" else r.get("code", r["status"])
        assert got == want, f"{name}: {r}"
        if name == "region_zero":
            assert r["region_source"] == "detected" and min(r["shape"][:2]) >= 32, r
        peak = r["peak_rss_kib"] * 1024
        assert peak < BOMB_RSS_LIMIT, f"{name}: peak RSS {peak / 2**20:.0f} MB"
        lines.append(f"{name}: {got}, {r['seconds'] * 1000:.0f} ms, peak RSS {peak / 2**20:.0f} MB "
                     f"(+{(r['peak_rss_kib'] - r['base_rss_kib']) / 1024:.0f} MB)"
                     + ("" if r["rss_reset"] else " [process peak: no per-case reset]"))
    print(f"\nbombs in {wall:.1f} s:\n  " + "\n  ".join(lines))


def _bomb(tmp_path) -> str:
    src = get_testdata_file("OBXXXX1A_rle.dcm", download=False)
    if src is None:
        pytest.skip("pydicom-data is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        ds.NumberOfFrames = 100000  # 600 x 800 x 100000 x 3 x 2 bytes = 288 GB if anyone believed it
        out = tmp_path / "bomb.dcm"
        ds.save_as(out)
    return str(out)


_MEASURE = r"""
import json, resource, sys, tracemalloc
import numpy, pydicom, thyrofast.io
from thyrofast import InputError
from pydicom.data import get_testdata_file
thyrofast.io.read(get_testdata_file("US1_UNCR.dcm", download=False))  # warm: imports, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
code = None
try:
    thyrofast.io.read(sys.argv[1], max_bytes=int(sys.argv[2]))
except InputError as exc:
    code = exc.code
peak = tracemalloc.get_traced_memory()[1]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "rss_growth_kib": after - before, "traced_peak_bytes": peak}))
"""


@pytest.mark.parametrize("max_bytes", [1 << 30, 1 << 50])
def test_header_bomb_is_refused_without_allocating(tmp_path, max_bytes):
    """NumberOfFrames=100000 on an RLE file: refused by the guard (default limit),
    or, with the guard lifted, failing on the missing second frame because frames
    are decoded one at a time; either way memory grows by far less than 50 MB."""
    bomb = _bomb(tmp_path)
    out = subprocess.run([sys.executable, "-c", _MEASURE, bomb, str(max_bytes)], capture_output=True, text=True,
                         cwd=ROOT, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["code"] == ("too_large" if max_bytes == 1 << 30 else "unreadable")
    assert m["rss_growth_kib"] < 50 * 1024
    assert m["traced_peak_bytes"] < 50 * 2**20
    print(f"\nheader bomb (max_bytes={max_bytes}): {m}")
