"""One writer per results file: an exclusive ``flock`` on ``<out>.lock``.

Two ``predict`` runs appending to one file would each keep their own idea of
its end (and truncate each other's records on recovery).  The second run is
refused at once (non-blocking) instead of waiting or interleaving.

The lock is a separate file beside the output, taken *before* the output is
opened, so a refused run never opens, creates or recovers the output.  The
lock file is removed when the lock is released; a run that finds its freshly
locked file already unlinked (the holder just finished) takes a new one, so
two runs can never hold locks on different inodes of the same name.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

__all__ = ["OutputLock", "lock_path"]


def lock_path(out: str | os.PathLike) -> Path:
    """``<out>.lock`` beside the file ``out`` names (symlinks resolved: two names, one lock)."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".lock")


class OutputLock:
    """Hold the exclusive lock of results file ``out``.

    ``busy_error``: the exception class raised (with a one-line message) when
    another run holds it -- the caller's own, so its users catch one type.
    """

    def __init__(self, out: str | os.PathLike, busy_error):
        self.path = lock_path(out)
        self._fd = -1
        for _ in range(100):  # each retry means a holder released between our open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise busy_error(
                        f"{out} is being written by another thyrofast run (lock {self.path} is held); "
                        "wait for it to finish or write to another --out") from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # locked a file its holder had just unlinked: try the current name
        raise busy_error(f"could not take the lock {self.path} (it keeps changing)")

    def release(self) -> None:
        if self._fd >= 0:
            # unlink while still holding the lock: a waiter that then locks the
            # old inode sees it is gone and retries on a fresh file
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = -1
