"""File-system primitives used everywhere: bounded regular-file reads, SHA-256, atomic writes.

* :func:`open_regular` / :func:`read_regular` / :func:`sha256_file` open only
  regular files and never read past the size ``stat`` reported.  A FIFO blocks
  ``open``/``read`` until a writer appears (forever, in a batch run);
  ``/dev/zero`` or ``/dev/urandom`` never end.  Both can arrive as an input
  path, directly, inside a folder, or behind a symlink.  Every reader of user
  files (hashing, decoding) goes through here so that none of them can hang or
  read without bound.
* :func:`atomic_write` (and the ``_bytes`` / ``_text`` / ``_json`` shortcuts)
  write a temp file in the target's folder and ``os.replace`` it over the
  target, so a crash leaves the old file or the whole new one, never half.

This module imports only the standard library and :mod:`thyrofast.errors`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError

__all__ = ["open_regular", "read_regular", "sha256_file", "sha256_bytes",
           "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json"]

_CHUNK = 1 << 20


# --------------------------------------------------------------------- bounded regular-file reads
def open_regular(path: str | os.PathLike, max_bytes: int | None = None) -> tuple[int, int]:
    """``(fd, size)`` of the regular file ``path`` (symlinks followed), opened read-only.

    Raises :class:`InputError`: ``unreadable`` (missing, a folder, a FIFO, a
    device, a socket, no permission) or ``too_large`` (over ``max_bytes``).
    The caller closes ``fd``.
    """
    source = os.fspath(path)
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise InputError("unreadable", "no such file", source=source) from None
    except OSError as exc:
        raise InputError("unreadable", f"cannot open: {exc.strerror or exc}", source=source) from None
    _check_kind(st, source)
    try:
        # O_NONBLOCK: should a FIFO be swapped in after the stat, open() returns
        # instead of waiting for a writer; the fstat below then refuses it.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError("unreadable", f"cannot open: {exc.strerror or exc}", source=source) from None
    try:
        st = os.fstat(fd)
        _check_kind(st, source)
        if max_bytes is not None and st.st_size > max_bytes:
            raise InputError("too_large", f"file of {st.st_size} bytes exceeds the limit of {max_bytes} bytes",
                             source=source)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _check_kind(st: os.stat_result, source: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputError("unreadable", "is a directory, not a file", source=source)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError("unreadable", f"is {kind}; only regular files are read", source=source)


def _chunks(fd: int, size: int, source: str):
    """The file's first ``size`` bytes in blocks (fewer if it shrank meanwhile)."""
    left = size
    try:
        while left > 0:
            block = os.read(fd, min(_CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block
    except OSError as exc:
        raise InputError("unreadable", f"cannot read the file ({exc.strerror or exc})", source=source) from None


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``: at most the size ``stat`` gave."""
    fd, size = open_regular(path, max_bytes)
    try:
        return b"".join(_chunks(fd, size, os.fspath(path)))
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike, max_bytes: int | None = None) -> str:
    """SHA-256 (hex) of the regular file ``path``, reading at most the size ``stat`` gave.

    ``max_bytes``: refuse (``InputError('too_large')``) a larger file before
    reading it.  Not a regular file (FIFO, device, folder, missing):
    ``InputError('unreadable')``.
    """
    fd, size = open_regular(path, max_bytes)
    h = hashlib.sha256()
    try:
        for block in _chunks(fd, size, os.fspath(path)):
            h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The temp file lives in the same folder (same file system, so the rename is
    atomic); on error it is removed.  With ``fsync`` (the default) the file and
    then the folder are fsynced, so the new content survives a power loss too;
    ``fsync=False`` for bulk outputs that are cheap to regenerate.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
        if fsync:
            with contextlib.suppress(OSError):  # make the rename itself durable
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = True, **dumps: Any) -> None:
    """``obj`` as JSON (default: ``indent=2``, no NaN) plus a newline, written atomically."""
    opts = {"indent": 2, "sort_keys": False, "allow_nan": False, **dumps}
    atomic_write_text(path, json.dumps(obj, **opts) + "\n", fsync=fsync)
