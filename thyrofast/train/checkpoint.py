"""Resumable training checkpoints: safetensors (tensors) + JSON (everything else).

Crash-safe without pickle: tensors go to a new ``ckpt-<epoch>.safetensors``
(written atomically), then ``checkpoint.json`` -- which names that file and its
SHA-256 -- is replaced atomically, then the previous tensor file is removed.  A
crash at any point leaves a consistent (file, JSON) pair.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .._fs import atomic_write_bytes, atomic_write_json, sha256_bytes
from ..errors import InputError

__all__ = ["save_checkpoint", "load_checkpoint", "optimizer_to_flat", "optimizer_from_flat",
           "CHECKPOINT_JSON"]

CHECKPOINT_JSON = "checkpoint.json"


def save_checkpoint(folder: str | os.PathLike, tensors: dict, meta: dict) -> Path:
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    name = f"ckpt-{int(meta['epoch']):04d}.safetensors"
    atomic_write_bytes(folder / name, data)
    old = _current_file(folder)
    atomic_write_json(folder / CHECKPOINT_JSON,
                      {**meta, "tensors": name, "sha256": sha256_bytes(data), "bytes": len(data)})
    if old is not None and old.name != name:
        old.unlink(missing_ok=True)
    return folder / name


def _current_file(folder: Path) -> Path | None:
    try:
        meta = json.loads((folder / CHECKPOINT_JSON).read_text())
        return folder / meta["tensors"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict, dict] | None:
    """(tensors, meta) of the last checkpoint in ``folder``, or None if there is none."""
    from safetensors.torch import load

    folder = Path(folder)
    jpath = folder / CHECKPOINT_JSON
    if not jpath.is_file():
        return None
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
        tpath = folder / meta["tensors"]
        if "/" in meta["tensors"] or "\\" in meta["tensors"]:
            raise KeyError("tensors")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError("unreadable", "corrupt training checkpoint (bad JSON)", source=str(jpath)) from None
    try:
        data = tpath.read_bytes()
    except FileNotFoundError:
        raise InputError("unreadable", "training checkpoint tensors are missing", source=str(tpath)) from None
    if sha256_bytes(data) != meta.get("sha256"):
        raise InputError("unreadable", "training checkpoint fails its SHA-256 check; delete the "
                         "checkpoint folder to start over", source=str(tpath))
    return load(data), meta


def optimizer_to_flat(optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON."""
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    groups = json.loads(json.dumps(sd["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
