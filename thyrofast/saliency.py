"""Grad-CAM saliency (Selvaraju et al., ICCV 2017) and overlays for clinicians.

``grad_cam`` weights a convolutional layer's activations by the spatially
averaged gradient of the class score and keeps the positive part: where the
network found evidence *for* the class.  Maps are returned at the network
input's size (or, through :func:`to_frame`, at the original frame's size,
undoing the ROI crop and resize of preprocessing), scaled to [0, 1] per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["grad_cam", "default_layer", "to_frame", "overlay", "save_overlay", "MIN_CAM_SIDE"]


#: Grad-CAM needs a map fine enough to point at a nodule: the deepest candidate
#: block whose output has at least this many pixels on its shorter side is used
#: (ResNet-18 at 224x224: layer4, 7x7; at 64x64: layer2, 8x8).
MIN_CAM_SIDE = 7


def _candidates(module) -> list:
    import torch.nn as nn

    blocks = [getattr(module, n) for n in ("layer4", "layer3", "layer2", "layer1") if hasattr(module, n)]
    if blocks:
        return blocks
    if hasattr(module, "features"):  # efficientnet / mobilenet / convnext: their stages, deepest first
        return list(module.features)[::-1]
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer to take Grad-CAM from")
    return convs[::-1]


def default_layer(module):
    """The deepest block (``layer4`` of a ResNet); :func:`grad_cam` steps back from it
    while its map is coarser than ``MIN_CAM_SIDE``."""
    return _candidates(module)[0]


def grad_cam(module, x, target: int | Sequence[int] | None = None, layer: Any = None) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] for input ``x`` ``(N, C, H, W)``.

    ``target``: class index (or one per image); ``None`` explains each image's
    predicted class.  ``layer``: a submodule, its dotted name (e.g.
    ``"layer3"``), or ``None``: the deepest block whose map is at least
    ``MIN_CAM_SIDE`` pixels on its shorter side.
    """
    import torch
    import torch.nn.functional as F

    if layer is None:
        layers = _candidates(module)
    elif isinstance(layer, str):
        layers = [module.get_submodule(layer)]
    else:
        layers = [layer]
    param = next(module.parameters())
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    x = x.to(device=param.device, dtype=param.dtype)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    acts: dict[int, Any] = {}

    def make_hook(i):
        def hook(_m, _inp, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                out.retain_grad()
                acts[i] = out
        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(layers)]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # grads must flow even if the weights are frozen
            logits = module(x)
            if target is None:
                idx = logits.argmax(dim=1)
            else:
                idx = torch.as_tensor(np.broadcast_to(np.asarray(target), (x.shape[0],)).copy(),
                                      device=logits.device, dtype=torch.long)
            module.zero_grad(set_to_none=True)
            logits.gather(1, idx[:, None]).sum().backward()
            if not acts:
                raise ValueError("the chosen layer produced no (N, C, H, W) activation")
            # deepest layer (lowest index) whose map is fine enough, else the finest seen
            fine = [i for i in sorted(acts) if min(acts[i].shape[2:]) >= MIN_CAM_SIDE]
            act = acts[fine[0]] if fine else acts[max(acts)]
            weights = act.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * act).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0]
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    cam = cam.detach().float().cpu().numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam /= np.where(peak > 0, peak, 1.0)[:, None, None]
    return cam.astype(np.float32)


def to_frame(cam: np.ndarray, frame_hw: tuple[int, int], roi: Sequence[int] | None = None) -> np.ndarray:
    """Map a network-input-sized map back onto the original frame (zeros outside the ROI)."""
    import torch
    import torch.nn.functional as F

    h, w = int(frame_hw[0]), int(frame_hw[1])
    if roi is None:
        x0, y0, rw, rh = 0, 0, w, h
    else:
        x0, y0, rw, rh = (int(v) for v in roi)
        # preprocessing clips the ROI to the frame; do the same
        x1, y1 = min(x0 + rw, w), min(y0 + rh, h)
        x0, y0 = max(x0, 0), max(y0, 0)
        rw, rh = max(x1 - x0, 1), max(y1 - y0, 1)
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    resized = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False)[0, 0].numpy()
    full = np.zeros((h, w), np.float32)
    full[y0:y0 + rh, x0:x0 + rw] = resized[: h - y0, : w - x0]
    return full


def overlay(frame: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """RGB uint8 image: the frame in gray with the heat map blended on top."""
    from matplotlib import colormaps

    f = np.asarray(frame)
    if f.ndim == 3:
        f = f[..., :3].mean(axis=2)
    f = f.astype(np.float32)
    hi = float(f.max()) if f.size else 1.0
    gray = f / (hi if hi > 0 else 1.0)
    if cam.shape != gray.shape:
        raise ValueError(f"cam shape {cam.shape} differs from the frame's {gray.shape}")
    heat = colormaps[cmap](np.clip(cam, 0, 1))[..., :3]
    # Blend only where there is evidence, so the anatomy stays readable elsewhere.
    a = (alpha * np.clip(cam, 0, 1))[..., None]
    rgb = (1 - a) * gray[..., None] + a * heat
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_overlay(path: str | Path, frame: np.ndarray, cam: np.ndarray, **kwargs) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(frame, cam, **kwargs)).save(path)
    return path
