"""Open only regular files, and never read past the size ``stat`` reported.

The implementation lives in :mod:`thyrofast._fs` (one place for file-system
primitives); this module keeps the names the readers import.
"""
from __future__ import annotations

from .._fs import open_regular, read_regular
from .._fs import sha256_file as sha256_regular

__all__ = ["open_regular", "read_regular", "sha256_regular"]
