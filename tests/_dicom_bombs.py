"""Hostile DICOM files built from pydicom's test files (a helper, not a test module).

Each builder returns the bytes of a small file whose header or codestream asks
the reader for far more memory than the file holds.  Used by
tests/io/test_io_dicom.py (the regressions) and tests/_io_fuzz_worker.py (the
harness, which measures peak RSS per bomb).  Codestream sizes are patched in
place, so every length in the file stays valid.
"""
from __future__ import annotations

import io
import warnings

from pydicom.data import get_testdata_file


def _path(name: str) -> str:
    p = get_testdata_file(name, download=False)
    if p is None:
        raise FileNotFoundError(f"{name} (pip install pydicom-data)")
    return p


def _dataset(name: str):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(_path(name))


def _save(ds) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def frames_bomb(n: int = 100_000_000, name: str = "OBXXXX1A.dcm", rows: int | None = None,
                columns: int | None = None) -> bytes:
    """``name`` (a 480 KB US palette image) claiming ``n`` frames (and optionally a tiny Rows x Columns)."""
    ds = _dataset(name)
    ds.NumberOfFrames = n
    if rows is not None:
        ds.Rows = rows
    if columns is not None:
        ds.Columns = columns
    if "SequenceOfUltrasoundRegions" in ds and (rows or columns):
        del ds.SequenceOfUltrasoundRegions
    return _save(ds)


def _frame_offset(data: bytes, ds, index: int = 0) -> tuple[int, bytes]:
    """Where encapsulated frame ``index`` starts in the file bytes, and the frame."""
    from pydicom.encaps import get_frame

    frame = get_frame(ds.PixelData, index, number_of_frames=int(ds.get("NumberOfFrames") or 1))
    for k in (256, 1024, 4096):  # the shortest prefix found once (a frame may span fragments)
        pos = data.find(frame[:k])
        assert pos >= 0, "frame not found in the file"
        if data.find(frame[:k], pos + 1) < 0:
            return pos, frame
    raise AssertionError("frame start not unique in the file")


def _jpeg_sof_offset(frame: bytes) -> int:
    """Offset of the first SOFn / SOF55 marker (FFxx) of a plain JPEG frame (test files: no fill bytes)."""
    assert frame[:2] == b"\xff\xd8"
    off = 2
    while off + 4 <= len(frame):
        assert frame[off] == 0xFF
        marker = frame[off + 1]
        if marker in (set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}:
            return off
        off += 2 + int.from_bytes(frame[off + 2:off + 4], "big")
    raise AssertionError("no SOF marker")


def j2k_bomb(rows: int = 20000, columns: int = 20000, name: str = "US1_J2KR.dcm",
             components: int | None = None) -> bytes:
    """A 153 KB US JPEG 2000 file (480 x 640 in its header) whose SIZ says ``rows`` x ``columns``."""
    ds = _dataset(name)
    with open(_path(name), "rb") as fh:
        data = bytearray(fh.read())
    pos, frame = _frame_offset(bytes(data), ds)
    s = pos + frame.index(b"\xff\x4f\xff\x51") + 4  # Lsiz
    xo, yo = int.from_bytes(data[s + 12:s + 16], "big"), int.from_bytes(data[s + 16:s + 20], "big")
    data[s + 4:s + 8] = (xo + columns).to_bytes(4, "big")
    data[s + 8:s + 12] = (yo + rows).to_bytes(4, "big")
    if components is not None:
        data[s + 36:s + 38] = components.to_bytes(2, "big")  # Lsiz no longer fits: a malformed SIZ
    return bytes(data)


def jpeg_bomb(rows: int = 9000, columns: int = 9000, name: str = "SC_rgb_jpeg_dcmtk.dcm",
              modality: str | None = "US", frame: int = 0) -> bytes:
    """A JPEG baseline (or JPEG-LS, with ``name``) file whose frame header of frame ``frame``
    says ``rows`` x ``columns``.

    The header's Modality is set to US (the test files are secondary capture / MR).
    """
    ds = _dataset(name)
    if modality is not None:
        ds.Modality = modality
    data = bytearray(_save(ds))
    pos, encoded = _frame_offset(bytes(data), ds, frame)
    m = pos + _jpeg_sof_offset(encoded)
    data[m + 5:m + 7] = rows.to_bytes(2, "big")
    data[m + 7:m + 9] = columns.to_bytes(2, "big")
    return bytes(data)


def jpeg_ls_bomb(rows: int = 20000, columns: int = 20000) -> bytes:
    """The 6 KB JPEG-LS lossless MR file (64 x 64, 16-bit) with a SOF55 saying ``rows`` x ``columns``."""
    return jpeg_bomb(rows, columns, name="MR_small_jpeg_ls_lossless.dcm")


def zero_region(name: str = "JPGLosslessP14SV1_1s_1f_8b.dcm", box: tuple[int, int, int, int] = (0, 0, 0, 0),
                extra: tuple[int, int, int, int] | None = None) -> bytes:
    """The US file with its tissue region's inclusive bounds set to ``box`` (x0, y0, x1, y1),
    and optionally a second tissue region ``extra``."""
    ds = _dataset(name)
    r = ds.SequenceOfUltrasoundRegions[0]
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    if extra is not None:
        import copy

        r2 = copy.deepcopy(r)
        r2.RegionLocationMinX0, r2.RegionLocationMinY0, r2.RegionLocationMaxX1, r2.RegionLocationMaxY1 = extra
        ds.SequenceOfUltrasoundRegions.append(r2)
    return _save(ds)


def deflate_bomb(inflated_mib: int = 2048, name: str = "US1_UNCR.dcm") -> bytes:
    """A Deflated Explicit VR Little Endian file (~1 KB a MiB) whose data set inflates to
    ``inflated_mib`` MiB more than ``name``'s: a trailing private OB element of zeros.

    Built without ever holding the zeros: one deflate piece of 1 MiB of zeros, ended by a
    full flush (byte-aligned, no references back), repeated.
    """
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _dataset(name)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    deflated = out.getvalue()
    meta_end = 132 + 12 + int.from_bytes(deflated[140:144], "little")  # (0002,0000) group length
    body = zlib.decompress(deflated[meta_end:], -zlib.MAX_WBITS)
    size = inflated_mib << 20
    body += b"\xe1\x7f\x10\x10OB\x00\x00" + size.to_bytes(4, "little")  # (7FE1,1010) OB
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(body) + c.flush(zlib.Z_FULL_FLUSH)
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = z.compress(bytes(1 << 20)) + z.flush(zlib.Z_FULL_FLUSH)
    return deflated[:meta_end] + head + piece * inflated_mib + b"\x03\x00"  # final empty block


#: name -> (builder, read() keyword arguments, expected outcome: an InputError code, or "ok")
BOMBS = {
    "frames_1e8": (lambda: frames_bomb(), {}, "too_large"),
    "frames_1e8_tiny": (lambda: frames_bomb(rows=1, columns=1), {}, "too_large"),
    "frames_1e8_unguarded": (lambda: frames_bomb(), {"max_bytes": 1 << 50}, "unreadable"),
    "j2k_20000": (lambda: j2k_bomb(), {}, "frame_size_mismatch"),
    "jpeg_9000": (lambda: jpeg_bomb(), {}, "frame_size_mismatch"),
    "jpeg_ls_20000": (lambda: jpeg_ls_bomb(), {}, "frame_size_mismatch"),
    "region_zero": (lambda: zero_region(), {}, "ok"),
    # 2 GiB inflated from 2 MB; a 64 MiB guard keeps the check to a fraction of a second
    "deflate_2g": (lambda: deflate_bomb(), {"max_bytes": 64 << 20}, "too_large"),
}
