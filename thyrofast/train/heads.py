"""The class head(s) of a network and the multi-task wrapper that adds the auxiliary finding head."""
from __future__ import annotations

__all__ = ["head", "class_heads", "multi_task"]


def head(model):
    """The final Linear layer (whose bias carries the prior correction)."""
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AssertionError("model has no Linear head")  # pragma: no cover
    return linears[-1]


def class_heads(model) -> list:
    """The class head of each ensemble member, or of the one network."""
    members = getattr(model, "members", None)
    return [head(m) for m in members] if members is not None else [head(model)]


def multi_task(model, width: int):
    """The model plus a linear head of auxiliary findings on its pooled features.

    A forward hook on the class head grabs its input, so any architecture with a
    final Linear class head works; ``close()`` removes the hook (export sees the bare
    model).  Defined in a function because torch is imported lazily.
    """
    import torch.nn as nn

    class MultiTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.aux = nn.Linear(head(model).in_features, width)
            self._feats = None
            self._hook = head(model).register_forward_hook(self._grab)

        def _grab(self, module, inputs, output):
            self._feats = inputs[0]

        def forward(self, x):
            logits = self.model(x)
            feats, self._feats = self._feats, None
            return logits, self.aux(feats)

        def close(self):
            self._hook.remove()
            self._feats = None

    return MultiTask()
