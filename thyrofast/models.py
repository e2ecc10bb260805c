"""CNN architectures for thyrofast: torchvision models adapted to ultrasound.

Every model takes ``(N, in_channels, H, W)`` float input (1 channel by default:
ultrasound B-mode is grayscale; 3 = the gray image replicated) and returns
``(N, 3)`` logits in :data:`thyrofast.CLASSES` order.  Models are built from
scratch (no weights can be downloaded); a user's own pretrained checkpoint is
accepted only as ``.safetensors`` (never pickle).

ResNets take an optional ``width`` multiplier (1.0 = torchvision's network):
a half-width ResNet-18 has ~4x fewer multiply-adds, which is what makes
training on a 2-core CPU practical.

``members`` > 1 builds an ensemble: that many networks of the same
architecture whose logits are averaged (one graph, one bundle).  Its
state-dict keys are the members' own prefixed by ``members.<i>.``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ARCHS", "build_model", "load_pretrained", "pretrained_has_head", "pretrained_members",
           "count_parameters", "arch_config", "build_from_config", "MAX_MEMBERS", "check_members", "stack_members"]

NUM_CLASSES = 3
MAX_MEMBERS = 8
MEMBER_PREFIX = "members."  # an ensemble's state-dict keys: "members.<i>.<the member's key>"

#: Selectable architectures (``--arch``).  resnet18 is the default.
ARCHS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "convnext_tiny",
)
_RESNET_LAYERS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                  "resnet50": ("bottleneck", [3, 4, 6, 3])}


def arch_config(arch: str, in_channels: int = 1, width: float = 1.0, members: int = 1,
                num_classes: int = NUM_CLASSES) -> dict:
    """The JSON-safe description of a model that :func:`build_model` rebuilds."""
    _check_args(arch, in_channels, width, members, num_classes)
    cfg = {"arch": arch, "in_channels": int(in_channels), "width": float(width), "num_classes": int(num_classes)}
    if members > 1:  # absent for a single network, so older bundles read the same
        cfg["members"] = int(members)
    return cfg


def check_members(members: Any, name: str = "members") -> int:
    """``members`` as an ensemble size (an integer in [1, MAX_MEMBERS]); ValueError otherwise."""
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_MEMBERS:
        raise ValueError(f"{name} must be an integer in [1, {MAX_MEMBERS}], got {members!r}")
    return members


def stack_members(states: Sequence[Mapping[str, Any]]) -> dict:
    """The state dict of the ensemble (``build_model(members=len(states))``) of single networks' ``states``."""
    check_members(len(states), "the number of member state dicts")
    stacked = {}
    for i, state in enumerate(states):
        if any(k.startswith(MEMBER_PREFIX) for k in state):
            raise ValueError(f"member {i} is itself an ensemble")
        stacked.update({f"{MEMBER_PREFIX}{i}.{k}": v for k, v in state.items()})
    return stacked


def _check_args(arch: str, in_channels: int, width: float, members: int = 1, num_classes: int = NUM_CLASSES) -> None:
    check_members(members)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if not (isinstance(width, (int, float)) and 0.0 < float(width) <= 4.0):
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    if float(width) != 1.0 and arch not in _RESNET_LAYERS:
        raise ValueError(f"width multiplier is supported for resnets only, not {arch!r}")


def build_model(arch: str = "resnet18", *, in_channels: int = 1, width: float = 1.0,
                pretrained: str | os.PathLike | None = None, members: int = 1, num_classes: int = NUM_CLASSES):
    """Build ``arch`` for ``in_channels`` gray channels and ``num_classes`` classes (default 3, the preset).

    ``members`` > 1: an ensemble of that many such networks (mean of logits).

    ``pretrained``: optional path to a local ``.safetensors`` state dict (e.g.
    ImageNet weights a user converted).  Its first convolution may have 3 input
    channels; for a 1-channel model they are summed (the gray image replicated
    three times gives the same activations).  A classifier head of another
    shape (e.g. ImageNet's 1000 classes) is skipped.
    """
    _check_args(arch, in_channels, width, members, num_classes)
    import torch.nn as nn
    import torchvision.models as tvm

    if members > 1:
        model = _ensemble([build_model(arch, in_channels=in_channels, width=width, num_classes=num_classes)
                           for _ in range(members)])
    elif arch in _RESNET_LAYERS:
        model = _scaled_resnet(arch, in_channels, float(width), num_classes)
    else:
        model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        first = _first_conv_parent(model, arch)
        parent, attr = first
        old = getattr(parent, attr)
        setattr(parent, attr, nn.Conv2d(in_channels, old.out_channels, old.kernel_size,
                                        old.stride, old.padding, bias=old.bias is not None))
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def _ensemble(nets):
    import torch
    import torch.nn as nn

    class Ensemble(nn.Module):
        """Members of one architecture; the output is the mean of their logits."""

        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(nets)

        def forward(self, x):
            return torch.stack([m(x) for m in self.members]).mean(dim=0)

    return Ensemble()


def _first_conv_parent(model, arch: str):
    if arch in ("efficientnet_b0", "mobilenet_v3_large"):
        return model.features[0], "0"
    if arch == "convnext_tiny":
        return model.features[0], "0"
    raise AssertionError(arch)  # pragma: no cover


def _scaled_resnet(arch: str, in_channels: int, width: float, num_classes: int = NUM_CLASSES):
    """torchvision's ResNet with every stage's width scaled (same module names)."""
    import torch.nn as nn
    from torchvision.models import resnet as tvr

    kind, layers = _RESNET_LAYERS[arch]
    block = tvr.BasicBlock if kind == "basic" else tvr.Bottleneck
    planes = [max(8, int(round(p * width))) for p in (64, 128, 256, 512)]

    class ScaledResNet(tvr.ResNet):
        # Re-implements ResNet.__init__ with scaled stage widths; forward and
        # _make_layer are torchvision's own, so state-dict keys match torchvision.
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = planes[0]
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3,
                                   bias=False)
            self.bn1 = nn.BatchNorm2d(planes[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, planes[0], layers[0])
            self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
            self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
            self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(planes[3] * block.expansion, num_classes)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    ScaledResNet.__name__ = ScaledResNet.__qualname__ = "ResNet"
    return ScaledResNet()


#: State-dict key prefixes of the class head (torchvision's resnets: ``fc``; others: ``classifier``).
HEAD_PREFIXES = ("fc.", "classifier.")


def load_pretrained(model, path: str | os.PathLike) -> list[str]:
    """Load a local ``.safetensors`` checkpoint into ``model`` (backbone only).

    Returns the keys that were loaded.  Raises ValueError for a non-safetensors
    file or for a checkpoint that does not fit the architecture.
    """
    import torch
    from safetensors.torch import load_file

    path = _checkpoint_path(path)
    try:
        state = load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(f"{path} is not a readable .safetensors file: {exc}") from None
    own = model.state_dict()
    loaded = {}
    for key, value in state.items():
        if key not in own:
            continue
        if key.startswith(HEAD_PREFIXES) and own[key].shape != value.shape:
            continue  # the classification head is for another label set
        target = own[key]
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] != target.shape[1] \
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            # RGB stem -> gray stem: replicated gray input means summing filters.
            if target.shape[1] == 1:
                value = value.sum(dim=1, keepdim=True)
        if value.shape != target.shape:
            raise ValueError(f"pretrained tensor {key!r} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(target.shape)}")
        loaded[key] = value.to(target.dtype)
    if not loaded:
        raise ValueError(f"no tensor in {path} matches the model's parameter names")
    with torch.no_grad():
        model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def _checkpoint_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"pretrained checkpoints must be .safetensors (never pickle): {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return path


def _tensor_shapes(path: str | os.PathLike) -> dict[str, tuple]:
    """Names and shapes of a checkpoint's tensors (header only); ValueError if unreadable."""
    from safetensors import safe_open

    path = _checkpoint_path(path)
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(f"{path} is not a readable .safetensors file: {exc}") from None


def _split_member_key(key: str) -> tuple[str | None, str]:
    """``"members.<i>.<key>"`` -> (``"<i>"``, ``"<key>"``); a single network's key -> (None, key)."""
    if not key.startswith(MEMBER_PREFIX):
        return None, key
    index, _, own = key[len(MEMBER_PREFIX):].partition(".")
    return index, own


def pretrained_members(path: str | os.PathLike) -> int:
    """How many ensemble members the ``.safetensors`` file at ``path`` holds (1: a single network)."""
    idx = {_split_member_key(k)[0] for k in _tensor_shapes(path)} - {None}
    if not idx:
        return 1
    if idx != {str(i) for i in range(len(idx))}:
        raise ValueError(f"{path}: ensemble members must be numbered 0..n-1, found {sorted(idx)}")
    return len(idx)


def pretrained_has_head(path: str | os.PathLike, arch: str = "resnet18", in_channels: int = 1,
                        width: float = 1.0, num_classes: int | None = NUM_CLASSES) -> bool:
    """Whether the ``.safetensors`` file at ``path`` holds this model's ``num_classes``-class head
    (every member's, for an ensemble file); ``num_classes`` None: a class head for any number of classes."""
    members = pretrained_members(path)
    model = build_model(arch, in_channels=in_channels, width=width, members=members,
                        num_classes=NUM_CLASSES if num_classes is None else num_classes)
    head = {k: tuple(v.shape) for k, v in model.state_dict().items()
            if _split_member_key(k)[1].startswith(HEAD_PREFIXES)}
    shapes = _tensor_shapes(path)
    if num_classes is None:  # the class count is the first dimension of the head's tensors
        return all(k in shapes and shapes[k][1:] == shape[1:] for k, shape in head.items())
    return all(shapes.get(k) == shape for k, shape in head.items())


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_from_config(cfg: dict):
    """Rebuild the (untrained) model described by :func:`arch_config`'s dict."""
    return build_model(cfg["arch"], in_channels=int(cfg.get("in_channels", 1)),
                       width=float(cfg.get("width", 1.0)), members=int(cfg.get("members", 1)),
                       num_classes=int(cfg.get("num_classes", NUM_CLASSES)))
