"""Neck anatomy and lesions as tissue maps for the B-mode model.

A scene is two float32 maps on the image grid (rows = depth): ``amp``, the mean
backscatter amplitude (thyroid parenchyma = 1), and ``alpha``, excess
attenuation per pixel (calcification and air shadow, fluid enhances).  Shapes
are drawn in millimetres on bounding-box windows, so a scene costs a few ms.

Views: ``transverse`` and ``longitudinal`` planes through a thyroid nodule, and
``lymph_node`` (lateral neck with the carotid, jugular vein and one node).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from .features import LymphNode, Nodule

# mean backscatter amplitudes relative to normal thyroid parenchyma
AMP = {
    "parenchyma": 1.0,
    "muscle": 0.27,
    "fat": 0.42,
    "septum": 1.3,
    "skin": 2.2,
    "fluid": 0.015,
    "wall": 1.9,
    "deep": 0.28,
}
ECHO_AMP = {"hyperechoic": 1.65, "isoechoic": 0.80, "hypoechoic": 0.42, "very_hypoechoic": 0.14, "anechoic": 0.02}


@dataclass
class Scene:
    h: int
    w: int
    spacing: float  # mm per pixel (square)
    amp: np.ndarray = field(init=False)
    alpha: np.ndarray = field(init=False)
    marks: dict = field(default_factory=dict)  # caliper endpoints etc. in px

    def __post_init__(self):
        self.amp = np.full((self.h, self.w), AMP["deep"], np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)

    # ---- geometry helpers (mm in, windows out)
    def window(self, cx: float, cz: float, rx: float, rz: float):
        """Slices and mm coordinate grids (relative to the centre) covering a box."""
        s = self.spacing
        x0 = max(int((cx - rx) / s) - 1, 0)
        x1 = min(int((cx + rx) / s) + 2, self.w)
        z0 = max(int((cz - rz) / s) - 1, 0)
        z1 = min(int((cz + rz) / s) + 2, self.h)
        if x1 <= x0 or z1 <= z0:
            return None
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) * s - cx
        zs = (np.arange(z0, z1, dtype=np.float32) + 0.5) * s - cz
        return (slice(z0, z1), slice(x0, x1)), xs[None, :], zs[:, None]

    def px(self, x_mm: float, z_mm: float) -> tuple[float, float]:
        return x_mm / self.spacing, z_mm / self.spacing


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _blend(dst: np.ndarray, value, weight: np.ndarray) -> None:
    dst *= 1.0 - weight
    dst += weight * value


def _lowfreq_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, amount: float) -> np.ndarray:
    """Smooth multiplicative texture 1 +- amount (bilinear upsampled coarse noise)."""
    from PIL import Image

    small = np.exp(amount * rng.standard_normal((cells, cells))).astype(np.float32)
    f = Image.fromarray(small, mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(f, dtype=np.float32)


# ------------------------------------------------------------------ layers


def add_superficial_layers(sc: Scene, rng: np.random.Generator, *, muscle_mm: float, fat_mm: float,
                           longitudinal: bool) -> float:
    """Skin, subcutaneous fat with septa, strap muscles; returns the depth (mm) of their bottom."""
    s = sc.spacing
    z = (np.arange(sc.h, dtype=np.float32) + 0.5) * s
    x = (np.arange(sc.w, dtype=np.float32) + 0.5) * s
    undul = (0.4 * np.sin(x / sc.w / s * 2 * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))).astype(np.float32)
    gel = 0.25
    skin_bot = gel + rng.uniform(0.9, 1.4)
    fat_bot = skin_bot + fat_mm + undul
    mus_bot = fat_bot + muscle_mm + 0.6 * undul[::-1]
    zz = z[:, None]
    amp = sc.amp
    amp[:] = AMP["deep"]
    rows_mus = zz < mus_bot[None, :]
    amp[rows_mus] = AMP["muscle"]
    amp[zz < fat_bot[None, :]] = AMP["fat"]
    amp[: int(skin_bot / s)] = AMP["skin"]
    amp[: max(int(gel / s), 1)] = AMP["fluid"]
    # fascial planes: bright thin lines at the fat/muscle and muscle/deep interfaces
    for bot, a in ((fat_bot, 1.6), (mus_bot, 1.5)):
        _add_line(sc, bot, 0.18, a)
    # fat septa (oblique bright strands) and muscle fibres / septa
    xc = x - x.mean()
    for _ in range(int(rng.integers(3, 7))):
        line = rng.uniform(skin_bot + 0.5, skin_bot + fat_mm) + rng.uniform(-0.25, 0.25) * xc
        _add_line(sc, np.minimum(line, fat_bot - 0.3), 0.12, AMP["septum"] * rng.uniform(0.5, 1.0))
    n_fib = int(rng.integers(3, 6)) if longitudinal else int(rng.integers(1, 3))
    for _ in range(n_fib):
        frac = rng.uniform(0.2, 0.8)
        line = fat_bot + frac * (mus_bot - fat_bot) + rng.uniform(-0.08, 0.08) * xc
        _add_line(sc, np.clip(line, fat_bot + 0.3, mus_bot - 0.3), 0.1, 0.45)
    return float(np.mean(mus_bot))


def _add_line(sc: Scene, z_of_x: np.ndarray, sigma_mm: float, value: float) -> None:
    """Add a thin bright line z(x) (mm) of Gaussian profile, touching only its row band."""
    s = sc.spacing
    z0 = max(int((float(z_of_x.min()) - 4 * sigma_mm) / s), 0)
    z1 = min(int((float(z_of_x.max()) + 4 * sigma_mm) / s) + 2, sc.h)
    if z1 <= z0:
        return
    zz = (np.arange(z0, z1, dtype=np.float32)[:, None] + 0.5) * s
    sc.amp[z0:z1] += (value * np.exp(-0.5 * ((zz - z_of_x[None, :]) / sigma_mm) ** 2)).astype(np.float32)


def add_ellipse(sc: Scene, cx, cz, rx, rz, value, *, edge_mm=0.15, angle=0.0, wall=0.0,
                wall_mm=0.35, alpha=0.0) -> np.ndarray | None:
    """Filled ellipse blended into ``amp`` with a soft edge; optional bright wall and alpha."""
    win = sc.window(cx, cz, max(rx, rz) + 1.0, max(rx, rz) + 1.0)
    if win is None:
        return None
    (sl, xs, zs) = win
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xs * ca + zs * sa) / rx
    v = (-xs * sa + zs * ca) / rz
    r = np.sqrt(u * u + v * v)
    d = (r - 1.0) * min(rx, rz)  # ~ signed distance in mm
    inside = _smoothstep(0.5 - d / max(edge_mm, 1e-3))
    _blend(sc.amp[sl], value, inside.astype(np.float32))
    if wall:
        sc.amp[sl] += (wall * np.exp(-0.5 * (d / wall_mm) ** 2)).astype(np.float32)
    if alpha:
        sc.alpha[sl] += (alpha * inside).astype(np.float32)
    return inside


def add_carotid(sc: Scene, cx, cz, r, rng) -> None:
    add_ellipse(sc, cx, cz, r, r * rng.uniform(0.95, 1.05), AMP["fluid"], edge_mm=0.1, wall=AMP["wall"],
                wall_mm=0.22, alpha=-0.10 * sc.spacing / 0.08 / (2 * r / sc.spacing) * 4)


def add_jugular(sc: Scene, cx, cz, rx, rz, rng) -> None:
    add_ellipse(sc, cx, cz, rx, rz, AMP["fluid"], edge_mm=0.1, wall=0.9, wall_mm=0.15,
                angle=rng.uniform(-0.3, 0.3), alpha=-0.06 * sc.spacing / 0.08 / max(2 * rz / sc.spacing, 1) * 4)


def add_trachea(sc: Scene, cx, top_z, radius, rng) -> None:
    """Anterior tracheal wall: hypoechoic cartilage arc, bright air interface, reverberations, shadow."""
    depth = sc.h * sc.spacing
    mid = 0.5 * (top_z - 2.0 + depth)
    win = sc.window(cx, mid, radius + 1.0, 0.5 * (depth - top_z + 2.0) + 1.0)
    if win is None:
        return
    sl, xs, zs = win
    zs_abs = zs + mid
    inside_x = _smoothstep((radius - np.abs(xs)) / 1.0).astype(np.float32)
    arc = top_z + radius - np.sqrt(np.maximum(radius**2 - xs**2, 0.0))  # upper surface z(x)
    dz = zs_abs - arc
    amp = sc.amp[sl]
    cart = ((dz > -1.7) & (dz < 0.0)).astype(np.float32) * inside_x
    _blend(amp, 0.22, cart)
    below = (dz > 0).astype(np.float32) * inside_x
    amp *= 1.0 - 0.92 * below  # air: nothing beneath is seen ...
    rev = 4.0 * np.exp(-0.5 * (dz / 0.22) ** 2)
    spacing = rng.uniform(2.0, 3.0)
    for k in range(1, 4):  # ... except reverberations of the air interface, fading
        rev = rev + 1.2 * 0.45**k * np.exp(-0.5 * ((dz - k * spacing) / 0.25) ** 2)
    amp += (rev * inside_x).astype(np.float32)


def add_deep_structures(sc: Scene, rng, top_z: float, longitudinal: bool) -> None:
    """Longus colli / prevertebral tissue and, when deep enough, a bright vertebral line with shadow."""
    depth = sc.h * sc.spacing
    if top_z + 4 >= depth:
        return
    z = (np.arange(sc.h, dtype=np.float32) + 0.5) * sc.spacing
    x = (np.arange(sc.w, dtype=np.float32) + 0.5) * sc.spacing
    line = top_z + 4.0 + 1.5 * np.sin(x / (x[-1] + 1) * np.pi * rng.uniform(0.6, 1.2) + rng.uniform(0, 3))
    wgt = np.exp(-0.5 * ((z[:, None] - line[None, :]) / 0.3) ** 2).astype(np.float32)
    sc.amp += 1.2 * wgt
    sc.alpha += (0.08 * (sc.spacing / 0.08) * wgt).astype(np.float32)


# ------------------------------------------------------------------ nodule


def _contour_perturbation(rng, margin: str, theta: np.ndarray) -> np.ndarray:
    """Relative radius change r(theta) - 1 of the nodule outline, looked up from 1024 angles."""
    grid = np.linspace(-np.pi, np.pi, 1024, endpoint=False)
    table = _contour_table(rng, margin, grid).astype(np.float32)
    idx = ((theta + np.pi) * (1024 / (2 * np.pi))).astype(np.intp) & 1023
    return table[idx]


def _contour_table(rng, margin: str, theta: np.ndarray) -> np.ndarray:
    p = np.zeros_like(theta)
    p += 0.025 * np.cos(2 * theta + rng.uniform(0, 6.28))
    if margin in ("lobulated_irregular", "extrathyroidal_extension"):
        for k in rng.choice(np.arange(3, 8), size=3, replace=False):
            p += rng.uniform(0.05, 0.09) * np.cos(k * theta + rng.uniform(0, 6.28))
        k = int(rng.integers(12, 22))
        spikes = np.maximum(np.cos(k * theta + rng.uniform(0, 6.28)), 0.0) ** 3
        p += rng.uniform(0.07, 0.12) * spikes
    elif margin == "ill_defined":
        for k in (3, 5, 7):
            p += 0.03 * np.cos(k * theta + rng.uniform(0, 6.28))
    return p


def draw_nodule(sc: Scene, nod: Nodule, cx: float, cz: float, rx: float, rz: float,
                rng: np.random.Generator, *, capsule_z: float | None = None) -> dict:
    """Draw a thyroid nodule (composition, echogenicity, margin, halo, foci, artefacts)."""
    s = sc.spacing
    win = sc.window(cx, cz, rx * 1.45 + 2.5, rz * 1.45 + 2.5)
    if win is None:
        return {}
    sl, xs, zs = win
    theta = np.arctan2(zs / rz, xs / rx)
    r = np.sqrt((xs / rx) ** 2 + (zs / rz) ** 2)
    r_eff = r / (1.0 + _contour_perturbation(rng, nod.margin, theta))
    mean_r = 0.5 * (rx + rz)
    d = (r_eff - 1.0) * mean_r  # mm, <0 inside
    edge = {"smooth": 0.12, "ill_defined": 1.6, "lobulated_irregular": 0.2, "extrathyroidal_extension": 0.3}[nod.margin]
    inside = _smoothstep(0.5 - d / edge).astype(np.float32)
    if nod.margin == "ill_defined":
        # the boundary fades into the parenchyma in patches
        inside *= np.clip(1.0 - (d > -1.0) * (_lowfreq_field(rng, d.shape, 7, 0.9) - 1.0), 0, 1).astype(np.float32)
    core = (d < -0.2)
    amp = sc.amp[sl]
    alpha = sc.alpha[sl]
    shape = d.shape
    # halo: thin dark rim just outside (nuisance, any class)
    if nod.halo and nod.margin in ("smooth", "ill_defined"):
        halo = np.exp(-0.5 * ((d - 0.45) / 0.35) ** 2).astype(np.float32)
        amp *= 1.0 - 0.75 * halo
    # solid tissue of the nodule's echogenicity with mild heterogeneity
    solid_level = ECHO_AMP[nod.echogenicity if nod.composition != "cystic" else "isoechoic"]
    solid_level *= float(np.exp(rng.normal(0, 0.06)))
    tex = _lowfreq_field(rng, shape, 9, 0.18)
    nod_amp = solid_level * tex
    # cystic parts
    fluid = np.zeros(shape, np.float32)
    if nod.composition in ("mixed", "cystic", "spongiform"):
        grain_mm = {"spongiform": 0.55, "mixed": 2.2, "cystic": 3.0}[nod.composition]
        sig = max(grain_mm / s, 1.0)
        noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sig)
        if nod.composition == "mixed":  # solid part eccentric: bias toward one side
            ang = rng.uniform(0, 2 * np.pi)
            noise += (0.9 * noise.std() * (np.cos(ang) * xs / rx + np.sin(ang) * zs / rz)).astype(np.float32)
        if nod.composition == "cystic":
            noise = noise * 0.3 - (r_eff.astype(np.float32) * noise.std())
        vals = noise[core]
        if vals.size:
            thr = np.quantile(vals, 1.0 - nod.cystic_fraction)
            fluid = _smoothstep((noise - thr) / (0.25 * noise.std() + 1e-6)).astype(np.float32) * core
        if nod.composition == "spongiform":
            nod_amp = nod_amp * 1.15
    nod_amp = nod_amp * (1.0 - fluid) + AMP["fluid"] * fluid
    _blend(amp, nod_amp, inside)
    # fluid transmits better: posterior acoustic enhancement
    alpha -= (0.035 * (s / 0.08) * fluid * inside).astype(np.float32)
    foci_px = _draw_foci(sc, sl, xs, zs, d, r_eff, theta, nod, fluid, rng, rx, rz)
    if nod.margin == "extrathyroidal_extension" and capsule_z is not None:
        pass  # handled by caller (capsule line interruption)
    ys, xs_idx = sl
    return {"bbox_px": (xs_idx.start, ys.start, xs_idx.stop, ys.stop), "foci": foci_px}


def _dots(shape, xs, zs, centers, radius_mm):
    out = np.zeros(shape, np.float32)
    for (x, z) in centers:
        out = np.maximum(out, np.exp(-0.5 * (((xs - x) ** 2 + (zs - z) ** 2) / radius_mm**2)).astype(np.float32))
    return out


def _draw_foci(sc, sl, xs, zs, d, r_eff, theta, nod: Nodule, fluid, rng, rx, rz):
    amp = sc.amp[sl]
    alpha = sc.alpha[sl]
    s = sc.spacing
    shape = d.shape
    solid_inside = (d < -0.6) & (fluid < 0.5)

    def pick_points(mask, n):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        sel = rng.choice(idx, size=min(n, idx.size), replace=False)
        zz, xx = np.unravel_index(sel, shape)
        return [(float(xs[0, j]), float(zs[i, 0])) for i, j in zip(zz, xx)]

    if nod.foci == "punctate":
        n = int(rng.integers(5, 16))
        pts = pick_points(solid_inside & (d < -0.9), n)
        dots = _dots(shape, xs, zs, pts, rng.uniform(0.22, 0.32))
        amp += 9.0 * dots
        return len(pts)
    if nod.foci == "macrocalcification":
        n = int(rng.integers(1, 3))
        pts = pick_points(solid_inside & (d < -1.5), n)
        for (x, z) in pts:
            rad = rng.uniform(1.0, 2.2)
            ang = rng.uniform(-0.4, 0.4)
            u = (xs - x) * math.cos(ang) + (zs - z) * math.sin(ang)
            v = -(xs - x) * math.sin(ang) + (zs - z) * math.cos(ang)
            rr = np.sqrt((u / rad) ** 2 + (v / (0.6 * rad)) ** 2)
            surf = np.exp(-0.5 * ((rr - 1.0) / 0.18) ** 2) * (v < 0.2 * rad)  # bright upper surface
            amp += (7.0 * surf).astype(np.float32)
            alpha += (0.5 * (s / 0.08) * (rr < 1.0)).astype(np.float32)  # dense shadow
        return len(pts)
    if nod.foci == "peripheral_rim":
        span = rng.uniform(0.55, 1.0) * 2 * np.pi
        start = rng.uniform(0, 2 * np.pi)
        ang = np.mod(theta - start, 2 * np.pi) < span
        band = np.exp(-0.5 * (d / 0.28) ** 2) * ang * (zs < 0.3 * rz)  # echogenic rim, mostly the upper part
        band = np.maximum(band, 0.7 * np.exp(-0.5 * (d / 0.28) ** 2) * ang)
        amp += (6.0 * band).astype(np.float32)
        alpha += (0.1 * (s / 0.08) * band * (zs < 0)).astype(np.float32)
        return 1
    if nod.foci == "comet_tail":
        n = int(rng.integers(2, 6))
        where = (fluid > 0.5) if fluid.max() > 0.5 else solid_inside
        pts = pick_points(where & (d < -0.8), n)
        for (x, z) in pts:
            dot = np.exp(-0.5 * (((xs - x) ** 2 + (zs - z) ** 2) / 0.25**2))
            amp += (7.0 * dot).astype(np.float32)
            length = rng.uniform(1.5, 3.0)
            t = (zs - z) / length
            width = 0.35 * (1.0 - np.clip(t, 0, 1)) + 0.05
            tail = (np.exp(-0.5 * ((xs - x) / width) ** 2) * (t > 0) * (t < 1) * (1.0 - np.clip(t, 0, 1))
                    * (0.6 + 0.4 * np.cos(2 * np.pi * (zs - z) / 0.35)))
            amp += (4.0 * tail).astype(np.float32)
        return len(pts)
    return 0


def draw_lymph_node(sc: Scene, node: LymphNode, cx, cz, rng) -> dict:
    """Cervical lymph node: cortex, fatty hilum, microcalcifications, cystic change."""
    short = node.short_axis_mm
    long_ = short * node.long_ratio
    rx, rz = long_ / 2, short / 2
    ang = rng.uniform(-0.3, 0.3)
    win = sc.window(cx, cz, rx + 2, rx + 2)
    if win is None:
        return {}
    sl, xs, zs = win
    ca, sa = math.cos(ang), math.sin(ang)
    u = xs * ca + zs * sa
    v = -xs * sa + zs * ca
    r = np.sqrt((u / rx) ** 2 + (v / rz) ** 2)
    theta = np.arctan2(v / rz, u / rx)
    r = r / (1 + 0.03 * np.cos(3 * theta + rng.uniform(0, 6)))
    d = (r - 1.0) * min(rx, rz)
    inside = _smoothstep(0.5 - d / 0.15).astype(np.float32)
    level = (rng.uniform(0.95, 1.3) if node.hyperechoic else rng.uniform(0.16, 0.28))
    tex = _lowfreq_field(rng, d.shape, 6, 0.12)
    nod_amp = level * tex
    if not node.hilum_absent:
        # echogenic fatty hilum: central stripe reaching one edge (the hilar notch)
        hu = (u - 0.25 * rx) / (0.75 * rx)
        hv = v / (0.28 * rz)
        hil = _smoothstep(1.2 - np.sqrt(hu**2 + hv**2) * 1.2).astype(np.float32)
        nod_amp = nod_amp * (1 - hil) + 1.7 * hil
    fluid = np.zeros(d.shape, np.float32)
    if node.cystic:
        noise = gaussian_filter(rng.standard_normal(d.shape).astype(np.float32), max(1.5 / sc.spacing, 1))
        core = d < -0.4
        if core.any():
            thr = np.quantile(noise[core], 1 - rng.uniform(0.3, 0.55))
            fluid = (_smoothstep((noise - thr) / (0.3 * noise.std() + 1e-6)) * core).astype(np.float32)
    nod_amp = nod_amp * (1 - fluid) + AMP["fluid"] * fluid
    _blend(sc.amp[sl], nod_amp, inside)
    sc.amp[sl] += (0.6 * np.exp(-0.5 * (d / 0.15) ** 2)).astype(np.float32)  # thin capsule
    sc.alpha[sl] -= (0.035 * (sc.spacing / 0.08) * fluid).astype(np.float32)
    if node.microcalc:
        idx = np.flatnonzero((d < -0.5).ravel() & (fluid.ravel() < 0.5))
        if idx.size:
            sel = rng.choice(idx, size=min(int(rng.integers(4, 11)), idx.size), replace=False)
            zz, xx = np.unravel_index(sel, d.shape)
            pts = [(float(xs[0, j]), float(zs[i, 0])) for i, j in zip(zz, xx)]
            sc.amp[sl] += 9.0 * _dots(d.shape, xs, zs, pts, rng.uniform(0.22, 0.3))
    ys, xsl = sl
    return {"bbox_px": (xsl.start, ys.start, xsl.stop, ys.stop)}
