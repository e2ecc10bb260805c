"""Float64 NumPy reference of preprocessing spec v1, independent of the C++.

Written from the spec text (csrc/include/thyrofast/preprocess.h, issue
"Foundation"), dense and slow on purpose: every step is the textbook
formula, so a disagreement points at the core.
"""
from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def to_4d(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 2:
        return frames[None, :, :, None]
    if frames.ndim == 3:
        return frames[None] if frames.shape[2] == 3 else frames[..., None]
    return frames


def luma(frame: np.ndarray, channel_order: str, max_value: float) -> np.ndarray:
    f = frame.astype(np.float64)
    if f.shape[2] == 1:
        return f[..., 0] / max_value
    coeffs = LUMA if channel_order == "rgb" else LUMA[::-1]
    return (f @ coeffs) / max_value


def axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Dense (n_out, n_in) resampling matrix of one axis."""
    m = np.zeros((n_out, n_in))
    s = n_in / n_out
    for i in range(n_out):
        if n_out < n_in:  # area: box [i s, (i+1) s)
            lo, hi = i * s, min((i + 1) * s, n_in)
            for k in range(int(np.floor(lo)), int(np.ceil(hi))):
                overlap = min(hi, k + 1) - max(lo, k)
                if overlap > 0:
                    m[i, k] += overlap / s
        elif n_out > n_in:  # linear, half-pixel centres, clamped
            src = (i + 0.5) * s - 0.5
            x0 = int(np.floor(src))
            f = src - x0
            if x0 < 0:
                x0, f = 0, 0.0
            if x0 >= n_in - 1:
                x0, f = n_in - 1, 0.0
            m[i, x0] += 1 - f
            if f > 0:
                m[i, x0 + 1] += f
        else:
            m[i, i] = 1.0
    return m


def resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    return axis_matrix(img.shape[0], out_h) @ img @ axis_matrix(img.shape[1], out_w).T


def median_filter(img: np.ndarray, k: int) -> np.ndarray:
    r = k // 2
    p = np.pad(img, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(p, (k, k))
    return np.median(win.reshape(*img.shape, k * k), axis=-1)


def srad(y: np.ndarray, iterations: int, lam: float, rho: float) -> np.ndarray:
    J = np.exp(np.clip(y, -87.0, 88.0))
    q0sq0 = None
    for n in range(iterations):
        P = np.pad(J, 1, mode="edge")
        dN = P[:-2, 1:-1] - J
        dS = P[2:, 1:-1] - J
        dW = P[1:-1, :-2] - J
        dE = P[1:-1, 2:] - J
        G2 = (dN**2 + dS**2 + dW**2 + dE**2) / J**2
        L = (dN + dS + dW + dE) / J
        q2 = (G2 / 2 - L**2 / 16) / (1 + L / 4) ** 2
        if n == 0:
            q0sq0 = float(np.median(q2))
        q0sq = max(q0sq0 * np.exp(-2 * rho * n * lam), 1e-10)
        c = 1.0 / (1.0 + (q2 - q0sq) / (q0sq * (1 + q0sq)))
        c = np.clip(c, 0.0, 1.0)
        cp = np.pad(c, ((0, 1), (0, 1)), mode="edge")
        cS = cp[1:, :-1]
        cE = cp[:-1, 1:]
        J = J + lam / 4 * (c * dN + cS * dS + c * dW + cE * dE)
    return np.log(J)


def normalize(z: np.ndarray, mode: str, percentiles=(1.0, 99.0)) -> np.ndarray:
    if mode == "none":
        return z
    if mode == "percentile":
        lo, hi = np.percentile(z, percentiles)
    elif mode == "minmax":
        lo, hi = z.min(), z.max()
    elif mode == "zscore":
        sd = z.std()
        return np.zeros_like(z) if sd < 1e-6 else (z - z.mean()) / sd
    else:
        raise ValueError(mode)
    if hi - lo < 1e-6:
        return np.zeros_like(z)
    return np.clip((z - lo) / (hi - lo), 0.0, 1.0)


def preprocess_ref(frames: np.ndarray, *, roi=None, channel_order="rgb", max_value=None, size=(224, 224),
                   denoise="srad", srad_iterations=10, srad_lambda=0.5, srad_rho=1 / 6,
                   normalize_mode="percentile", percentiles=(1.0, 99.0), mean=0.0, std=1.0,
                   channels=1, **_ignored) -> np.ndarray:
    f4 = to_4d(np.asarray(frames))
    if max_value is None:
        max_value = 255.0 if f4.dtype == np.uint8 else 65535.0
    out = np.empty((f4.shape[0], channels, *size))
    for i, frame in enumerate(f4):
        if roi is not None:
            x, y, w, h = roi
            frame = frame[y:y + h, x:x + w]
        z = resize(luma(frame, channel_order, max_value), *size)
        if denoise == "median3":
            z = median_filter(z, 3)
        elif denoise == "median5":
            z = median_filter(z, 5)
        elif denoise == "srad" and srad_iterations > 0:
            z = srad(z, srad_iterations, srad_lambda, srad_rho)
        z = normalize(z, normalize_mode, percentiles)
        out[i] = (z - mean) / std
    return out


def speckle_frames(rng: np.random.Generator, n: int, h: int, w: int, color: bool = False,
                   dtype=np.uint8) -> np.ndarray:
    """Random speckle-like frames: Rayleigh amplitude over a smooth echo map,
    log-compressed, with a dark margin and a bright structure (not white noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for _ in range(n):
        echo = 0.6 + 0.4 * np.sin(xx / max(w, 1) * rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(
            yy / max(h, 1) * rng.uniform(2, 6))
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = max(min(h, w) * rng.uniform(0.1, 0.25), 1.0)
        echo = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, echo * rng.uniform(0.2, 2.0), echo)
        amp = echo * rng.rayleigh(1.0, size=(h, w))
        img = np.log1p(amp * 20) / np.log1p(80)
        img[:, : max(w // 16, 0)] = 0.0
        top = 255 if dtype == np.uint8 else 65535
        img = np.clip(img, 0, 1) * top
        if color:
            tint = rng.uniform(0.9, 1.0, size=3)
            img = img[..., None] * tint
        frames.append(np.round(img).astype(dtype))
    return np.stack(frames)
