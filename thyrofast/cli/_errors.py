"""One path from a failure to an exit status.

A command that cannot go on raises :class:`CommandError` (its message and exit
status, 2 unless it says otherwise); :func:`thyrofast.cli.main` is the one place
that catches it and prints ``thyrofast <command>: <message>`` on stderr.
:func:`reported` turns the library's user-facing errors raised in a block into
one, so a command names which errors it expects and how they read, once.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

#: bad usage, or input the command cannot use at all
EXIT_USAGE = 2


class CommandError(Exception):
    """A command failed: ``message`` goes to stderr after ``thyrofast <command>: ``, the exit status is ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.code = code


def reason(exc: BaseException) -> str:
    """An OSError's strerror ("Permission denied"), else the exception's message."""
    return str(getattr(exc, "strerror", None) or exc)


@contextlib.contextmanager
def reported(*types: type[BaseException], prefix: str = "error: ", code: int = EXIT_USAGE,
             strerror: bool = False) -> Iterator[None]:
    """Raise CommandError(``prefix`` + the exception's message, ``code``) for an exception of ``types`` in the block.

    ``strerror``: an OSError reads as its strerror alone (:func:`reason`), without errno and file name.
    """
    try:
        yield
    except types as exc:
        raise CommandError(prefix + (reason(exc) if strerror else str(exc)), code) from exc


def report(command: str, exc: CommandError) -> int:
    """Print ``exc`` for ``command`` and return its exit status."""
    print(f"thyrofast {command}: {exc.message}", file=sys.stderr)
    return exc.code
