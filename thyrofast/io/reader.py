"""``thyrofast.read(path)``: one image or DICOM file -> its frames, or an InputError."""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from .frame import Frame
from .regions import MIN_REGION_PX, detect_panes, select_tissue_region
from .regular import read_regular
from .schema import CROP_MODES

__all__ = ["read", "DEFAULT_MAX_BYTES", "FRAME_OVERHEAD_BYTES", "read_options", "count_frames"]

#: Memory guard: decoded bytes (rows x cols x frames x samples x bytes) above this are refused.
DEFAULT_MAX_BYTES = 1 << 30

_CROPS = CROP_MODES
_DOPPLER = ("flag", "reject")
_COLORS = ("auto", "rgb", "gray")
_DICOM_EXTS = {"", ".dcm", ".dicom", ".dic", ".ima"}
_OPTION_NAMES = ("crop", "doppler", "color", "frames", "stride", "max_bytes", "timeout", "salt", "mask_annotations")


def read(path: str | os.PathLike, *, crop: str = "auto", doppler: str = "flag", color: str = "auto",
         frames: int | Iterable[int] | None = None, stride: int = 1, max_bytes: int = DEFAULT_MAX_BYTES,
         timeout: float | None = None, salt: str | None = None, mask_annotations: bool = False) -> list[Frame]:
    """Read the frames of one PNG / JPEG / BMP / TIFF / DICOM file.

    Parameters
    ----------
    crop : "auto" | "detect" | "regions" | "none" | "panes"
        ``auto``: crop to the largest B-mode tissue region of the DICOM
        Sequence of Ultrasound Regions when the file has one, else keep the full
        frame.  ``detect``: like auto, but without regions find the ultrasound
        field automatically (black margins, burned-in text).  ``regions``: the
        file must have a tissue region.  ``none``: never crop.  A tissue region
        smaller than ``MIN_REGION_PX`` x ``MIN_REGION_PX`` (32 x 32) pixels
        after clipping to the image (e.g. the degenerate (0,0,0,0)) is never
        cropped to: ``auto`` and ``detect`` detect the field instead
        (``region_source == "detected"``, a ``"region fallback: ..."`` note),
        ``regions`` raises ``no_tissue_region``.  A detected split-screen
        screenshot (several B-mode panes, :func:`thyrofast.io.detect_panes`)
        is cropped to the box around all its panes, with a ``"split screen:
        N panes ..."`` note naming each pane's box: no pane is dropped.
        ``panes``: like ``detect``, but every detected pane is its own frame
        (one file -> N frames per decoded frame, frame-major, panes left to
        right), ``frame.pane`` its 0-based index and ``frame.region`` its box;
        a one-pane image gives ``detect``'s frame (the same region and
        pixels) with ``pane == 0``, and so does a file cropped to its DICOM
        tissue region.  Panes that touch (no black gap) are one bright field:
        it is cut at the seams between them
        (:func:`thyrofast.io.regions.split_at_seams`); a pane still at least
        ``WIDE_FIELD_RATIO`` times wider than high is kept whole and flagged
        with a ``"wide field: ..."`` note.
    doppler : "flag" | "reject"
        Files with Doppler / color-flow regions, and frames whose tissue field
        is at least 1% strongly colored pixels (a color / power Doppler overlay
        in a screenshot), are read and marked ``frame.doppler = True`` (flag)
        or refused with code ``doppler_region`` (reject).
    color : "auto" | "rgb" | "gray"
        ``auto``: RGB whose three channels are equal inside the crop becomes
        ``(H, W)`` gray (lossless); real color stays ``(H, W, 3)``.  ``rgb``:
        always ``(H, W, 3)``.  ``gray``: always ``(H, W)`` (BT.601 luma).
    frames, stride
        Which frames of a cine (0-based indices; default all), then every
        ``stride``-th of them.
    max_bytes
        Memory guard: files whose decoded frames (plus ``FRAME_OVERHEAD_BYTES``
        of bookkeeping a frame) would need more are refused with code
        ``too_large`` before any pixel is decoded, and before anything sized
        by the header's frame count exists; a deflated data set must inflate
        to at most ``max_bytes`` too (checked in bounded chunks).  A
        NumberOfFrames the Pixel Data cannot hold is ``unreadable``; a JPEG /
        JPEG-LS / JPEG 2000 frame whose own codestream size differs from
        Rows x Columns is ``frame_size_mismatch``, refused before its decoder
        runs.
    timeout
        Seconds; when given, decode in a child process and give up with code
        ``timeout`` (for untrusted input in long-running services).
    salt
        Secret mixed into the patient-id hash (default ``$THYROFAST_ID_SALT``).
    mask_annotations
        Replace burned-in annotations inside the crop (saturated caliper marks
        and text glyphs over darker tissue; colored marks unless the frame is
        a color-Doppler image) by the median of the surrounding tissue
        (:func:`thyrofast.io.annotations.mask_annotations`), with an
        ``"annotations masked: N px"`` note.  Off by default: pixels unchanged.

    Returns a list of :class:`Frame`; raises :class:`thyrofast.InputError`
    (never another exception type) for any problem with the file itself.
    """
    opts = read_options(crop=crop, doppler=doppler, color=color, frames=frames, stride=stride,
                        max_bytes=max_bytes, timeout=timeout, salt=salt, mask_annotations=mask_annotations)
    path = os.fspath(path)
    if opts["timeout"] is not None:
        from ._isolate import call_with_timeout

        return call_with_timeout(_read_guarded, (path, opts), timeout=opts["timeout"], source=path)
    return _read_guarded(path, opts)


def read_options(**kw: Any) -> dict[str, Any]:
    """Validate :func:`read` keyword options (TypeError/ValueError on misuse)."""
    unknown = set(kw) - set(_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown read option(s): {sorted(unknown)}")
    o = {"crop": "auto", "doppler": "flag", "color": "auto", "frames": None, "stride": 1,
         "max_bytes": DEFAULT_MAX_BYTES, "timeout": None, "salt": None, "mask_annotations": False}
    o.update(kw)
    for name, allowed in (("crop", _CROPS), ("doppler", _DOPPLER), ("color", _COLORS)):
        if o[name] not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {o[name]!r}")
    if not isinstance(o["mask_annotations"], (bool, np.bool_)):
        raise ValueError(f"mask_annotations must be True or False, got {o['mask_annotations']!r}")
    o["mask_annotations"] = bool(o["mask_annotations"])
    if isinstance(o["stride"], bool) or not isinstance(o["stride"], (int, np.integer)) or o["stride"] < 1:
        raise ValueError(f"stride must be an integer >= 1, got {o['stride']!r}")
    o["stride"] = int(o["stride"])
    if isinstance(o["max_bytes"], bool) or not isinstance(o["max_bytes"], (int, np.integer)) or o["max_bytes"] < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {o['max_bytes']!r}")
    o["max_bytes"] = int(o["max_bytes"])
    if o["timeout"] is not None:
        t = float(o["timeout"])
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {o['timeout']!r}")
        o["timeout"] = t
    fr = o["frames"]
    if fr is not None:
        seq = [fr] if isinstance(fr, (int, np.integer)) else list(fr)
        if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in seq):
            raise ValueError(f"frames must be non-negative integer indices, got {fr!r}")
        o["frames"] = [int(i) for i in seq]
    return o


def _read_guarded(path: str, opts: dict[str, Any]) -> list[Frame]:
    from PIL import Image

    try:
        # pydicom/Pillow warn about non-conformant files: record them as notes instead of
        # printing; Pillow's decompression-bomb warning is an error (code too_large)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            frames = _read(path, opts)
        notes = []
        for w in caught:
            msg = " ".join(str(w.message).split())[:200]
            if msg and msg not in notes:
                notes.append(msg)
        if notes:
            for f in frames:
                f.notes = f.notes + tuple(notes[:5])
        return frames
    except Image.DecompressionBombWarning as exc:
        raise InputError("too_large", f"image refused by the decompression-bomb check: {exc}", source=path) from None
    except InputError:
        raise
    except MemoryError:
        raise InputError("too_large", "ran out of memory decoding the file", source=path) from None
    except RecursionError:
        raise InputError("unreadable", "the file is nested too deeply to parse", source=path) from None
    except Exception as exc:  # third-party decoders raise anything on corrupt data
        raise InputError("unreadable", f"cannot decode the file ({type(exc).__name__}: {exc})", source=path) from None


def _sniff(data: bytes, path: str) -> str | None:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff") or data.startswith(b"BM")
            or data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image"
    ext = os.path.splitext(path)[1].lower()
    if ext in _DICOM_EXTS or ext[1:].isdigit():
        return "dicom-raw"  # DICOM without the 128-byte preamble (old exports)
    return None


def _open(path: str, opts: dict[str, Any]):
    # regular files only (a FIFO or /dev/zero would block or never end), at most stat's size
    data = read_regular(path, opts["max_bytes"])
    if not data:
        raise InputError("empty", "the file is empty", source=path)
    kind = _sniff(data, path)
    if kind is None:
        raise InputError("unsupported_format", "not a PNG, JPEG, BMP, TIFF or DICOM file", source=path)
    if kind == "image":
        from .images import open_image

        return open_image(data, path)
    from .dicom import open_dicom

    return open_dicom(data, path, force=(kind == "dicom-raw"), salt=opts["salt"], max_bytes=opts["max_bytes"])


#: Bookkeeping counted per frame on top of its pixels (Frame object, array header,
#: index lists), so a header asking for 10^8 tiny frames meets the guard too.
FRAME_OVERHEAD_BYTES = 1024


def _count(n: int, opts: dict[str, Any], source: str) -> int:
    """How many frames ``opts`` selects from a file of ``n``: arithmetic only, nothing sized by ``n``."""
    if opts["frames"] is None:
        return -(-n // opts["stride"])
    bad = [i for i in opts["frames"] if i >= n]
    if bad:
        raise InputError("frame_out_of_range", f"frame index {bad[0]} requested, the file has {n} frame(s)",
                         source=source)
    return len(opts["frames"][::opts["stride"]])


def _indices(n: int, opts: dict[str, Any], source: str) -> list[int]:
    """The selected frame indices; only call after the guard has accepted ``_count``."""
    idx = opts["frames"] if opts["frames"] is not None else range(n)
    idx = list(idx[::opts["stride"]])
    if not idx:
        raise InputError("empty", "no frames selected", source=source)
    return idx


#: A field with at least this share of strongly colored pixels is flagged as Doppler.
COLOR_DOPPLER_FRACTION = 0.01


def _color_fraction(a: np.ndarray) -> float:
    """Share of pixels whose channels differ by more than 40/255 of full scale."""
    if a.ndim != 3 or a.size == 0:
        return 0.0
    lim = 40 if a.dtype == np.uint8 else 40 * 257
    spread = a.max(axis=2).astype(np.int32) - a.min(axis=2)
    return float(np.count_nonzero(spread > lim)) / spread.size


def _to_color(a: np.ndarray, color: str) -> np.ndarray:
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2)) if color == "rgb" else a
    if color == "rgb":
        return a
    if color == "auto":
        if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]):
            return np.ascontiguousarray(a[..., 0])
        return a
    top = 255 if a.dtype == np.uint8 else 65535
    y = a[..., 0] * np.float32(0.299) + a[..., 1] * np.float32(0.587) + a[..., 2] * np.float32(0.114)
    return np.clip(np.rint(y), 0, top).astype(a.dtype)


def _read(path: str, opts: dict[str, Any]) -> list[Frame]:
    src = _open(path, opts)
    h, w = src.shape
    # the guard sees every header-derived size before anything proportional to it exists
    count = _count(src.n_frames, opts, path)
    need = (src.bytes_per_frame + FRAME_OVERHEAD_BYTES) * count
    if need > opts["max_bytes"]:
        raise InputError("too_large",
                         f"{count} frame(s) of {h}x{w} need {need / 2**20:.0f} MiB decoded, over the "
                         f"{opts['max_bytes'] / 2**20:.0f} MiB limit (raise max_bytes to allow)", source=path)
    check_frame_count = getattr(src, "check_frame_count", None)  # DICOM: the frames must fit the data
    if check_frame_count is not None:
        check_frame_count()
    idx = _indices(src.n_frames, opts, path)

    doppler_regions = [r for r in src.regions if r.is_doppler]
    if doppler_regions and opts["doppler"] == "reject":
        raise InputError("doppler_region", "the file has Doppler / color-flow regions", source=path)
    notes = list(src.notes)
    box, region_source, clipped, spacing = (0, 0, w, h), "full", False, src.spacing_cm
    tissue = select_tissue_region(src.regions)
    if tissue is not None:
        spacing = tissue.spacing_cm or spacing
    crop = opts["crop"]
    detect = crop in ("detect", "panes")
    if crop != "none" and src.regions:
        small = select_tissue_region(src.regions, min_size=1) if tissue is None else None
        if tissue is None and small is None:
            raise InputError("no_tissue_region", "the ultrasound regions contain no 2D tissue region", source=path)
        if tissue is None:
            # a tissue region, but too small to be one (e.g. all zeros): never crop to it
            what = (f"the ultrasound tissue region {small.box} is smaller than the "
                    f"{MIN_REGION_PX}x{MIN_REGION_PX} px minimum")
            if crop == "regions":
                raise InputError("no_tissue_region", what, source=path)
            notes.append(f"region fallback: {what}; the ultrasound field was detected instead")
            detect = True
        else:
            box, region_source, clipped = tissue.box, "dicom", tissue.clipped
        n_tissue = sum(1 for r in src.regions if r.is_tissue and r.area > 0)
        if n_tissue > 1:
            notes.append(f"{n_tissue} tissue regions; the largest is used")
    elif crop == "regions":
        raise InputError("no_tissue_region", "the file has no ultrasound regions", source=path)
    if clipped:
        notes.append("ultrasound region ran past the image and was clipped")

    out: list[Frame] = []
    per_pane = crop == "panes"
    pane_boxes: list[tuple[int, int, int, int]] | None = None  # panes mode: every pane of the screen
    for i, full in src.iter_frames(idx):
        if full.shape[:2] != (h, w):
            raise InputError("unreadable", f"frame {i} decoded to {full.shape[:2]}, header says {(h, w)}",
                             source=path)
        if detect and region_source == "full" and not out:
            panes = detect_panes(full, source=path, split_touching=per_pane)
            box, region_source = panes[0], "detected"
            if per_pane:
                pane_boxes = panes
                if len(panes) > 1:
                    notes.append(f"split screen: {len(panes)} panes {', '.join(str(tuple(p)) for p in panes)}; "
                                 "one frame per pane")
                for p in panes:
                    _flag_wide(p, notes)
            elif len(panes) > 1:
                # a split-screen screenshot: keep every pane (never drop one), in one crop
                box = (min(p[0] for p in panes), min(p[1] for p in panes),
                       max(p[2] for p in panes), max(p[3] for p in panes))
                notes.append(f"split screen: {len(panes)} panes {', '.join(str(tuple(p)) for p in panes)}; "
                             "all are kept, in one crop")
        boxes = pane_boxes if pane_boxes is not None else [box]
        for k, b in enumerate(boxes):
            out.append(_frame(full, i, b, src, path, opts, region_source=region_source, clipped=clipped,
                              spacing=spacing, doppler_regions=bool(doppler_regions), notes=notes,
                              pane=k if per_pane else None))
    return out


#: In ``crop="panes"`` mode, a pane still at least this many times wider than high after the seam
#: search (:func:`thyrofast.io.regions.split_at_seams`) is flagged: it may be side-by-side panes
#: that touch and that the search could not tell apart.
WIDE_FIELD_RATIO = 1.8


def _flag_wide(box: tuple[int, int, int, int], notes: list[str]) -> None:
    x0, y0, x1, y1 = box
    ratio = (x1 - x0) / max(1, y1 - y0)
    if ratio >= WIDE_FIELD_RATIO:
        notes.append(f"wide field: {box} is {ratio:.1f} times wider than high; possibly side-by-side panes "
                     "with no gap between them, kept as one frame")


def _frame(full: np.ndarray, i: int, box: tuple[int, int, int, int], src: Any, path: str, opts: dict[str, Any], *,
           region_source: str, clipped: bool, spacing: Any, doppler_regions: bool, notes: list[str],
           pane: int | None) -> Frame:
    """One :class:`Frame`: ``full`` cropped to ``box``, the Doppler check, the color conversion."""
    h, w = full.shape[:2]
    x0, y0, x1, y1 = box
    crop_px = np.ascontiguousarray(full[y0:y1, x0:x1])
    colored = _color_fraction(crop_px)
    if colored >= COLOR_DOPPLER_FRACTION and opts["doppler"] == "reject":
        raise InputError("doppler_region", f"{colored:.1%} of the tissue field is colored "
                         "(color / power Doppler overlay?)", source=path)
    doppler = doppler_regions or colored >= COLOR_DOPPLER_FRACTION
    frame_notes = tuple(notes)
    if opts["mask_annotations"]:
        from .annotations import mask_annotations

        crop_px, n_masked = mask_annotations(crop_px, colored=not doppler)
        if n_masked:
            frame_notes += (f"annotations masked: {n_masked} px",)
    pix = _to_color(crop_px, opts["color"])
    return Frame(
        pixels=pix, source=path, frame_index=int(i), n_frames=src.n_frames, region=tuple(int(v) for v in box),
        region_source=region_source, region_clipped=clipped, original_shape=(h, w), spacing_cm=spacing,
        patient_hash=src.patient_hash, format=src.format, photometric=src.photometric,
        modality=src.modality, sop_class=src.sop_class, transfer_syntax=src.transfer_syntax,
        doppler=doppler, color_fraction=colored, notes=frame_notes, pane=pane,
    )


def count_frames(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Frames in a file, from its header only (cheap).

    The count is held to the memory guard (``FRAME_OVERHEAD_BYTES`` a frame at
    least, ``too_large``) and to the file's size (a frame takes at least one
    byte, ``unreadable``), so a header claiming 10^8 frames cannot make the
    caller index 10^8 items.
    """
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM" or os.path.splitext(path)[1].lower() in (".dcm", ".dicom", ""):
        import pydicom

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            nf = ds.get("NumberOfFrames")
            n = 1 if nf in (None, "") else max(1, int(nf))
        except Exception as exc:
            raise InputError("unreadable", f"cannot read the DICOM header ({type(exc).__name__})",
                             source=path) from None
        if n * FRAME_OVERHEAD_BYTES > max_bytes:
            raise InputError("too_large", f"the header claims {n} frames, over the memory guard of "
                             f"{max_bytes / 2**20:.0f} MiB", source=path)
        if n > os.path.getsize(path):
            raise InputError("unreadable", f"the header claims {n} frames, more than the file has bytes",
                             source=path)
        return n
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return 1  # read() will say what is wrong with it
