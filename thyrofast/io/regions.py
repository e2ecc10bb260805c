"""Where the tissue is: DICOM ultrasound regions, or a detected field in a screenshot.

Boxes are ``(x0, y0, x1, y1)`` half-open (``pixels[y0:y1, x0:x1]``) in the
coordinates of the full frame.  DICOM's (0018,6018-601E) region bounds are
inclusive, so ``x1 = RegionLocationMaxX1 + 1``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["UsRegion", "parse_regions", "select_tissue_region", "detect_field", "detect_panes",
           "split_at_seams", "DOPPLER_DATA_TYPES", "MIN_REGION_PX"]

# Region Spatial Format (0018,6012)
SPATIAL_2D = 1
SPATIAL_SPECTRAL = 3
# Region Data Type (0018,6014): 1 tissue, 2 color flow, 3 PW / 4 CW spectral
# Doppler, 5-7 Doppler mean / mode / max traces.
TISSUE = 1
DOPPLER_DATA_TYPES = frozenset({2, 3, 4, 5, 6, 7})
# Physical Units X/Y Direction (0018,6024/6026): 3 = cm
UNITS_CM = 3


@dataclasses.dataclass(frozen=True)
class UsRegion:
    box: tuple[int, int, int, int]  # clipped to the image, half-open
    clipped: bool
    spatial_format: int | None
    data_type: int | None
    spacing_cm: tuple[float, float] | None  # (dx, dy) when both directions are in cm

    @property
    def area(self) -> int:
        x0, y0, x1, y1 = self.box
        return max(0, x1 - x0) * max(0, y1 - y0)

    @property
    def is_tissue(self) -> bool:
        return self.spatial_format == SPATIAL_2D and self.data_type == TISSUE

    @property
    def is_doppler(self) -> bool:
        return self.data_type in DOPPLER_DATA_TYPES or self.spatial_format == SPATIAL_SPECTRAL


def _int(item: Any, keyword: str) -> int | None:
    v = item.get(keyword)
    if v is None or v == "":
        return None
    return int(v)


def _spacing(item: Any) -> tuple[float, float] | None:
    if _int(item, "PhysicalUnitsXDirection") != UNITS_CM or _int(item, "PhysicalUnitsYDirection") != UNITS_CM:
        return None
    dx, dy = item.get("PhysicalDeltaX"), item.get("PhysicalDeltaY")
    if dx is None or dy is None:
        return None
    dx, dy = abs(float(dx)), abs(float(dy))
    if not (np.isfinite(dx) and np.isfinite(dy)) or dx <= 0 or dy <= 0 or dx > 10 or dy > 10:
        return None  # absent, zero or absurd: better no spacing than a wrong one
    return (dx, dy)


def parse_regions(ds: Any, shape: tuple[int, int]) -> list[UsRegion]:
    """The (0018,6011) Sequence of Ultrasound Regions, boxes clipped to ``shape`` (H, W)."""
    seq = ds.get("SequenceOfUltrasoundRegions")
    if not seq:
        return []
    h, w = shape
    out = []
    for item in seq:
        coords = [_int(item, k) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                         "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(c is None for c in coords):
            continue
        x0, y0, x1, y1 = coords
        x1, y1 = x1 + 1, y1 + 1  # inclusive -> half-open
        cx0, cy0 = min(max(x0, 0), w), min(max(y0, 0), h)
        cx1, cy1 = min(max(x1, 0), w), min(max(y1, 0), h)
        out.append(UsRegion(
            box=(cx0, cy0, cx1, cy1),
            clipped=(cx0, cy0, cx1, cy1) != (x0, y0, x1, y1),
            spatial_format=_int(item, "RegionSpatialFormat"),
            data_type=_int(item, "RegionDataType"),
            spacing_cm=_spacing(item),
        ))
    return out


#: A tissue region narrower or lower than this (pixels, after clipping to the image)
#: is not a plausible B-mode field: (0,0,0,0) would crop the image to one pixel.
MIN_REGION_PX = 32


def select_tissue_region(regions: list[UsRegion], *, min_size: int = MIN_REGION_PX) -> UsRegion | None:
    """The largest 2D tissue region at least ``min_size`` x ``min_size`` px (first one on ties)."""
    best = None
    for r in regions:
        x0, y0, x1, y1 = r.box
        if r.is_tissue and x1 - x0 >= min_size and y1 - y0 >= min_size and (best is None or r.area > best.area):
            best = r
    return best


def _gray(pixels: np.ndarray) -> np.ndarray:
    a = np.asarray(pixels)
    return a.max(axis=2) if a.ndim == 3 else a  # colored overlays count as bright, like on screen


def _unit(a: np.ndarray, top: float) -> np.ndarray:
    return np.clip(a.astype(np.float32) / top, 0.0, 1.0)


def _grow(lit: np.ndarray, box: tuple[int, int, int, int], *, fill: float = 0.4) -> tuple[int, int, int, int]:
    """Extend the box over adjoining rows/columns that are mostly lit (not black).

    Deep tissue can be dark enough to fail the detection threshold, yet it is
    rarely exactly black, whereas screen margins are; a gap of black pixels
    stops the growth before text or rulers drawn next to the field.
    """
    h, w = lit.shape
    x0, y0, x1, y1 = box
    changed = True
    while changed:
        changed = False
        if y1 < h and lit[y1, x0:x1].mean() >= fill:
            y1, changed = y1 + 1, True
        if y0 > 0 and lit[y0 - 1, x0:x1].mean() >= fill:
            y0, changed = y0 - 1, True
        if x1 < w and lit[y0:y1, x1].mean() >= fill:
            x1, changed = x1 + 1, True
        if x0 > 0 and lit[y0:y1, x0 - 1].mean() >= fill:
            x0, changed = x0 - 1, True
    return x0, y0, x1, y1


def _field_components(pixels: np.ndarray, threshold: float, source: str | None):
    """The bright components of a screenshot at <= ~320 px: (lit, step, labels, boxes, sizes), largest first.

    ``boxes`` are full-resolution, not yet grown; ``lit`` is the full-resolution
    "not black" mask :func:`_grow` refines them with.
    """
    from scipy import ndimage

    a = _gray(pixels)
    h, w = a.shape
    low = 0.008  # "not black" for _grow
    # find the box at <= ~320 px on the long side (fast); _grow refines it at full resolution
    step = max(1, int(np.ceil(max(h, w) / 320)))
    if a.dtype == np.uint8:
        top = 255.0
        # per-level table: the same test as on the float image, without converting it
        lit = (_unit(np.arange(256, dtype=np.uint8), top) > low)[a]
    else:
        top = float(np.percentile(a.astype(np.float32), 99.5)) or 1.0
        lit = _unit(a, top) > low
    small = _unit(a[::step, ::step], top)
    # A 5x5 median removes 1-2 px text strokes and speckle holes alike.  Only its
    # threshold is used, and median > t exactly when >= 13 of the 25 values are
    # > t: a box count of the thresholded image (~10x faster than the median).
    bright = ((small * 255).astype(np.uint8) > threshold * 255).astype(np.float32)
    mask = (ndimage.uniform_filter(bright, size=5, mode="nearest") > 12.5 / 25).astype(np.uint8)
    # opening (min then max filter) removes what survives and is thinner than k:
    # bold text, rulers, grey bars
    k = max(7, int(round(min(small.shape) / 24))) | 1
    mask = ndimage.maximum_filter(ndimage.minimum_filter(mask, size=k), size=k).astype(bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no_tissue_region", "no ultrasound field found (the image is dark)", source=source)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    order = np.argsort(-sizes, kind="stable")  # largest first; ties: the lower label, as argmax
    objs = ndimage.find_objects(labels)
    boxes, out_sizes = [], []
    for j in order:
        sl = objs[j]
        boxes.append((sl[1].start * step, sl[0].start * step, min(w, sl[1].stop * step), min(h, sl[0].stop * step)))
        out_sizes.append(float(sizes[j]))
    return lit, boxes, out_sizes


def _check_size(box, shape, min_fraction, source):
    h, w = shape
    x0, y0, x1, y1 = box
    if (x1 - x0) * (y1 - y0) < min_fraction * h * w:
        raise InputError("no_tissue_region",
                         f"the largest bright area ({x1 - x0}x{y1 - y0} px) is too small to be an ultrasound field",
                         source=source)


def detect_field(pixels: np.ndarray, *, threshold: float = 0.05, min_fraction: float = 0.05,
                 source: str | None = None) -> tuple[int, int, int, int]:
    """Find the ultrasound field in a device screenshot; returns its box.

    Black margins are below ``threshold`` (a fraction of full scale).  Burned-in
    text, tick marks, calipers and thin bars are removed by a median filter and
    a morphological opening sized to the image, and the largest remaining bright
    component is the field.  Raises ``InputError('no_tissue_region')`` when that
    component covers less than ``min_fraction`` of the image.  A split-screen
    screenshot has several fields: :func:`detect_panes` finds them all.
    """
    lit, boxes, _ = _field_components(pixels, threshold, source)
    x0, y0, x1, y1 = _grow(lit, boxes[0])
    _check_size((x0, y0, x1, y1), lit.shape, min_fraction, source)
    return (int(x0), int(y0), int(x1), int(y1))


#: A second bright component is another B-mode pane (a split-screen screenshot)
#: when its area is at least this share of the largest one's ...
PANE_MIN_AREA_RATIO = 0.15
#: ... and it sits beside the largest, sharing at least this share of the
#: shorter one's rows.  Stacked components are not panes: below a B-mode
#: field sits a spectral Doppler strip, which must stay out of the crop.
PANE_MIN_OVERLAP = 0.5


def _overlap(a0: int, a1: int, b0: int, b1: int) -> float:
    return max(0, min(a1, b1) - max(a0, b0)) / max(1, min(a1 - a0, b1 - b0))


def detect_panes(pixels: np.ndarray, *, threshold: float = 0.05, min_fraction: float = 0.05,
                 source: str | None = None, split_touching: bool = False) -> list[tuple[int, int, int, int]]:
    """Every B-mode pane of a side-by-side (dual / split-screen) screenshot, left to right.

    Dual / split-screen displays show two (or more) fields side by side.  The
    bright components are found as in :func:`detect_field`; besides the largest,
    a component is a pane when its area is at least ``PANE_MIN_AREA_RATIO`` of
    the largest's, it shares at least ``PANE_MIN_OVERLAP`` of its rows with the
    largest (side by side; a component above or below, such as a spectral
    Doppler strip, is not a pane), and its grown box overlaps no other pane.  A single-field screenshot gives ``[detect_field(pixels)]``,
    unchanged.  Panes that touch (no black gap) are one component and stay one
    box here unless ``split_touching``: then each box at least ``SEAM_MIN_RATIO``
    times wider than high is cut at the seams :func:`split_at_seams` finds.
    """
    lit, boxes, sizes = _field_components(pixels, threshold, source)
    first = _grow(lit, boxes[0])
    _check_size(first, lit.shape, min_fraction, source)
    panes = [first]
    for box, size in zip(boxes[1:], sizes[1:]):
        if size < PANE_MIN_AREA_RATIO * sizes[0]:
            break  # largest first: the rest are smaller still
        bx0, by0, bx1, by1 = box
        fx0, fy0, fx1, fy1 = first
        if _overlap(by0, by1, fy0, fy1) < PANE_MIN_OVERLAP:
            continue  # not beside the main field: a thumbnail, or a spectral Doppler strip below it
        g = _grow(lit, box)
        if any(_overlap(g[0], g[2], p[0], p[2]) > 0 and _overlap(g[1], g[3], p[1], p[3]) > 0 for p in panes):
            continue  # grew into a pane already found (they touch at full resolution)
        if (g[2] - g[0]) * (g[3] - g[1]) < min_fraction * lit.shape[0] * lit.shape[1]:
            continue
        panes.append(g)
    if split_touching:
        panes = [q for p in panes for q in split_at_seams(pixels, p)]
    panes.sort(key=lambda b: (b[0], b[1]))
    return [tuple(int(v) for v in p) for p in panes]


#: :func:`split_at_seams` looks for a seam only in a field at least this many times wider than high ...
SEAM_MIN_RATIO = 1.2
#: ... a seam is where every column pair across it (up to 3 columns each side) correlates (over the
#: field's rows) below this, where nearby columns of one B-mode image correlate at ~0.8-0.99
#: (speckle is wider than a pixel) ...
SEAM_MAX_CORRELATION = 0.5
#: ... and each part is at least this many times as wide as the field is high.
SEAM_MIN_PART = 0.3
#: Columns are high-passed first: minus their running mean over this many rows.
SEAM_SMOOTH_ROWS = 15


def split_at_seams(pixels: np.ndarray, box: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """Cut a field made of side-by-side panes that touch (no black gap) at the seams; left to right.

    Nearby columns of one B-mode image are strongly correlated; across the
    seam between two independent images they are not (a thin bright line such
    as a dotted caliper decorrelates only itself: columns either side of it
    still correlate).  A box narrower than
    ``SEAM_MIN_RATIO`` times its height is returned as is; otherwise it is cut
    at its least correlated column pair when that correlation is below
    ``SEAM_MAX_CORRELATION`` and both parts are at least ``SEAM_MIN_PART``
    times the height wide, and each part is searched again.  Every part is
    trimmed to its own lit rows.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    hgt, wid = y1 - y0, x1 - x0
    if hgt <= 0 or wid < SEAM_MIN_RATIO * hgt:
        return [(x0, y0, x1, y1)]
    from scipy import ndimage

    a = _gray(pixels)[y0:y1, x0:x1].astype(np.float32)
    # keep the speckle, drop what changes slowly with depth (gain, layers such as the skin line):
    # two images of one neck share those, and would correlate across their seam
    a = a - ndimage.uniform_filter1d(a, SEAM_SMOOTH_ROWS, axis=0, mode="nearest")
    a = a - a.mean(axis=0)
    norm = np.sqrt((a * a).sum(axis=0))
    flat = norm < 1e-3  # flat columns (black, a bar) say nothing
    z = a / np.where(flat, 1.0, norm)
    lo = max(3, int(np.ceil(SEAM_MIN_PART * hgt)))
    if wid - 2 * lo < 1:
        return [(x0, y0, x1, y1)]
    # score[j]: the strongest correlation of a column j-2..j with a column j+1..j+3.  At a seam
    # (between columns j and j+1) every such pair spans two images; a thin bright line (a dotted
    # caliper, a scan line) decorrelates only its own column, so pairs that skip it stay correlated
    j = np.arange(lo - 1, wid - lo)
    score = np.full(j.shape, -np.inf, np.float32)
    for left in (0, 1, 2):
        for right in (1, 2, 3):
            c = (z[:, j - left] * z[:, j + right]).sum(axis=0)
            c[flat[j - left] | flat[j + right]] = 1.0
            score = np.maximum(score, c)
    k = int(np.argmin(score))
    if score[k] >= SEAM_MAX_CORRELATION:
        return [(x0, y0, x1, y1)]
    j = int(j[k])
    cut = x0 + j + 1
    return [q for part in ((x0, y0, cut, y1), (cut, y0, x1, y1))
            for q in split_at_seams(pixels, _lit_rows(pixels, part))]


def _lit_rows(pixels: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``box`` trimmed to its first and last rows that are mostly not black."""
    x0, y0, x1, y1 = box
    a = _gray(pixels)[y0:y1, x0:x1]
    top = 255.0 if a.dtype == np.uint8 else (float(np.percentile(a.astype(np.float32), 99.5)) or 1.0)
    rows = np.nonzero((_unit(a, top) > 0.008).mean(axis=1) >= 0.4)[0]
    if rows.size == 0:
        return box
    return (x0, y0 + int(rows[0]), x1, y0 + int(rows[-1]) + 1)
