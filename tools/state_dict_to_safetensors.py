"""Convert a PyTorch checkpoint you trust (torchvision / timm ``.pth``) to ``.safetensors`` for
``thyrofast train --init``: ``python tools/state_dict_to_safetensors.py IN.pth OUT.safetensors``.

thyrofast itself never unpickles; this script does, once, on your own file, with
``weights_only=True`` (tensors and plain containers only).  A ``{"state_dict": ...}`` /
``{"model": ...}`` wrapper and DataParallel's ``module.`` prefix are unwrapped.
"""
from __future__ import annotations

import sys


def convert(src: str, dst: str) -> int:
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - e.g. a whole pickled model: its classes are not loaded
        raise SystemExit(f"{src}: no state dict of tensors that weights_only can read "
                         f"({type(exc).__name__}); save model.state_dict(), not the model") from None
    for key in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"{src}: no state dict of tensors (save model.state_dict(), not the model)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v.contiguous() for k, v in obj.items()}
    save_file(state, dst)
    return len(state)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(f"{convert(sys.argv[1], sys.argv[2])} tensors -> {sys.argv[2]}")
