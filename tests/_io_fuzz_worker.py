"""Fuzz worker for tests/io/test_io_fuzz.py (run as a child process; not a test module).

Reads case specs ``{"id", "file", "seed", "kind"}`` as JSON lines on stdin,
builds the mutated file deterministically from (file, seed, kind), calls
``thyrofast.read`` on it and answers one JSON line per case:
``{"id", "status": "ok"|"input_error"|"crash", "code"/"error", "seconds",
"peak_rss_kib"}``.  ``{"id", "kind": "bomb", "bomb": NAME}`` reads one of the
hostile files of tests/_dicom_bombs.py instead (with its read options).
A case that hangs or kills the process is detected by the parent's watchdog.

The worker runs under ``RLIMIT_AS`` = 4 GiB (as ``ulimit -v 4G``), so a bomb
cannot take the machine down, and measures each case's own peak RSS: the
kernel's high-water mark is reset before the case (``/proc/self/clear_refs``,
Linux >= 4.0), then VmHWM (``/proc/self/status``; else ``ru_maxrss``) is the
case's peak (``rss_reset`` False where the reset is unavailable: then it is
the process's peak so far, an upper bound).
"""
from __future__ import annotations

import io
import json
import os
import resource
import sys
import tempfile
import time
import warnings

import numpy as np

EDITS = {
    "NumberOfFrames": [0, 1, 2, 3, 7, 1000, 100000, 2**31 - 1],
    "Rows": [0, 1, 2, 3, 255, 4096, 65535],
    "Columns": [0, 1, 2, 3, 255, 4096, 65535],
    "BitsAllocated": [0, 1, 7, 8, 12, 16, 32, 64],
    "BitsStored": [0, 1, 7, 9, 12, 16, 17],
    "HighBit": [0, 7, 15, 31],
    "SamplesPerPixel": [0, 1, 2, 3, 4],
    "PhotometricInterpretation": ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL",
                                  "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "HSV", "XYZ", ""],
    "PlanarConfiguration": [0, 1, 2],
    "PixelRepresentation": [0, 1],
}
TS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
      "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"]

_cache: dict[str, bytes] = {}


def _original(path: str) -> bytes:
    if path not in _cache:
        with open(path, "rb") as fh:
            _cache[path] = fh.read()
    return _cache[path]


def _flip(data: bytes, rng: np.random.Generator, header_only: bool) -> bytes:
    b = bytearray(data)
    hi = min(len(b), 4096) if header_only else len(b)
    for _ in range(int(rng.integers(1, 17))):
        b[int(rng.integers(0, hi))] = int(rng.integers(0, 256))
    return bytes(b)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _pixel_length(data: bytes, rng: np.random.Generator) -> bytes:
    # overwrite the 4-byte length of (7FE0,0010) Pixel Data (or of any tag found)
    b = bytearray(data)
    for tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        pos = b.rfind(tag)
        if pos >= 0:
            off = pos + 8 if b[pos + 4:pos + 6] in (b"OB", b"OW") else pos + 4
            val = int(rng.choice([0, 1, 2, 0xFFFFFFFE, 0x7FFFFFFF, len(b), int(rng.integers(0, 2**32 - 1))]))
            b[off:off + 4] = val.to_bytes(4, "little" if tag[0] == 0xE0 else "big")
            return bytes(b)
    return _flip(data, rng, False)


def _edit(data: bytes, rng: np.random.Generator) -> bytes:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in range(int(rng.integers(1, 4))):
            what = int(rng.integers(0, len(EDITS) + 3))
            if what < len(EDITS):
                key = list(EDITS)[what]
                vals = EDITS[key]
                setattr(ds, key, vals[int(rng.integers(0, len(vals)))])
            elif what == len(EDITS):
                ds.file_meta.TransferSyntaxUID = TS[int(rng.integers(0, len(TS)))]
            elif what == len(EDITS) + 1 and "SequenceOfUltrasoundRegions" in ds:
                r = ds.SequenceOfUltrasoundRegions[int(rng.integers(0, len(ds.SequenceOfUltrasoundRegions)))]
                k = ["RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1",
                     "RegionDataType", "RegionSpatialFormat"][int(rng.integers(0, 6))]
                setattr(r, k, int(rng.choice([0, 1, 3, 799, 65535, 2**31 - 1])))
            elif "RedPaletteColorLookupTableDescriptor" in ds:
                ds.RedPaletteColorLookupTableDescriptor = [[0, 0, 16], [256, 0, 8], [65535, 5, 16], [1, 0, 3],
                                                           [16, 0, 16]][int(rng.integers(0, 5))]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()


def mutate(path: str, seed: int, kind: str) -> bytes:
    rng = np.random.default_rng(seed)
    data = _original(path)
    if kind == "truncate":
        return _truncate(data, rng)
    if kind == "flip_header":
        return _flip(data, rng, True)
    if kind == "flip":
        return _flip(data, rng, False)
    if kind == "pixel_length":
        return _pixel_length(data, rng)
    if kind == "edit":
        try:
            return _edit(data, rng)
        except Exception:  # pydicom refused to write that value: fall back to a byte flip
            return _flip(data, rng, True)
    raise ValueError(kind)


#: Address-space limit of a worker (``ulimit -v 4G``).
ADDRESS_SPACE_LIMIT = 4 << 30


def limit_address_space(limit: int = ADDRESS_SPACE_LIMIT) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (and so ru_maxrss); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM, the high-water mark reset_peak_rss() resets.

    ``getrusage().ru_maxrss`` is not used where VmHWM exists: it never drops below the
    RSS the parent had when it forked this worker (the kernel carries the pre-exec
    high-water mark over), so under a 800 MB pytest process every case would read 800 MB.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def main() -> int:
    limit_address_space()
    from pydicom.data import get_testdata_file

    from thyrofast import InputError
    from thyrofast.io import read

    for warm in ("US1_J2KR.dcm", "examples_ybr_color.dcm", "OBXXXX1A_rle.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"):
        read(get_testdata_file(warm, download=False))  # load the decoder plugins before timing cases
    tmpdir = tempfile.mkdtemp(prefix="thyrofast-fuzz-")
    target = os.path.join(tmpdir, "case.dcm")
    for line in sys.stdin:
        spec = json.loads(line)
        kw = {}
        if spec["kind"] == "bomb":
            import _dicom_bombs  # tests/ is this script's directory

            build, kw, _ = _dicom_bombs.BOMBS[spec["bomb"]]
            data = build()
        else:
            data = mutate(spec["file"], spec["seed"], spec["kind"])
        with open(target, "wb") as fh:
            fh.write(data)
        del data
        reset = reset_peak_rss()
        base = peak_rss_kib()
        t0 = time.perf_counter()
        try:
            frames = read(target, **kw)
            res = {"status": "ok", "frames": len(frames), "region_source": frames[0].region_source,
                   "shape": list(frames[0].pixels.shape)}
            del frames
        except InputError as exc:
            res = {"status": "input_error", "code": exc.code}
        except BaseException as exc:  # the thing this fuzzer looks for
            res = {"status": "crash", "error": f"{type(exc).__name__}: {exc}"[:300]}
        res.update(id=spec["id"], seconds=time.perf_counter() - t0, peak_rss_kib=peak_rss_kib(),
                   base_rss_kib=base, rss_reset=reset)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    os.remove(target) if os.path.exists(target) else None
    os.rmdir(tmpdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
