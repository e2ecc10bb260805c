"""``thyrofast`` command line: a thin dispatcher over the Python API.

Each subcommand lives in its own module of this package exposing
``add_arguments(parser)`` and ``main(args) -> int``; the module is imported only
when its command runs, so ``thyrofast info`` never pays for importing torch.
Options several commands share are defined once in :mod:`thyrofast.cli._options`;
a command that fails raises :class:`thyrofast.cli._errors.CommandError`, which
:func:`main` alone turns into ``thyrofast <command>: <message>`` and an exit status.
The library never imports this package (tests/test_layering.py).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from thyrofast import _extras
from thyrofast.cli._errors import CommandError, report

# name -> (module, one-line help).  Keep in the order a newcomer meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("thyrofast.cli.demo", "reproduce the paper's study end to end on the phantom cohort"),
    "study": ("thyrofast.cli.study", "run a pre-specified study protocol (replicates x information ladder), resumably"),
    "synth": ("thyrofast.cli.synth", "generate a synthetic thyroid ultrasound cohort"),
    "pretrain": ("thyrofast.cli.pretrain", "pretrain the CNN on many distinct phantom lesions (findings, diagnoses)"),
    "check": ("thyrofast.cli.check", "check a data set: duplicates across patients, manifest problems, class balance"),
    "cv": ("thyrofast.cli.cv", "patient-level k-fold cross-validation with repeats (mean ± SD, out-of-fold predictions)"),
    "train": ("thyrofast.cli.train", "train a CNN and write a model bundle"),
    "export": ("thyrofast.cli.export", "(re)build a bundle's ONNX artifacts (FP32, FP16, INT8)"),
    "predict": ("thyrofast.cli.predict", "classify images/DICOM files with a bundle"),
    "evaluate": ("thyrofast.cli.evaluate", "metrics, reader comparison, report and figures"),
    "bench": ("thyrofast.cli.bench", "benchmark preprocessing / inference against peers"),
    "preprocess": ("thyrofast.cli.preprocess", "run the preprocessing core on image files"),
    "info": ("thyrofast.cli.info", "show the build and the available backends"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thyrofast",
        description="Fast thyroid ultrasound classification (BTN / NMTN / MMTN).",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        args = parser.parse_args(argv)
        if args.version:
            from thyrofast import __version__

            print(__version__)
            return 0
        parser.print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    try:
        return _run(name, rest)
    except CommandError as exc:  # every command's failure reads "thyrofast <command>: <message>"
        return report(name, exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(name: str, rest: list[str]) -> int:
    """Import command ``name``, parse ``rest`` and run it; what keeps it from running is a CommandError."""
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise CommandError("this command is not available in this build") from exc
        raise CommandError(_missing(exc)) from exc
    parser = argparse.ArgumentParser(prog=f"thyrofast {name}", description=help_)
    try:
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        return int(module.main(args) or 0)
    except ModuleNotFoundError as exc:
        # an optional package (an extra) the command needs and that is not installed: one line, not a
        # traceback (a module missing inside an installed package is a broken install: its traceback stays)
        if not isinstance(exc, _extras.MissingExtra) and (
                not _extras.is_optional(exc.name) or _extras.importable(exc.name.partition(".")[0])):
            raise
        raise CommandError(_missing(exc)) from exc
    except RuntimeError as exc:
        if "THYROFAST_CPU_VARIANT" not in str(exc):
            raise
        raise CommandError(str(exc)) from exc  # a forced CPU variant this machine cannot run


def _missing(exc: ModuleNotFoundError) -> str:
    """One line that names the missing package and the extra that brings it."""
    if isinstance(exc, _extras.MissingExtra):
        return str(exc)
    if _extras.is_optional(exc.name):
        return _extras.missing_message(exc.name)
    return f"missing dependency {exc.name!r}; install it (e.g. pip install \"thyrofast[all]\")"
