"""Starting weights for fine-tuning: ``thyrofast train --init PATH``.

``PATH`` may be

* a model bundle folder (its ``weights.safetensors``);
* a ``.safetensors`` file: a single network, or an ensemble
  (``thyrofast pretrain --members N``; one member is taken, ``member``,
  default 0: training fine-tunes one network);
* a PyTorch state dict (``.pt`` / ``.pth`` / ``.bin``, e.g. a torchvision or
  timm ResNet checkpoint a user has on disk), read with
  ``torch.load(weights_only=True)`` (tensors only, no code); a
  ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and DataParallel's
  ``module.`` prefix are unwrapped.

Whatever the source, the result is a single-network ``.safetensors`` file in
the bundle's work folder that :func:`thyrofast.models.load_pretrained` loads
(the classifier head only when its shape fits the data's classes; an RGB stem
is summed to one gray channel).  A checkpoint that does not fit the
architecture is refused here, before any data is read, with the first tensor
that differs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["prepare_init", "TORCH_SUFFIXES"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _unwrap(obj, source: str) -> dict:
    import torch

    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source} holds no state dict of tensors (a whole pickled model is not read: save "
                         "model.state_dict() instead)")
    out = {}
    for k, v in obj.items():
        k = str(k)
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = v.detach().cpu().contiguous()
    return out


def prepare_init(path: str | os.PathLike, work: str | os.PathLike, *, arch: str, in_channels: int, width: float,
                 member: int | None = None) -> tuple[str, str]:
    """A single-network ``.safetensors`` file for ``path`` (see the module doc) in ``work``, checked
    against ``arch`` / ``in_channels`` / ``width``; returns (file, one-line description)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..models import _MEMBER_PREFIX, build_model, load_pretrained, pretrained_members

    src = Path(path)
    if src.is_dir():
        if not (src / "weights.safetensors").is_file():
            raise ValueError(f"--init {src}: a folder must be a model bundle (weights.safetensors)")
        src = src / "weights.safetensors"
    if not src.is_file():
        raise ValueError(f"--init {path}: no such file")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    meta: dict = {}
    if src.suffix == ".safetensors":
        n = pretrained_members(src)
        with safe_open(str(src), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
        what = f"{src.name}" + (f" ({n}-member ensemble)" if n > 1 else "")
        if n > 1:
            m = 0 if member is None else int(member)
            if not 0 <= m < n:
                raise ValueError(f"--init-member {m}: {src} has members 0..{n - 1}")
            pre = f"{_MEMBER_PREFIX}{m}."
            state = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
            what += f", member {m}"
        elif member not in (None, 0):
            raise ValueError(f"--init-member {member}: {src} is a single network")
    elif src.suffix.lower() in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(src), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
            raise ValueError(f"--init {src}: not a readable PyTorch state dict ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None
        state = _unwrap(obj, str(src))
        what = f"{src.name} (PyTorch state dict)"
    else:
        raise ValueError(f"--init {src}: expected a bundle folder, a .safetensors file or a PyTorch state dict "
                         f"({', '.join(TORCH_SUFFIXES)})")
    probe = build_model(arch, in_channels=in_channels, width=width)
    own = probe.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # heads of any class count stay (train picks)
    tmp = work / f"init-{digest}.{os.getpid()}.tmp.safetensors"
    try:
        save_file(state, str(tmp), metadata=meta or None)
        loaded = load_pretrained(probe, tmp)
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"--init {path} does not fit {arch} (width {width:g}, {in_channels} channel(s)): {exc}; "
                         "pass the --arch / --width the checkpoint was trained with") from None
    out = work / f"init-{digest}{'' if member is None else f'-m{member}'}.safetensors"
    os.replace(tmp, out)  # atomic: DDP ranks may prepare the same file
    return str(out), f"{what}: {len(loaded)} of the model's {len(own)} tensors"
