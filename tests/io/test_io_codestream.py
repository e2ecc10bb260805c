"""The frame-header parsers of thyrofast.io.codestream: right sizes, and never a read past the buffer."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.encaps import get_frame  # noqa: E402

from thyrofast.io.codestream import CodestreamError, CodestreamInfo, codestream_info, j2k_info, jpeg_info  # noqa: E402


def _frame(name: str) -> tuple[bytes, object]:
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(p)
    return get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1)), ds


# name: (kind, rows, columns, components) as the DICOM header says
REAL = {
    "US1_J2KR.dcm": ("j2k", 480, 640, 3),
    "US1_J2KI.dcm": ("j2k", 480, 640, 3),
    "SC_rgb_jpeg_dcmtk.dcm": ("jpeg", 100, 100, 3),  # baseline
    "examples_ybr_color.dcm": ("jpeg", 240, 320, 3),  # baseline cine, YBR_FULL_422
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ("jpeg", 768, 1024, 1),  # lossless SV1
    "SC_rgb_jpeg_gdcm.dcm": ("jpeg", 100, 100, 3),
    "MR_small_jpeg_ls_lossless.dcm": ("jpeg-ls", 64, 64, 1),
    "JPEGLSNearLossless_08.dcm": ("jpeg-ls", 45, 10, 1),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_frames_give_the_header_size(name):
    data, ds = _frame(name)
    info = codestream_info(data, ds.file_meta.TransferSyntaxUID)
    assert info is not None
    assert (info.kind, info.rows, info.columns, info.components) == REAL[name]
    assert (info.rows, info.columns, info.components) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)


def test_other_transfer_syntaxes_have_no_codestream_header():
    assert codestream_info(b"\x00" * 64, "1.2.840.10008.1.2.5") is None  # RLE
    assert codestream_info(b"", "1.2.840.10008.1.2.1") is None


def _siz(x, y, xo=0, yo=0, xt=None, yt=None, xto=0, yto=0, comps=((7, 1, 1),) * 3) -> bytes:
    xt = x if xt is None else xt
    yt = y if yt is None else yt
    body = b"".join(v.to_bytes(4, "big") for v in (x, y, xo, yo, xt, yt, xto, yto))
    body += len(comps).to_bytes(2, "big") + b"".join(bytes(c) for c in comps)
    lsiz = 2 + 2 + len(body)
    return b"\xff\x4f\xff\x51" + lsiz.to_bytes(2, "big") + b"\x00\x00" + body + b"\xff\x52\x00\x0c" + b"\x00" * 10


def test_j2k_siz_image_area_offsets_and_tiles():
    assert j2k_info(_siz(640, 480)) == CodestreamInfo("j2k", 480, 640, 3, 1)
    # the image area starts at (XOsiz, YOsiz): a 100 x 50 image
    assert j2k_info(_siz(110, 70, xo=10, yo=20))[1:3] == (50, 100)
    # 64 x 64 tiles over 640 x 480: 10 x 8 of them
    assert j2k_info(_siz(640, 480, xt=64, yt=64)).tiles == 80
    assert j2k_info(_siz(20000, 20000, comps=((7, 1, 1),))).rows == 20000
    with pytest.raises(CodestreamError):
        j2k_info(_siz(10, 480, xo=10))  # empty image area
    with pytest.raises(CodestreamError):
        j2k_info(_siz(640, 480, xt=0))  # no tile width
    with pytest.raises(CodestreamError):
        j2k_info(_siz(640, 480, comps=((7, 0, 1),)))  # zero subsampling
    with pytest.raises(CodestreamError):
        j2k_info(b"\xff\x4f\xff\x90" + _siz(640, 480)[4:])  # SOT before SIZ


def test_j2k_in_a_jp2_file():
    cs = _siz(640, 480)
    sig = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    ftyp = (20).to_bytes(4, "big") + b"ftypjp2 \x00\x00\x00\x00jp2 "
    jp2 = sig + ftyp + (8 + len(cs)).to_bytes(4, "big") + b"jp2c" + cs
    assert j2k_info(jp2)[1:4] == (480, 640, 3)
    # XLBox (64-bit length) and a last box that runs to the end (LBox 0)
    xl = sig + ftyp + (1).to_bytes(4, "big") + b"jp2c" + (16 + len(cs)).to_bytes(8, "big") + cs
    assert j2k_info(xl)[1:3] == (480, 640)
    assert j2k_info(sig + ftyp + (0).to_bytes(4, "big") + b"jp2c" + cs)[1:3] == (480, 640)
    with pytest.raises(CodestreamError):
        j2k_info(sig + ftyp)  # no codestream box
    with pytest.raises(CodestreamError):
        j2k_info(sig + (4000).to_bytes(4, "big") + b"ftyp" + cs)  # a box longer than the file
    with pytest.raises(CodestreamError):
        j2k_info(sig + (3).to_bytes(4, "big") + b"ftyp" + cs)  # shorter than its own header


def _sof(marker: int, y: int, x: int, nf: int = 3) -> bytes:
    return bytes([0xFF, marker]) + (8 + 3 * nf).to_bytes(2, "big") + bytes([8]) + y.to_bytes(2, "big") \
        + x.to_bytes(2, "big") + bytes([nf]) + bytes([1, 0x11, 0]) * nf


def test_jpeg_frame_header_walk():
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb\x00\x43\x00" + bytes(range(64))
    sos = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    assert jpeg_info(b"\xff\xd8" + app0 + dqt + _sof(0xC0, 480, 640) + sos) == CodestreamInfo("jpeg", 480, 640, 3)
    # every SOFn counts, also lossless (C3) and progressive (C2); DHT (C4) / DAC (CC) are skipped
    dht = b"\xff\xc4\x00\x05\x00\x00\x00"
    dac = b"\xff\xcc\x00\x04\x00\x00"
    for m in (0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCF):
        assert jpeg_info(b"\xff\xd8" + dht + dac + _sof(m, 20, 30, 1) + sos)[1:4] == (20, 30, 1)
    assert jpeg_info(b"\xff\xd8" + _sof(0xF7, 64, 64, 1)).kind == "jpeg-ls"
    # fill bytes before a marker and standalone markers (no length) are stepped over
    assert jpeg_info(b"\xff\xd8\xff\xff\xff\xd0" + app0 + b"\xff\xff" + _sof(0xC0, 9, 8))[1:3] == (9, 8)
    # the size is the frame header's, whatever comes after it
    assert jpeg_info(b"\xff\xd8" + _sof(0xC0, 9000, 9000) + _sof(0xC0, 10, 10))[1:3] == (9000, 9000)
    assert jpeg_info(b"\xff\xd8" + _sof(0xC0, 0, 640))[1] == 0  # DNL-defined height: reported as 0
    for bad in (b"", b"\xff", b"\x00\xd8", b"\xff\xd8", b"\xff\xd8" + sos + _sof(0xC0, 1, 1),  # scan first
                b"\xff\xd8\xff\xd9", b"\xff\xd8\x00" + _sof(0xC0, 1, 1),  # EOI; garbage where a marker belongs
                b"\xff\xd8\xff\xe0\x00\x01" + _sof(0xC0, 1, 1),  # length < 2
                b"\xff\xd8" + _sof(0xC0, 1, 1, 3)[:-1],  # truncated frame header
                b"\xff\xd8" + _sof(0xC0, 1, 1, 3)[:4] + b"\x08\x00\x01\x00\x01\x02" + b"\x00" * 9):  # Lf != 8+3Nf
        with pytest.raises(CodestreamError):
            jpeg_info(bad)


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_truncation_and_byte_flip_is_a_codestream_error_or_a_size(name):
    """Prefixes of a real frame header and 400 seeded byte flips: only CodestreamError or a
    CodestreamInfo come out (an IndexError would mean a read past the buffer)."""
    data, ds = _frame(name)
    ts = ds.file_meta.TransferSyntaxUID
    head = data[:2048]
    full = codestream_info(head, ts)
    for n in range(len(head)):
        try:
            info = codestream_info(head[:n], ts)
        except CodestreamError:
            continue
        assert info == full  # a prefix that parses holds the whole frame header
    rng = np.random.default_rng(7)
    for _ in range(400):
        b = bytearray(head[:300])
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        try:
            info = codestream_info(bytes(b), ts)
        except CodestreamError:
            continue
        assert isinstance(info, CodestreamInfo) and info.rows >= 0 and info.columns >= 0


def test_memoryview_and_bytearray_input():
    data, ds = _frame("US1_J2KR.dcm")
    assert j2k_info(memoryview(data)) == j2k_info(bytearray(data)) == j2k_info(data)
    data, ds = _frame("SC_rgb_jpeg_dcmtk.dcm")
    assert jpeg_info(memoryview(data)) == jpeg_info(data)
