"""The image size an encapsulated DICOM frame's own codestream declares.

A JPEG / JPEG-LS / JPEG 2000 decoder allocates what the codestream says, not
what the DICOM header (Rows, Columns) says, so a small file can ask for
gigabytes.  :func:`codestream_info` reads the size from the frame's bytes
(J2K ``SIZ``, JPEG ``SOFn``, JPEG-LS ``SOF55``) before anything is decoded;
:class:`thyrofast.io.dicom.DicomSource` refuses a frame whose size differs from
the header's.

The parsers are strict: they walk the marker segments from the first byte and
raise :class:`CodestreamError` on anything they cannot follow (a truncated
segment, a scan before the frame header, bytes that are not a marker), so a
frame cannot hide its real size from them; every read is bounds-checked and
never goes past the buffer.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["CodestreamInfo", "CodestreamError", "codestream_info", "j2k_info", "jpeg_info",
           "J2K_TRANSFER_SYNTAXES", "JPEG_TRANSFER_SYNTAXES", "JPEG_LS_TRANSFER_SYNTAXES"]

J2K_TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossless only / lossy)
    "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 multi-component
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
})
JPEG_TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # baseline, extended
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # lossless
})
JPEG_LS_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})

#: Isot (the tile index of a J2K tile-part) is 16 bits, so a valid codestream has at most this many tiles.
J2K_MAX_TILES = 65535


class CodestreamError(ValueError):
    """The bytes are not a codestream whose frame header can be read."""


class CodestreamInfo(NamedTuple):
    kind: str  # "j2k", "jpeg", "jpeg-ls"
    rows: int
    columns: int
    components: int
    tiles: int = 1  # J2K tiles; 1 for JPEG


def _u8(b: bytes, off: int) -> int:
    if off + 1 > len(b):
        raise CodestreamError(f"truncated at byte {off}")
    return b[off]


def _u16(b: bytes, off: int) -> int:
    if off + 2 > len(b):
        raise CodestreamError(f"truncated at byte {off}")
    return (b[off] << 8) | b[off + 1]


def _u32(b: bytes, off: int) -> int:
    if off + 4 > len(b):
        raise CodestreamError(f"truncated at byte {off}")
    return int.from_bytes(b[off:off + 4], "big")


def _u64(b: bytes, off: int) -> int:
    if off + 8 > len(b):
        raise CodestreamError(f"truncated at byte {off}")
    return int.from_bytes(b[off:off + 8], "big")


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _jp2_codestream_offset(b: bytes) -> int:
    """Offset of the contiguous codestream (the ``jp2c`` box) of a JP2 file."""
    off = 0
    while off < len(b):
        length = _u32(b, off)
        box = b[off + 4:off + 8]
        header = 8
        if length == 1:
            length, header = _u64(b, off + 8), 16
        elif length == 0:
            length = len(b) - off
        if length < header or off + length > len(b):
            raise CodestreamError(f"JP2 box {box!r} at byte {off} has a bad length")
        if box == b"jp2c":
            return off + header
        off += length
    raise CodestreamError("JP2 file without a codestream box")


def j2k_info(buf: bytes | bytearray | memoryview) -> CodestreamInfo:
    """Image size from a JPEG 2000 codestream's SIZ marker segment (ISO 15444-1 A.5.1).

    Accepts a raw codestream (``FF4F FF51 ...``, as DICOM stores it) or a JP2
    file (the codestream in its ``jp2c`` box), which decoders also take.
    """
    b = bytes(buf) if not isinstance(buf, bytes) else buf
    off = 0
    if b.startswith(_JP2_SIGNATURE):
        off = _jp2_codestream_offset(b)
    if _u16(b, off) != 0xFF4F:
        raise CodestreamError("not a JPEG 2000 codestream (no SOC marker)")
    if _u16(b, off + 2) != 0xFF51:
        raise CodestreamError("JPEG 2000 codestream without SIZ right after SOC")
    s = off + 4  # Lsiz
    lsiz = _u16(b, s)
    csiz = _u16(b, s + 36)
    if not 1 <= csiz <= 16384 or lsiz != 38 + 3 * csiz:
        raise CodestreamError(f"bad SIZ segment (Lsiz {lsiz}, Csiz {csiz})")
    if s + lsiz > len(b):
        raise CodestreamError("truncated SIZ segment")
    xsiz, ysiz, xosiz, yosiz = (_u32(b, s + k) for k in (4, 8, 12, 16))
    xtsiz, ytsiz, xtosiz, ytosiz = (_u32(b, s + k) for k in (20, 24, 28, 32))
    if xsiz <= xosiz or ysiz <= yosiz:
        raise CodestreamError(f"empty image area in SIZ ({xsiz}x{ysiz} from offset {xosiz},{yosiz})")
    if xtsiz == 0 or ytsiz == 0 or xtosiz > xosiz or ytosiz > yosiz \
            or xtosiz + xtsiz <= xosiz or ytosiz + ytsiz <= yosiz:
        raise CodestreamError("bad tile grid in SIZ")
    for c in range(csiz):
        if _u8(b, s + 39 + 3 * c) == 0 or _u8(b, s + 40 + 3 * c) == 0:
            raise CodestreamError(f"component {c} has a zero subsampling factor")
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    return CodestreamInfo("j2k", ysiz - yosiz, xsiz - xosiz, csiz, tiles)


# SOFn: C0-C3, C5-C7, C9-CB, CD-CF (C4 DHT, C8 JPG, CC DAC are not frame headers);
# F7 is JPEG-LS SOF55; DE (DHP) gives the image size of a hierarchical JPEG
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field


def jpeg_info(buf: bytes | bytearray | memoryview) -> CodestreamInfo:
    """Image size from a JPEG (ISO 10918-1 B.2.2) or JPEG-LS (ISO 14495-1 C.2.2) frame header.

    Walks the marker segments from SOI to the first SOFn / SOF55 / DHP and
    returns its Y (rows), X (columns) and Nf (components).  A Y or X of 0
    (size given later by DNL or a JPEG-LS LSE segment) is returned as 0.
    """
    b = bytes(buf) if not isinstance(buf, bytes) else buf
    if _u16(b, 0) != 0xFFD8:
        raise CodestreamError("not a JPEG codestream (no SOI marker)")
    off = 2
    while True:
        if _u8(b, off) != 0xFF:
            raise CodestreamError(f"expected a marker at byte {off}")
        while _u8(b, off) == 0xFF:  # fill bytes before a marker
            off += 1
        marker = b[off]
        off += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):
            raise CodestreamError(f"marker FF{marker:02X} before the frame header")
        length = _u16(b, off)
        if length < 2 or off + length > len(b):
            raise CodestreamError(f"marker FF{marker:02X} at byte {off - 2} has a bad length {length}")
        if marker in _SOF or marker in (0xF7, 0xDE):
            rows, cols, nf = _u16(b, off + 3), _u16(b, off + 5), _u8(b, off + 7)
            if length != 8 + 3 * nf:
                raise CodestreamError(f"frame header length {length} does not fit {nf} components")
            return CodestreamInfo("jpeg-ls" if marker == 0xF7 else "jpeg", rows, cols, nf)
        off += length


def codestream_info(buf: bytes | bytearray | memoryview, transfer_syntax: str) -> CodestreamInfo | None:
    """The frame header of one encapsulated frame, or None for a transfer syntax without one here."""
    ts = str(transfer_syntax)
    if ts in J2K_TRANSFER_SYNTAXES:
        return j2k_info(buf)
    if ts in JPEG_TRANSFER_SYNTAXES or ts in JPEG_LS_TRANSFER_SYNTAXES:
        return jpeg_info(buf)
    return None
