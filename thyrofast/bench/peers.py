"""Peer implementations the benchmarks compare against (same spec, other tools)."""
from __future__ import annotations

import sys

import numpy as np


def unavailable(peer: str, *modules: str) -> str | None:
    """``None`` when the peer's packages are installed; else the one line saying the peer is
    skipped and how to install it (also printed to stderr)."""
    from .._extras import missing, missing_message

    absent = missing(*modules)
    if not absent:
        return None
    line = f"bench: peer {peer!r} skipped: {missing_message(*absent)}"
    print(line, file=sys.stderr, flush=True)
    return line


def cv2_area_median5_percentile(frame: np.ndarray, size=(224, 224)) -> tuple[float, float]:
    import cv2

    small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    med = cv2.medianBlur(small, 5)
    lo, hi = np.percentile(med, (1, 99))
    return float(lo), float(hi)


def numpy_srad(y: np.ndarray, iterations: int = 10, lam: float = 0.5, rho: float = 1 / 6) -> np.ndarray:
    """Spec v1 SRAD written as vectorized float32 NumPy (the 'obvious' implementation)."""
    J = np.exp(y.astype(np.float32))
    q0sq0 = None
    for n in range(iterations):
        P = np.pad(J, 1, mode="edge")
        dN = P[:-2, 1:-1] - J
        dS = P[2:, 1:-1] - J
        dW = P[1:-1, :-2] - J
        dE = P[1:-1, 2:] - J
        G2 = (dN * dN + dS * dS + dW * dW + dE * dE) / (J * J)
        L = (dN + dS + dW + dE) / J
        q2 = (0.5 * G2 - 0.0625 * L * L) / np.square(1 + 0.25 * L)
        if n == 0:
            q0sq0 = float(np.median(q2))
        q0sq = max(q0sq0 * np.exp(-2 * rho * n * lam), 1e-10)
        c = np.clip(1.0 / (1.0 + (q2 - q0sq) / (q0sq * (1 + q0sq))), 0, 1).astype(np.float32)
        cp = np.pad(c, ((0, 1), (0, 1)), mode="edge")
        J += np.float32(lam / 4) * (c * dN + cp[1:, :-1] * dS + c * dW + cp[:-1, 1:] * dE)
    return np.log(J)


def cv2_area_numpy_srad_percentile(frame: np.ndarray, size=(224, 224)) -> tuple[float, float]:
    import cv2

    small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    z = numpy_srad(small)
    lo, hi = np.percentile(z, (1, 99))
    return float(lo), float(hi)


def torch_chain(frames_u8, size=(224, 224), iterations: int = 10, lam: float = 0.5, rho: float = 1 / 6):
    """The spec as a chain of PyTorch GPU ops (area resize, SRAD, percentile), float16 out."""
    import torch
    import torch.nn.functional as F

    x = frames_u8.float().unsqueeze(1) / 255.0
    y = F.interpolate(x, size=size, mode="area")
    J = torch.exp(y)
    q0sq0 = None
    for n in range(iterations):
        P = F.pad(J, (1, 1, 1, 1), mode="replicate")
        dN = P[..., :-2, 1:-1] - J
        dS = P[..., 2:, 1:-1] - J
        dW = P[..., 1:-1, :-2] - J
        dE = P[..., 1:-1, 2:] - J
        G2 = (dN * dN + dS * dS + dW * dW + dE * dE) / (J * J)
        L = (dN + dS + dW + dE) / J
        q2 = (0.5 * G2 - 0.0625 * L * L) / torch.square(1 + 0.25 * L)
        if n == 0:
            q0sq0 = q2.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
        q0sq = torch.clamp(q0sq0 * float(np.exp(-2 * rho * n * lam)), min=1e-10)
        c = torch.clamp(1.0 / (1.0 + (q2 - q0sq) / (q0sq * (1 + q0sq))), 0, 1)
        cp = F.pad(c, (0, 1, 0, 1), mode="replicate")
        J = J + lam / 4 * (c * dN + cp[..., 1:, :-1] * dS + c * dW + cp[..., :-1, 1:] * dE)
    z = torch.log(J).flatten(1)
    q = torch.quantile(z, torch.tensor([0.01, 0.99], device=z.device), dim=1)
    lo, hi = q[0].view(-1, 1), q[1].view(-1, 1)
    out = torch.clamp((z - lo) / (hi - lo), 0, 1)
    return out.view(-1, 1, *size).half()
