"""Device-export framing: the B-mode region inside a larger black frame with burned-in
text, a depth scale, a focus marker, a grey bar and sometimes calipers.

Everything drawn here is class-independent (same probabilities for every class),
so it is clutter a classifier must learn to ignore, as with real exports.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FRAME_SHAPE = (600, 800)  # rows, cols


@dataclass(frozen=True)
class Region:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive


@lru_cache(maxsize=4)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def region_size(rng: np.random.Generator, depth_mm: float, width_mm: float,
                frame_shape=FRAME_SHAPE) -> tuple[int, int, float]:
    """Rows, cols and mm/px of the tissue region for a depth and probe width."""
    fh, fw = frame_shape
    rows = int(round(fh * rng.uniform(0.80, 0.86)))
    spacing = depth_mm / rows
    cols = int(round(width_mm / spacing))
    max_cols = int(fw * 0.78)
    if cols > max_cols:
        spacing = width_mm / max_cols
        cols = max_cols
        rows = int(round(depth_mm / spacing))
    return rows, cols, spacing


def place(region_img: np.ndarray, rng: np.random.Generator, *, style: int, text: dict,
          spacing_mm: float, focus_mm: float, calipers: list | None = None,
          frame_shape=FRAME_SHAPE) -> tuple[np.ndarray, Region]:
    """Put the region into a frame and draw the overlays; returns (frame, region box)."""
    fh, fw = frame_shape
    rh, rw = region_img.shape
    y0 = int(min(rng.integers(44, 64), fh - rh - 6))
    y0 = max(y0, 0)
    cx = fw // 2 + (40 if style == 1 else 0) + int(rng.integers(-25, 26))
    x0 = int(np.clip(cx - rw // 2, 8, fw - rw - 56))
    frame = np.zeros((fh, fw), np.uint8)
    frame[y0:y0 + rh, x0:x0 + rw] = region_img
    region = Region(x0, y0, x0 + rw, y0 + rh)
    img = Image.fromarray(frame)
    dr = ImageDraw.Draw(img)
    f_small, f_big = _font(12), _font(15)
    # header / side panel text
    if style == 1:
        lines = [text["site"], text["probe"], text["freq"], text["gain"], text["dr"], text["depth"], text["fps"]]
        for i, t in enumerate(lines):
            dr.text((10, 60 + 18 * i), t, fill=200, font=f_small)
        dr.text((10, 14), text["title"], fill=230, font=f_big)
    else:
        dr.text((12, 10), text["title"], fill=230, font=f_big)
        dr.text((12, 30), "  ".join([text["probe"], text["freq"], text["gain"], text["dr"]]), fill=190, font=f_small)
        dr.text((fw - 150, 10), text["depth"], fill=200, font=f_small)
        dr.text((fw - 150, 26), text["fps"], fill=200, font=f_small)
        dr.text((12, fh - 22), text["site"], fill=210, font=f_small)
    # depth scale: tick every 5 mm, label every cm, at the right edge of the region
    sx = region.x1 + 6
    n_half_cm = int(rh * spacing_mm / 5.0)
    for k in range(n_half_cm + 1):
        y = region.y0 + int(round(k * 5.0 / spacing_mm))
        big = k % 2 == 0
        dr.line([(sx, y), (sx + (8 if big else 4), y)], fill=210)
        if big and k:
            dr.text((sx + 11, y - 7), str(k // 2), fill=210, font=f_small)
    fy = region.y0 + int(round(focus_mm / spacing_mm))
    dr.polygon([(sx - 1, fy), (sx + 7, fy - 5), (sx + 7, fy + 5)], fill=230)
    # grey bar
    gx = 14 if style == 0 else fw - 22
    gy0 = 120 if style == 0 else fh - 170
    bar = np.repeat(np.linspace(255, 0, 100, dtype=np.float32)[:, None], 8, axis=1).astype(np.uint8)
    img.paste(Image.fromarray(bar), (gx, gy0))
    # calipers: '+' marks at the structure's extremes, dotted lines, a measurement line
    if calipers:
        labels = []
        for i, (p, q) in enumerate(calipers):
            (x1, y1), (x2, y2) = [(region.x0 + a, region.y0 + b) for a, b in (p, q)]
            for (x, y) in ((x1, y1), (x2, y2)):
                dr.line([(x - 5, y), (x + 5, y)], fill=255, width=1)
                dr.line([(x, y - 5), (x, y + 5)], fill=255, width=1)
            n = max(int(np.hypot(x2 - x1, y2 - y1) / 6), 1)
            for t in np.linspace(0, 1, n + 1)[1:-1]:
                x, y = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
                dr.point([(x, y)], fill=235)
            length_cm = np.hypot(x2 - x1, y2 - y1) * spacing_mm / 10.0
            labels.append(f"D{i + 1} {length_cm:.2f} cm")
        dr.text((region.x0 + 4, min(region.y1 + 4, fh - 16)), "   ".join(labels), fill=240, font=f_small)
    return np.asarray(img, dtype=np.uint8).copy(), region
