"""One synthetic ultrasound frame from explicit features: scene -> B-mode -> device frame.

``render(features, seed)`` is a pure function of its arguments (same inputs,
same bytes), which is what makes cohorts reproducible for any worker count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import anatomy as A
from . import bmode, framing
from .features import LymphNode, Nodule, Patient

VIEWS = ("transverse", "longitudinal", "lymph_node")


@dataclass
class Device:
    """Per-patient scanner settings (class independent)."""

    f0_mhz: float = 10.0
    width_mm: float = 40.0
    style: int = 0
    name: str = "L12-5"

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Device":
        name, f0 = [("L12-5", 10.0), ("L15-7", 12.0), ("L9-3", 7.5), ("ML6-15", 11.0), ("L11-3", 9.0)][
            int(rng.integers(0, 5))]
        return cls(f0_mhz=f0, width_mm=float(rng.uniform(38.0, 46.0)), style=int(rng.integers(0, 2)), name=name)


@dataclass
class Rendered:
    image: np.ndarray  # (600, 800) uint8 frame
    region: framing.Region
    spacing_mm: float
    view: str
    params: dict = field(default_factory=dict)
    envelope: np.ndarray | None = None  # region envelope before gain/log (when asked)
    amplitude: np.ndarray | None = None  # region mean backscatter map x transmission (when asked)


#: Acoustic simulation grid (mm/px).  The beamformed image is then scan-converted
#: (bilinear) to the finer display grid, as scanners do.
ACOUSTIC_SPACING_MM = 0.13


def _scene_for(rng, depth_mm: float, width_mm: float) -> A.Scene:
    rows, cols, display_spacing = framing.region_size(rng, depth_mm, width_mm)
    s = max(display_spacing, ACOUSTIC_SPACING_MM)
    sc = A.Scene(int(round(depth_mm / s)), int(round(width_mm / s)), s)
    sc.marks["display"] = (rows, cols, display_spacing)
    return sc


def _nodule_dims(nod: Nodule, view: str, slice_scale: float) -> tuple[float, float]:
    width = nod.size_mm / max(1.0, nod.aspect_long, nod.aspect_ap)
    ap = width * nod.aspect_ap
    length = width * nod.aspect_long
    across = width if view == "transverse" else length
    return 0.5 * across * slice_scale, 0.5 * ap * slice_scale


def _thyroid_scene(rng, nod: Nodule, view: str, device: Device, slice_scale: float):
    rx, rz = _nodule_dims(nod, view, slice_scale)
    longitudinal = view == "longitudinal"
    fat = rng.uniform(2.0, 4.5)
    muscle = rng.uniform(3.0, 6.0)
    sup_bottom_est = 1.4 + fat + muscle
    lobe_ap = max(rng.uniform(14.0, 19.0), 2 * rz + rng.uniform(5.0, 9.0))
    if nod.margin == "extrathyroidal_extension":
        lobe_ap = max(lobe_ap - 1.0, 2 * rz + 1.0)
    lobe_top = sup_bottom_est + 0.4
    depth = float(np.clip(math.ceil((lobe_top + lobe_ap + rng.uniform(7.0, 14.0)) / 5.0) * 5.0, 30.0, 60.0))
    width = device.width_mm
    sc = _scene_for(rng, depth, width)
    s = sc.spacing
    sup_bottom = A.add_superficial_layers(sc, rng, muscle_mm=muscle, fat_mm=fat, longitudinal=longitudinal)
    lobe_top = sup_bottom + 0.3
    lobe_cz = lobe_top + lobe_ap / 2
    if longitudinal:
        lobe_len = max(rng.uniform(42.0, 55.0), 2 * rx + 16.0)
        lobe_cx = width / 2 + (0.5 - nod.pole) * rng.uniform(5, 14)
        A.add_deep_structures(sc, rng, lobe_top + lobe_ap + rng.uniform(1.0, 3.0), True)
        A.add_ellipse(sc, lobe_cx, lobe_cz, lobe_len / 2, lobe_ap / 2, A.AMP["parenchyma"], edge_mm=0.3,
                      wall=0.7, wall_mm=0.2)
        nod_cx = lobe_cx + (nod.pole - 0.5) * max(lobe_len - 2 * rx - 6, 0) * 0.6
        nod_cx = float(np.clip(nod_cx, rx + 2, width - rx - 2)) if 2 * rx + 4 < width else width / 2
    else:
        lobe_w = max(rng.uniform(16.0, 22.0), 2 * rx + rng.uniform(7.0, 12.0))
        medial = 1.0 if nod.lobe == "right" else -1.0  # right lobe: trachea on the image's right
        lobe_cx = width / 2 + rng.uniform(-5.0, 5.0) - medial * 2.0
        trachea_r = rng.uniform(8.0, 10.0)
        trachea_cx = lobe_cx + medial * (lobe_w / 2 + trachea_r * 0.55)
        car_r = rng.uniform(2.8, 3.8)
        car_cx = lobe_cx - medial * (lobe_w / 2 + car_r + rng.uniform(0.0, 1.5))
        car_cz = lobe_cz + rng.uniform(-1.0, 3.0)
        A.add_deep_structures(sc, rng, lobe_top + lobe_ap + rng.uniform(1.0, 3.0), False)
        # lobe, then isthmus band over the trachea
        A.add_ellipse(sc, lobe_cx, lobe_cz, lobe_w / 2, lobe_ap / 2, A.AMP["parenchyma"], edge_mm=0.3,
                      wall=0.7, wall_mm=0.2)
        isth = rng.uniform(2.0, 3.5)
        A.add_ellipse(sc, trachea_cx, lobe_top + isth / 2, trachea_r * 0.9, isth / 2, A.AMP["parenchyma"],
                      edge_mm=0.3)
        A.add_trachea(sc, trachea_cx, lobe_top + isth + 0.2, trachea_r, rng)
        A.add_carotid(sc, car_cx, car_cz, car_r, rng)
        jrx = rng.uniform(3.0, 5.5)
        A.add_jugular(sc, car_cx - medial * (car_r + jrx + rng.uniform(0.3, 1.5)), car_cz - rng.uniform(1.0, 3.0),
                      jrx, rng.uniform(1.0, 2.6), rng)
        lobe_len = lobe_w
        span = max(lobe_w - 2 * rx - 2.0, 0.0)
        nod_cx = lobe_cx + (nod.lateral - 0.5) * span * (-medial)
    # vertical position: abutting the anterior (or posterior) capsule, or inside
    if nod.margin == "extrathyroidal_extension":
        nod_cz = lobe_top + rz - rng.uniform(0.8, 1.6)
    elif nod.capsule_contact:
        nod_cz = lobe_top + rz + 0.1 if rng.random() < 0.7 else lobe_top + lobe_ap - rz - 0.1
    else:
        free = max(lobe_ap - 2 * rz - 2.4, 0.0)
        nod_cz = lobe_top + 1.2 + rz + rng.uniform(0.0, 1.0) * free
    focus = float(np.clip(nod_cz + rng.uniform(-3, 3), 8.0, depth - 5.0))
    info = A.draw_nodule(sc, nod, nod_cx, nod_cz, rx, rz, rng)
    calipers = [((nod_cx - rx) / s, nod_cz / s), ((nod_cx + rx) / s, nod_cz / s)], \
        [(nod_cx / s, (nod_cz - rz) / s), (nod_cx / s, (nod_cz + rz) / s)]
    return sc, depth, focus, info, calipers


def _node_scene(rng, node: LymphNode, device: Device):
    fat = rng.uniform(2.0, 4.0)
    scm = rng.uniform(6.0, 10.0)
    short = node.short_axis_mm
    depth = float(np.clip(math.ceil((1.4 + fat + scm + 14 + short) / 5.0) * 5.0, 30.0, 45.0))
    sc = _scene_for(rng, depth, device.width_mm)
    s, rows = sc.spacing, sc.h
    sup_bottom = A.add_superficial_layers(sc, rng, muscle_mm=scm, fat_mm=fat, longitudinal=False)
    # deep cervical fat with septa rather than featureless deep tissue
    z = (np.arange(rows, dtype=np.float32) + 0.5) * s
    sc.amp[z > sup_bottom + 0.5, :] = A.AMP["fat"] * 1.1
    sc.amp *= A._lowfreq_field(rng, sc.amp.shape, 6, 0.15)
    width = device.width_mm
    car_r = rng.uniform(2.8, 3.8)
    side = 1.0 if rng.random() < 0.5 else -1.0
    car_cx = width / 2 + side * rng.uniform(6.0, 12.0)
    car_cz = sup_bottom + car_r + rng.uniform(4.0, 8.0)
    A.add_deep_structures(sc, rng, car_cz + car_r + rng.uniform(4, 7), False)
    A.add_carotid(sc, car_cx, car_cz, car_r, rng)
    jrx = rng.uniform(3.0, 5.5)
    A.add_jugular(sc, car_cx - side * (car_r + jrx + rng.uniform(0.3, 1.5)), car_cz - car_r * rng.uniform(0.2, 0.8),
                  jrx, rng.uniform(1.2, 3.0), rng)
    long_ = short * node.long_ratio
    # beside the carotid, away from the jugular when it fits, else beyond the jugular
    nx = car_cx + side * (car_r + long_ / 2 + rng.uniform(1.5, 4.0))
    if not (long_ / 2 + 1.0 < nx < width - long_ / 2 - 1.0):
        nx = car_cx - side * (car_r + 2 * jrx + long_ / 2 + rng.uniform(1.5, 3.0))
    nx = float(np.clip(nx, long_ / 2 + 1.0, width - long_ / 2 - 1.0))
    nz = float(np.clip(sup_bottom + short / 2 + rng.uniform(1.0, 7.0), 6.0, depth - short / 2 - 3.0))
    focus = float(np.clip(nz + rng.uniform(-2, 2), 8.0, depth - 5.0))
    info = A.draw_lymph_node(sc, node, nx, nz, rng)
    calipers = [((nx - long_ / 2) / s, nz / s), ((nx + long_ / 2) / s, nz / s)], \
        [(nx / s, (nz - short / 2) / s), (nx / s, (nz + short / 2) / s)]
    return sc, depth, focus, info, calipers


def render(features: Nodule | LymphNode | Patient, seed: int | np.random.SeedSequence | np.random.Generator, *,
           view: str | None = None, target: int = 0, device: Device | None = None,
           return_maps: bool = False) -> Rendered:
    """Render one device frame (600x800 uint8) showing a nodule or a lymph node.

    ``features``: a :class:`Nodule` (transverse/longitudinal), a :class:`LymphNode`
    (``lymph_node`` view) or a :class:`Patient` (``target`` picks the nodule or node).
    ``seed`` fixes speckle, probe position, gain and framing.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if isinstance(features, Patient):
        if view == "lymph_node":
            if not features.nodes:
                raise ValueError("this patient has no lymph node to show")
            features = features.nodes[target % len(features.nodes)]
        else:
            features = features.nodules[target % len(features.nodules)]
    if isinstance(features, LymphNode):
        view = view or "lymph_node"
        if view != "lymph_node":
            raise ValueError("a LymphNode is shown in the 'lymph_node' view")
    elif isinstance(features, Nodule):
        view = view or "transverse"
        if view not in ("transverse", "longitudinal"):
            raise ValueError("a Nodule is shown in the 'transverse' or 'longitudinal' view")
    else:
        raise TypeError(f"features must be a Nodule, LymphNode or Patient, not {type(features).__name__}")
    device = device or Device.sample(rng)
    if view == "lymph_node":
        sc, depth, focus, info, calipers = _node_scene(rng, features, device)
    else:
        sc, depth, focus, info, calipers = _thyroid_scene(rng, features, view, device, rng.uniform(0.85, 1.0))
    probe = bmode.Probe(f0_mhz=device.f0_mhz, focus_mm=focus, gain_db=float(rng.uniform(-4.0, 4.0)),
                        dynamic_range_db=float(rng.uniform(50.0, 60.0)),
                        tgc_compensation=float(rng.uniform(0.82, 0.97)),
                        rayleigh_range_mm=float(rng.uniform(5.0, 9.0)))
    out = bmode.form_image(sc.amp, sc.alpha, sc.spacing, probe, rng, return_envelope=return_maps)
    region_img, env, trans = out if return_maps else (out, None, None)
    rows, cols, disp = sc.marks["display"]
    scale = sc.spacing / disp
    if (rows, cols) != region_img.shape:
        from PIL import Image

        region_img = np.asarray(Image.fromarray(region_img).resize((cols, rows), Image.BILINEAR))
    calipers = tuple(((a[0] * scale, a[1] * scale), (b[0] * scale, b[1] * scale)) for a, b in calipers)
    site = {"transverse": "THYROID {} TRANS", "longitudinal": "THYROID {} LONG", "lymph_node": "NECK {} LN"}[view]
    side = getattr(features, "lobe", None) or getattr(features, "side", "right")
    text = {
        "title": "THYROFAST SYNTH",
        "site": site.format("RT" if side == "right" else "LT"),
        "probe": device.name,
        "freq": f"{device.f0_mhz:.1f} MHz",
        "gain": f"G {int(round(55 + probe.gain_db))}",
        "dr": f"DR {int(round(probe.dynamic_range_db))}",
        "depth": f"D {depth / 10:.1f} cm",
        "fps": f"FR {int(rng.integers(18, 40))} Hz",
    }
    show_calipers = rng.random() < 0.35
    frame, region = framing.place(region_img, rng, style=device.style, text=text, spacing_mm=disp,
                                  focus_mm=focus, calipers=list(calipers) if show_calipers else None)
    params = {"depth_cm": depth / 10, "freq_mhz": device.f0_mhz, "gain_db": round(probe.gain_db, 2),
              "dynamic_range_db": round(probe.dynamic_range_db, 2), "focus_cm": round(focus / 10, 3),
              "calipers": bool(show_calipers)}
    amp = (sc.amp * trans) if return_maps else None
    return Rendered(frame, region, disp, view, params, env, amp)
