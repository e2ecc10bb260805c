"""Ordinary image files (PNG, JPEG, BMP, TIFF) via Pillow.

Only those four formats are opened, whatever the file is called; Pillow's
decompression-bomb check is an error here (``too_large``), and the memory
guard sees width x height x bands x bytes before any pixel is decoded.

Output: 8-bit gray -> ``(H, W)`` uint8; 16-bit gray -> ``(H, W)`` uint16;
RGB / RGBA / CMYK / YCbCr / palette -> ``(H, W, 3)`` uint8 (alpha dropped);
1-bit -> uint8 0/255.  Multi-page TIFFs give one frame per page.
"""
from __future__ import annotations

import io
import warnings
from typing import Iterator

import numpy as np

from ..errors import InputError

__all__ = ["ImageSource", "open_image", "FORMATS"]

FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
_GRAY16 = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageSource:
    def __init__(self, im, source: str):
        self.im = im
        self.source = source
        self.format = str(im.format or "").lower()
        self.photometric = im.mode
        self.n_frames = int(getattr(im, "n_frames", 1) or 1)
        w, h = im.size
        self.shape = (int(h), int(w))
        if h <= 0 or w <= 0:
            raise InputError("empty", "the image has no pixels", source=source)
        self.modality = None
        self.sop_class = None
        self.transfer_syntax = None
        self.patient_hash = None
        self.regions = []
        self.spacing_cm = None
        self.notes: list[str] = []

    @property
    def bytes_per_frame(self) -> int:
        # conservative: Pillow holds "I" as int32 and expands P/RGB to 4 bytes a pixel
        h, w = self.shape
        return h * w * 4

    def iter_frames(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        for idx in indices:  # read() turns DecompressionBombWarning into an error around this
            if idx:
                self.im.seek(idx)
            yield idx, self._convert(self.im)

    def _convert(self, im) -> np.ndarray:
        mode = im.mode
        if mode in _GRAY16:
            a = np.asarray(im)
            if a.dtype.kind == "f" or a.min(initial=0) < 0 or a.max(initial=0) > 65535:
                raise InputError("unsupported_format", f"{mode} pixels outside 0..65535", source=self.source)
            a = a.astype(np.uint16)
            return np.ascontiguousarray(a)
        if mode == "L":
            return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
        if mode == "1":
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
        if mode == "LA":
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
        if mode == "F":
            raise InputError("unsupported_format", "floating-point images are not supported", source=self.source)
        if mode in ("P", "PA") and "transparency" in im.info:
            im = im.convert("RGBA")
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(rgb)


def open_image(data: bytes, source: str) -> ImageSource:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError("too_large", f"image refused by the decompression-bomb check: {exc}",
                             source=source) from None
        except UnidentifiedImageError:
            raise InputError("unreadable", f"not a readable {'/'.join(FORMATS)} image", source=source) from None
        except Exception as exc:
            raise InputError("unreadable", f"cannot open the image ({type(exc).__name__}: {exc})",
                             source=source) from None
    try:
        return ImageSource(im, source)
    except InputError:
        raise
    except Exception as exc:
        raise InputError("unreadable", f"cannot read the image header ({type(exc).__name__}: {exc})",
                         source=source) from None
