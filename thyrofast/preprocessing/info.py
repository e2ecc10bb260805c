"""What this build of thyrofast contains (``thyrofast.build_info()``)."""
from __future__ import annotations

from typing import Any

from .. import _core
from .._version import __version__

__all__ = ["build_info"]


def build_info() -> dict[str, Any]:
    """What this build of thyrofast contains."""
    info = dict(_core.build_info())
    info["package_version"] = __version__
    info["cuda_devices"] = _core.cuda_device_count() if info["cuda"] else 0
    # "cluster:S" (sm_90+, S CTAs per frame) or "block" once a CUDA call ran in this process, else ""
    info["cuda_last_kernel"] = _core.cuda_last_kernel() if info["cuda"] else ""
    from ..runtime import status  # the C++ runtime (thyrofast._runtime): built and loadable, or why not

    info.update(status())
    return info
