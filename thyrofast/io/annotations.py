"""Burned-in annotations inside the B-mode field: find them, fill them from the tissue around.

Devices draw calipers (``+`` marks, dotted lines), measurement text and markers
into the image in white (saturated) or in color.  :func:`annotation_mask`
finds them; :func:`mask_annotations` replaces them by the median of the
surrounding unmasked tissue.  ``thyrofast.read(..., mask_annotations=True)``
applies it to each frame's crop; it is off by default.

What counts as an annotation (conservative: tissue must not be touched):

* a connected group of saturated pixels (at least ``SATURATED`` of full scale)
  whose 1-pixel ring is much darker (ring median at most ``RING_MAX`` of full
  scale): a thin bright stroke over tissue.  Bright tissue (a capsule, a
  calcification clipped to white) fades into bright neighbours and is kept;
  a mark drawn over bright tissue is kept too;
* in an RGB frame that is not a color-Doppler image, strongly colored pixels
  (channels apart by more than 40/255), as colored calipers and text are;
* the anti-aliased fringe of those marks: pixels up to ``FRINGE_PX`` out from
  the stroke that are brighter than the tissue just beyond by ``FRINGE`` of
  full scale.

Caveat: a tiny saturated echogenic focus on dark tissue looks like a caliper
dot and is removed too; leave masking off when such foci matter to the reading.
"""
from __future__ import annotations

import numpy as np

__all__ = ["annotation_mask", "mask_annotations", "SATURATED", "RING_MAX", "FRINGE"]

#: A pixel at least this share of full scale is saturated (an annotation's stroke) ...
SATURATED = 0.9
#: ... and a group of them is a mark when the median of its 1-pixel ring is at most this.
RING_MAX = 0.7
#: Pixels next to a mark this much brighter (share of full scale) than the tissue 2-3 px away
#: are the mark's anti-aliased fringe ...
FRINGE = 0.1
#: ... up to this many pixels out from the saturated stroke.
FRINGE_PX = 1
#: Channel spread (share of full scale) above which an RGB pixel is colored.
COLOR_SPREAD = 40 / 255


def _top(a: np.ndarray) -> float:
    return 255.0 if a.dtype == np.uint8 else 65535.0


def annotation_mask(pixels: np.ndarray, *, colored: bool = True) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the burned-in annotations in a cropped frame (see the module doc).

    ``colored=False`` leaves colored pixels alone (a color-Doppler overlay is data, not a mark).
    """
    from scipy import ndimage

    a = np.asarray(pixels)
    top = _top(a)
    gray = (a.max(axis=2) if a.ndim == 3 else a).astype(np.float32) / top
    out = np.zeros(gray.shape, bool)
    if colored and a.ndim == 3:
        spread = (a.max(axis=2).astype(np.float32) - a.min(axis=2)) / top
        out |= spread > COLOR_SPREAD
    sat = gray >= SATURATED
    cand = sat | out
    labels, n = ndimage.label(cand, structure=np.ones((3, 3), bool))
    if n == 0:
        return out
    near_k, far_k = np.ones((3, 3), bool), np.ones((7, 7), bool)
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        box = tuple(slice(max(0, s.start - 3), s.stop + 3) for s in sl)
        comp = labels[box] == i
        near = ndimage.binary_dilation(comp, structure=near_k)
        ring = near & ~comp
        g = gray[box]
        if not ring.any():
            continue
        is_colored = bool(out[box][comp].any())
        if not is_colored and np.median(g[ring]) > RING_MAX:
            continue  # bright tissue: it fades into bright neighbours
        far = ndimage.binary_dilation(comp, structure=far_k) & ~near & ~cand[box]
        beyond = float(np.median(g[far])) if far.any() else float(np.median(g[ring]))
        mark = comp
        for _ in range(FRINGE_PX):  # the fringe: brighter than the tissue beyond, next to the mark
            mark = mark | (ndimage.binary_dilation(mark, structure=near_k) & (g >= beyond + FRINGE))
        out[box] |= mark
    return out


def mask_annotations(pixels: np.ndarray, mask: np.ndarray | None = None, *, colored: bool = True,
                     window: int = 7) -> tuple[np.ndarray, int]:
    """``pixels`` with the annotation pixels (``mask``, default :func:`annotation_mask`) replaced by
    the median of the unmasked pixels in a ``window`` x ``window`` neighbourhood (grown where a
    neighbourhood holds none); every other pixel is unchanged.  Returns (new pixels, pixels masked).

    In an RGB frame the fill is gray: the median of the neighbours' brightest channel, written to
    all three channels (a colored mark becomes gray tissue).
    """
    a = np.asarray(pixels)
    m = annotation_mask(a, colored=colored) if mask is None else np.asarray(mask, bool)
    n = int(m.sum())
    if n == 0:
        return a, 0
    out = a.copy()
    h, w = m.shape
    ys, xs = np.nonzero(m)
    for y, x in zip(ys.tolist(), xs.tolist()):
        r = window // 2
        while True:
            y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
            ok = ~m[y0:y1, x0:x1]
            if ok.any() or (y0 == 0 and x0 == 0 and y1 == h and x1 == w):
                break
            r *= 2
        if not ok.any():
            return a, 0  # nothing but marks: leave the frame as it is
        patch = a[y0:y1, x0:x1][ok]
        if a.ndim == 3:
            out[y, x] = np.asarray(np.rint(np.median(patch.max(axis=1)))).astype(a.dtype)
        else:
            out[y, x] = np.asarray(np.rint(np.median(patch))).astype(a.dtype)
    return out, n
