"""Starting weights for fine-tuning: ``thyrofast train --init PATH``.

``PATH`` may be

* a model bundle folder (its ``weights.safetensors``);
* a ``.safetensors`` file: a single network, or an ensemble
  (``thyrofast pretrain --members N``; one member is taken, ``member``,
  default 0: training fine-tunes one network);
* a PyTorch / torchvision / timm state dict converted to ``.safetensors``.
  thyrofast never unpickles (``tests/test_hardening_predict.py``), so a
  ``.pt`` / ``.pth`` file is refused, pointing to the conversion you run on
  your own, trusted file (docs/own-data.md, "Fine-tuning from a pretrained file";
  ``tools/state_dict_to_safetensors.py`` in the source tree).  ``module.``
  prefixes (DataParallel) are stripped.

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


def prepare_init(path: str | os.PathLike, work: str | os.PathLike, *, arch: str, in_channels: int, width: float,
                 member: int | None = None) -> tuple[str, str]:
    """A single-network ``.safetensors`` file for ``path`` (see the module doc) in ``work``, checked
    against ``arch`` / ``in_channels`` / ``width``; returns (file, one-line description)."""
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
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
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
        raise ValueError(f"--init {src}: a pickled PyTorch checkpoint, and thyrofast never unpickles; convert "
                         "your own, trusted file to .safetensors first (docs/own-data.md, 'Fine-tuning from a pretrained "
                         "file', or tools/state_dict_to_safetensors.py)")
    else:
        raise ValueError(f"--init {src}: expected a bundle folder or a .safetensors file")
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
