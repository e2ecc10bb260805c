"""Run a reader in a child process with a deadline (``read(..., timeout=s)``).

The child is killed when the deadline passes or when it dies (a decoder crash
in C code), and either becomes an InputError instead of taking the caller down.
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable

from ..errors import InputError

__all__ = ["call_with_timeout"]


def _child(conn, fn, args) -> None:
    try:
        result = ("ok", fn(*args))
    except InputError as exc:
        result = ("input_error", (exc.code, str(exc), exc.source))
    except BaseException as exc:  # reported, never raised in the child
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(result)
    finally:
        conn.close()


def call_with_timeout(fn: Callable, args: tuple, *, timeout: float, source: str | None = None) -> Any:
    # forkserver/spawn: never fork a parent that may hold threads (torch, BLAS)
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise InputError("timeout", f"decoding took longer than {timeout:g} s", source=source)
        try:
            status, payload = recv.recv()
        except EOFError:
            raise InputError("unreadable", f"the decoder crashed (exit code {proc.exitcode})", source=source) from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        recv.close()
    if status == "ok":
        return payload
    if status == "input_error":
        code, message, src = payload
        prefix = f"[{code}] "
        message = message[len(prefix):] if message.startswith(prefix) else message
        suffix = f" ({src})" if src else ""
        message = message[: -len(suffix)] if suffix and message.endswith(suffix) else message
        raise InputError(code, message, source=src)
    raise InputError("unreadable", f"cannot decode the file ({payload})", source=source)
