"""Open only regular files, and never read past the size ``stat`` reported.

A FIFO blocks ``open``/``read`` until a writer appears (forever, in a batch
run); ``/dev/zero`` or ``/dev/urandom`` never end.  Both can arrive as an
input path, directly, inside a folder, or behind a symlink.  Every reader of
user files (hashing, decoding) goes through here so that none of them can hang
or read without bound.
"""
from __future__ import annotations

import hashlib
import os
import stat

from ..errors import InputError

__all__ = ["open_regular", "read_regular", "sha256_regular"]

_CHUNK = 1 << 20


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


def sha256_regular(path: str | os.PathLike, max_bytes: int | None = None) -> str:
    """SHA-256 (hex) of the regular file ``path``, reading at most the size ``stat`` gave."""
    fd, size = open_regular(path, max_bytes)
    h = hashlib.sha256()
    try:
        for block in _chunks(fd, size, os.fspath(path)):
            h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()
