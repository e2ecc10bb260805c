"""DICOM ultrasound (US Image Storage, US Multi-frame, and any other image object) via pydicom.

Frames come out as the preprocessing core wants them: ``uint8``/``uint16``,
``(H, W)`` gray or ``(H, W, 3)`` RGB.  MONOCHROME1 is inverted to MONOCHROME2,
YBR_* becomes RGB, PALETTE COLOR is expanded through its (possibly segmented)
lookup table to RGB, signed gray is shifted to unsigned.

Nothing is decoded before the memory guard has seen Rows x Columns x Frames x
Samples x bytes; frames are decoded one at a time.  NumberOfFrames must fit the
Pixel Data actually present, and each JPEG / JPEG-LS / JPEG 2000 frame's own
codestream size (SOFn / SOF55 / SIZ, :mod:`thyrofast.io.codestream`) must equal
Rows x Columns x Samples before the decoder sees it (``frame_size_mismatch``),
so no size the guard did not check reaches a decoder.
"""
from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from .codestream import (
    J2K_MAX_TILES,
    J2K_TRANSFER_SYNTAXES,
    JPEG_LS_TRANSFER_SYNTAXES,
    JPEG_TRANSFER_SYNTAXES,
    CodestreamError,
    codestream_info,
)
from .frame import hash_patient_id
from .regions import UsRegion, parse_regions

__all__ = ["DicomSource", "open_dicom", "DECODER_PACKAGES"]

# transfer syntax UID prefix -> what to install when pydicom has no plugin for it.
# Only permissively licensed decoders are named (pylibjpeg-libjpeg is GPL).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pillow or python-gdcm",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "python-gdcm",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "python-gdcm",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "python-gdcm",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "python-gdcm or pyjpegls",  # JPEG-LS
    "1.2.840.10008.1.2.4.81": "python-gdcm or pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",  # JPEG 2000
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",  # HTJ2K
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)",
    "1.2.840.10008.1.2.5": "numpy (pydicom's RLE decoder) or pylibjpeg-rle",
}

# encapsulated frames whose codestream states its own size: checked against the header before decoding
_CODESTREAM_TS = J2K_TRANSFER_SYNTAXES | JPEG_TRANSFER_SYNTAXES | JPEG_LS_TRANSFER_SYNTAXES

_PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
                 "YBR_RCT", "YBR_ICT"}


def _parse(data: bytes, *, force: bool) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=force)


def _str(ds: Any, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _require_int(ds: Any, keyword: str, source: str) -> int:
    v = ds.get(keyword)
    if v is None or v == "":
        raise InputError("unreadable", f"the image has no {keyword}", source=source)
    return int(v)


class DicomSource:
    """A parsed DICOM image object whose frames have not been decoded yet."""

    format = "dicom"

    def __init__(self, ds: Any, source: str, *, salt: str | None = None):
        self.ds = ds
        self.source = source
        if "PixelData" not in ds:
            if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
                raise InputError("unsupported_format", "float pixel data is not an ultrasound image", source=source)
            if "Rows" in ds or len(ds) == 0:  # an image header without pixels, or nothing: truncated
                raise InputError("unreadable", "the image has no Pixel Data (truncated file?)", source=source)
            raise InputError("unsupported_format", "the DICOM object has no image (no Pixel Data)", source=source)
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
        if ts is None:
            # files without a meta header: pydicom guessed the encoding while parsing
            from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

            implicit, little = ds.original_encoding
            if implicit:
                ts = ImplicitVRLittleEndian
            else:
                ts = ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
            ds.file_meta.TransferSyntaxUID = ts
        self.transfer_syntax = str(ts)
        self.rows = _require_int(ds, "Rows", source)
        self.columns = _require_int(ds, "Columns", source)
        self.samples = _require_int(ds, "SamplesPerPixel", source)
        self.bits_allocated = _require_int(ds, "BitsAllocated", source)
        self.bits_stored = int(ds.get("BitsStored") or self.bits_allocated)
        self.signed = int(ds.get("PixelRepresentation") or 0) == 1
        photometric = _str(ds, "PhotometricInterpretation")
        if photometric is None:
            raise InputError("unreadable", "the image has no PhotometricInterpretation", source=source)
        self.photometric = photometric.upper()
        nf = ds.get("NumberOfFrames")
        self.n_frames = 1 if nf is None or nf == "" else int(nf)
        if self.rows <= 0 or self.columns <= 0 or self.n_frames <= 0:
            raise InputError("empty", f"the image is empty ({self.rows}x{self.columns}, {self.n_frames} frames)",
                             source=source)
        if self.photometric not in _PHOTOMETRICS:
            raise InputError("unsupported_photometric",
                             f"photometric interpretation {self.photometric!r} is not supported "
                             f"(supported: {', '.join(sorted(_PHOTOMETRICS))})", source=source)
        if self.bits_allocated not in (8, 16):
            raise InputError("unsupported_format",
                             f"{self.bits_allocated}-bit pixels are not supported (8 or 16 bits)", source=source)
        if not 1 <= self.bits_stored <= self.bits_allocated:
            raise InputError("unreadable", f"BitsStored {self.bits_stored} does not fit BitsAllocated "
                             f"{self.bits_allocated}", source=source)
        want_samples = 1 if self.photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else 3
        if self.samples != want_samples:
            raise InputError("unreadable", f"{self.photometric} needs SamplesPerPixel {want_samples}, "
                             f"the file says {self.samples}", source=source)
        self.shape = (self.rows, self.columns)
        self.modality = _str(ds, "Modality")
        self.sop_class = _str(ds, "SOPClassUID")
        self.patient_hash = hash_patient_id(_str(ds, "PatientID"), salt=salt)
        self.regions: list[UsRegion] = parse_regions(ds, self.shape)
        self.spacing_cm = self._fallback_spacing()
        self.notes: list[str] = []

    def check_frame_count(self) -> None:
        """NumberOfFrames must fit the Pixel Data that is actually there.

        Native data holds at least Rows x Columns x (BitsAllocated / 8) bytes a
        frame, encapsulated data at least one 8-byte item a frame, so a header
        claiming more frames than the file can hold (a cheap way to make the
        reader plan for 10^8 frames) is refused (``unreadable``) before
        anything is sized by it.  :func:`thyrofast.read` calls it right after
        the memory guard.
        """
        from pydicom.uid import UID

        try:
            n_bytes = len(self.ds.PixelData)
        except TypeError:
            return
        uid = UID(self.transfer_syntax)
        native = uid.is_transfer_syntax and not uid.is_encapsulated  # unknown syntaxes: the loose bound
        per_frame = 8 if not native else self.rows * self.columns * (self.bits_allocated // 8)
        most = n_bytes // max(per_frame, 1)
        if self.n_frames > most:
            raise InputError("unreadable", f"NumberOfFrames is {self.n_frames}, but the {n_bytes} bytes of Pixel Data "
                             f"hold at most {most} frame(s) (truncated file or corrupt header)", source=self.source)

    def _fallback_spacing(self) -> tuple[float, float] | None:
        # (0028,0030) PixelSpacing is [row (dy), column (dx)] in mm; ultrasound rarely has it
        ps = self.ds.get("PixelSpacing")
        try:
            dy, dx = (float(v) / 10.0 for v in ps)
        except (TypeError, ValueError):
            return None
        if not (np.isfinite(dx) and np.isfinite(dy)) or dx <= 0 or dy <= 0:
            return None
        return (dx, dy)

    # ---- memory guard ------------------------------------------------------
    @property
    def bytes_per_frame(self) -> int:
        """Bytes one decoded output frame takes (after palette expansion)."""
        out_bytes = 1 if self.bits_allocated == 8 else 2
        samples = self.samples
        if self.photometric == "PALETTE COLOR":
            samples = 3
            desc = self.ds.get("RedPaletteColorLookupTableDescriptor")
            try:
                out_bytes = max(out_bytes, 2 if int(desc[2]) > 8 else 1)
            except (TypeError, ValueError, IndexError):
                out_bytes = 2
        # pydicom decodes into a buffer of BitsAllocated before we convert
        return self.rows * self.columns * samples * max(out_bytes, self.bits_allocated // 8)

    # ---- decoding ----------------------------------------------------------
    def _decoder(self) -> Any:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(self.transfer_syntax)
        except NotImplementedError:
            raise InputError("unsupported_transfer_syntax",
                             f"transfer syntax {self.transfer_syntax} cannot be decoded", source=self.source) from None
        if not decoder.is_available:
            pkg = DECODER_PACKAGES.get(self.transfer_syntax, "a pydicom pixel data plugin")
            raise InputError("missing_decoder",
                             f"no decoder is installed for {decoder.UID.name} ({self.transfer_syntax}); "
                             f"install {pkg} (pip install \"thyrofast[dicom]\" installs python-gdcm and "
                             f"pylibjpeg)", source=self.source)
        return decoder

    def iter_frames(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode the frames at ``indices`` one at a time, converted for the core."""
        decoder = self._decoder()
        plugin = ""
        if self.transfer_syntax == "1.2.840.10008.1.2.4.50" and "pillow" in decoder.available_plugins:
            plugin = "pillow"  # ~5x faster than GDCM for baseline JPEG
        # raw: YBR stays YBR here and _convert turns it into RGB (faster than pydicom's NumPy path)
        it = decoder.iter_array(self.ds, indices=indices, as_rgb=False, decoding_plugin=plugin)
        check = self.transfer_syntax in _CODESTREAM_TS
        for idx in indices:
            if check:  # before the decoder sees the frame: it allocates what the codestream says
                self.check_codestream(idx)
            arr, meta = next(it)
            yield idx, self._convert(arr, str(meta.get("photometric_interpretation", self.photometric)))

    def encoded_frame(self, index: int) -> bytes:
        """The encapsulated bytes of frame ``index``, found as pydicom's decoder finds them."""
        from pydicom.encaps import get_frame

        ds = self.ds
        ext = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
            if len(ext[0]) != len(ext[1]):
                ext = None  # pydicom's runner drops an inconsistent table the same way
        return get_frame(ds.PixelData, index, number_of_frames=self.n_frames, extended_offsets=ext)

    def check_codestream(self, index: int) -> None:
        """Refuse frame ``index`` when its codestream's own size differs from Rows x Columns x Samples.

        JPEG, JPEG-LS and JPEG 2000 decoders size their buffers from the frame
        header inside the codestream (SOFn / SOF55 / SIZ), which the memory
        guard never saw; a 150 KB file whose SIZ says 20000 x 20000 would
        otherwise make OpenJPEG allocate gigabytes.
        """
        try:
            data = self.encoded_frame(index)
        except Exception as exc:  # pydicom's own errors on a broken item structure
            raise InputError("unreadable", f"cannot find frame {index} in the Pixel Data "
                             f"({type(exc).__name__}: {exc})", source=self.source) from None
        try:
            info = codestream_info(data, self.transfer_syntax)
        except CodestreamError as exc:
            raise InputError("unreadable", f"frame {index}: unreadable codestream header ({exc})",
                             source=self.source) from None
        if info is None:
            return
        if (info.rows, info.columns, info.components) != (self.rows, self.columns, self.samples):
            raise InputError("frame_size_mismatch",
                             f"frame {index}'s {info.kind} codestream is {info.rows}x{info.columns} with "
                             f"{info.components} component(s), the header says {self.rows}x{self.columns} with "
                             f"{self.samples}", source=self.source)
        if info.tiles > J2K_MAX_TILES:
            raise InputError("unreadable", f"frame {index}: {info.tiles} JPEG 2000 tiles, more than a codestream "
                             f"can index ({J2K_MAX_TILES})", source=self.source)

    def _convert(self, arr: np.ndarray, photometric: str) -> np.ndarray:
        photometric = photometric.upper()
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            arr = self._unsigned(arr)
            if photometric == "MONOCHROME1":
                arr = (((1 << self.bits_stored) - 1) - arr.astype(np.int32)).clip(0).astype(arr.dtype)
            return self._narrow(arr)
        if photometric == "PALETTE COLOR":
            return self._apply_palette(arr)
        if photometric in ("YBR_FULL", "YBR_FULL_422"):
            arr = _ybr_full_to_rgb(arr)
            photometric = "RGB"
        if photometric == "RGB" or photometric in ("YBR_RCT", "YBR_ICT"):
            # J2K decoders undo RCT/ICT themselves; pydicom then reports RGB
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise InputError("unreadable", f"RGB data decoded to shape {arr.shape}", source=self.source)
            return self._narrow(self._unsigned(arr))
        raise InputError("unsupported_photometric", f"decoded photometric {photometric!r} is not supported",
                         source=self.source)

    # ---- palette -----------------------------------------------------------
    def _palette(self) -> tuple[np.ndarray, int]:
        """(3, entries) lookup table and its first mapped value; cached."""
        if getattr(self, "_lut", None) is not None:
            return self._lut
        from pydicom.uid import UID

        ds = self.ds
        desc = ds.get("RedPaletteColorLookupTableDescriptor")
        if desc is None or len(desc) != 3:
            raise InputError("unreadable", "PALETTE COLOR without a valid lookup table descriptor", source=self.source)
        n = int(desc[0]) or 65536
        first = int(desc[1])
        nominal = int(desc[2])
        if not 1 <= n <= 65536 or nominal not in (8, 16):
            raise InputError("unreadable", f"bad palette descriptor {list(desc)}", source=self.source)
        little = UID(self.transfer_syntax).is_little_endian
        luts = []
        for c in ("Red", "Green", "Blue"):
            plain = ds.get(f"{c}PaletteColorLookupTableData")
            seg = ds.get(f"Segmented{c}PaletteColorLookupTableData")
            if plain is not None:
                lut = _lut_values(plain, n, nominal, little)
            elif seg is not None:
                lut = _expand_segmented(_lut_words(seg, nominal, little))
            else:
                raise InputError("unreadable", f"PALETTE COLOR without {c.lower()} lookup table data",
                                 source=self.source)
            if lut is None or len(lut) == 0:
                raise InputError("unreadable", f"{c.lower()} palette data does not match its descriptor",
                                 source=self.source)
            luts.append(lut)
        m = min(len(v) for v in luts)
        if any(len(v) != m for v in luts):
            raise InputError("unreadable", "palette tables differ in length", source=self.source)
        table = np.stack(luts).astype(np.uint32)
        # 8-bit colors stored in 16-bit entries (v * 256 or v * 257) come out as uint8
        if table.max(initial=0) <= 255 and nominal == 8:
            table = table.astype(np.uint8)
        elif np.all(table % 257 == 0):
            table = (table // 257).astype(np.uint8)
        elif np.all((table & 0xFF) == 0):
            table = (table >> 8).astype(np.uint8)
        else:
            table = table.clip(0, 65535).astype(np.uint16)
        self._lut = (np.ascontiguousarray(table.T), first)
        return self._lut

    def _apply_palette(self, arr: np.ndarray) -> np.ndarray:
        table, first = self._palette()
        idx = arr.astype(np.int64) - first
        np.clip(idx, 0, len(table) - 1, out=idx)  # below first / past the end: the end entries (PS3.3 C.7.6.3.1.5)
        return table[idx]

    def _unsigned(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.kind == "i":
            # signed gray: shift the stored range to start at 0, keeping every level
            off = 1 << (self.bits_stored - 1)
            wide = arr.astype(np.int32) + off
            top = (1 << self.bits_stored) - 1
            return wide.clip(0, top).astype(np.uint8 if self.bits_stored <= 8 else np.uint16)
        return arr

    def _narrow(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype == np.uint8:
            return arr
        if self.bits_stored <= 8:
            return arr.clip(0, 255).astype(np.uint8)
        if arr.dtype != np.uint16:
            return arr.clip(0, 65535).astype(np.uint16)
        return arr


_DEFLATED = "1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 1 << 22


def _deflated_start(data: bytes, force: bool) -> int | None:
    """Offset of the deflated data set when the file meta says Deflated Explicit VR LE, else None."""
    if _DEFLATED.encode() not in data:
        return None  # the meta group is never deflated: its TransferSyntaxUID is plain text
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fp = io.BytesIO(data)
    read_preamble(fp, force)  # as pydicom.dcmread reads the file
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return fp.tell()


def _check_inflated_size(data: bytes, start: int, max_bytes: int, source: str) -> None:
    """A deflated data set must inflate to at most ``max_bytes``: counted in bounded chunks
    before pydicom inflates it whole (zlib reaches ~1000:1, so a 2 MB file can hold 2 GB)."""
    import zlib

    if (len(data) - start) * 1032 <= max_bytes:
        return  # deflate cannot expand more than ~1032:1
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)[start:]
    total = 0
    # input in 64 KB pieces, output in 4 MB pieces: memory and copying stay bounded
    for pos in range(0, len(view), 1 << 16):
        buf: Any = view[pos:pos + (1 << 16)]
        while buf:
            try:
                out = d.decompress(buf, _INFLATE_CHUNK)
            except zlib.error:
                return  # corrupt: pydicom reports it
            total += len(out)
            if total > max_bytes:
                raise InputError("too_large", f"the deflated data set inflates to more than the "
                                 f"{max_bytes / 2**20:.0f} MiB limit (raise max_bytes to allow)", source=source)
            if d.eof:
                return
            buf = d.unconsumed_tail


def open_dicom(data: bytes, source: str, *, force: bool = False, salt: str | None = None,
               max_bytes: int = 1 << 30) -> DicomSource:
    """Parse a DICOM file's bytes (pixel data still encoded).

    A Deflated Explicit VR Little Endian data set is first inflated in bounded
    chunks and refused (``too_large``) when it would exceed ``max_bytes``.
    pydicom's warnings about non-conformant files are left to the caller
    (:func:`thyrofast.read` records them in ``Frame.notes``).
    """
    try:
        start = _deflated_start(data, force)
    except Exception:
        start = None  # pydicom's own parse below says what is wrong with the meta group
    if start is not None:
        _check_inflated_size(data, start, max_bytes, source)
    try:
        ds = _parse(data, force=force)
    except MemoryError:
        raise InputError("too_large", "the DICOM header asks for more memory than available", source=source) from None
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise InputError("unreadable", f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                         source=source) from None
    try:
        return DicomSource(ds, source, salt=salt)
    except InputError:
        raise
    except Exception as exc:  # malformed values surface as ValueError/TypeError/... on access
        raise InputError("unreadable", f"malformed DICOM image header ({type(exc).__name__}: {exc})",
                         source=source) from None

def _lut_words(value: Any, nominal: int, little: bool) -> np.ndarray:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if nominal == 16:
            b = b[: len(b) // 2 * 2]
            return np.frombuffer(b, dtype="<u2" if little else ">u2").astype(np.int64)
        return np.frombuffer(b, dtype=np.uint8).astype(np.int64)  # 8-bit tables: one byte a word
    vals = [value] if isinstance(value, (int, np.integer)) else list(value)
    return np.asarray(vals, dtype=np.int64)


def _lut_values(value: Any, n: int, nominal: int, little: bool) -> np.ndarray | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) >= 2 * n:  # 16-bit entries (also 8-bit values stored in 16 bits)
            return np.frombuffer(b[: 2 * n], dtype="<u2" if little else ">u2").astype(np.int64)
        if len(b) >= n:  # 8-bit entries, padded to even length
            return np.frombuffer(b[:n], dtype=np.uint8).astype(np.int64)
        return None
    vals = _lut_words(value, nominal, little)
    return vals[:n] if len(vals) >= n else None


_MAX_LUT = 65536


def _expand_segmented(words: np.ndarray) -> np.ndarray | None:
    """Expand a segmented palette LUT (PS3.3 C.7.9.2): discrete and linear segments.

    Indirect segments (opcode 2, practically unused) are refused, and the output
    is capped at 65536 entries, so a hostile table cannot blow up.
    """
    out: list[int] = []
    off, n = 0, len(words)
    while off + 1 < n:
        op, length = int(words[off]), int(words[off + 1])
        off += 2
        if op == 0:
            out.extend(int(v) for v in words[off:off + length])
            off += length
        elif op == 1:
            if not out or off >= n:
                return None
            y0, y1 = out[-1], int(words[off])
            off += 1
            out.extend(int(round(y0 + (y1 - y0) * (k + 1) / length)) for k in range(length))
        else:
            return None
        if len(out) > _MAX_LUT:
            return None
    return np.asarray(out, dtype=np.int64)


def _ybr_full_to_rgb(arr: np.ndarray) -> np.ndarray:
    """YBR_FULL (JPEG/JFIF full-range YCbCr) -> RGB; Pillow's C conversion for 8-bit."""
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(arr), mode="YCbCr").convert("RGB")).copy()
    from pydicom.pixels import convert_color_space

    return convert_color_space(arr, "YBR_FULL", "RGB")
