"""Options that several commands take, defined once: ``add_<option>(parser, ...)`` adds one to a parser.

The choices come from the library's own constants (the core's denoise / normalize
modes, :data:`thyrofast.io.schema.CROP_MODES`, the engines' backends, devices and
precisions, the aggregation rules, the model architectures), so a mode the library
gains is offered on the command line without retyping it here.  A command whose
help text or default differs passes its own; the flag, its type and its choices
stay one definition.

Only the standard library is imported at module level: every command's
``add_arguments`` runs for ``thyrofast <command> --help``.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

#: what ``--device`` adds to the library's devices: pick CUDA when there is one
AUTO = "auto"


def _default_first(values: Iterable[str], default: str | None, last: Sequence[str] = ()) -> tuple[str, ...]:
    """``values`` with ``default`` first and ``last`` last (the order the help text shows), the rest in order."""
    values = tuple(values)
    head = (default,) if default in values else ()
    tail = tuple(v for v in last if v in values and v not in head)
    return head + tuple(v for v in values if v not in head and v not in tail) + tail


def denoise_choices() -> tuple[str, ...]:
    """The core's noise reductions, the default (srad) first and "none" last."""
    from thyrofast import PreprocessParams, _core

    return _default_first(_core.Denoise.__members__, PreprocessParams.denoise, last=("none",))


def normalize_choices() -> tuple[str, ...]:
    """The core's gray-level normalizations, the default (percentile) first and "none" last."""
    from thyrofast import PreprocessParams, _core

    return _default_first(_core.Normalize.__members__, PreprocessParams.normalize, last=("none",))


def add_denoise(p: argparse.ArgumentParser, *, help: str = "preprocessing noise reduction (default: srad)") -> None:
    p.add_argument("--denoise", default=None, choices=denoise_choices(), help=help)


def add_normalize(p: argparse.ArgumentParser, *,
                  help: str = "preprocessing gray-level normalization (default: percentile)") -> None:
    p.add_argument("--normalize", default=None, choices=normalize_choices(), help=help)


def preprocess_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``--denoise`` / ``--normalize`` as given, for a ``preprocess=`` argument (the ones left out: the defaults)."""
    return {k: v for k, v in (("denoise", args.denoise), ("normalize", args.normalize)) if v}


def add_crop(p: argparse.ArgumentParser, *, default: str | None = None, help: str | None = None,
             choices: Sequence[str] | None = None) -> None:
    """``--crop``: the crops of :func:`thyrofast.read` (``choices`` narrows or extends them)."""
    from thyrofast.io.schema import CROP_MODES

    p.add_argument("--crop", default=default, choices=tuple(CROP_MODES if choices is None else choices), help=help)


def add_mask_annotations(p: argparse.ArgumentParser, *, help: str, negatable: bool = False) -> None:
    """``--mask-annotations``: :func:`thyrofast.read`'s ``mask_annotations`` (burned-in calipers and text
    inside the field filled from the tissue around); ``negatable``: ``--no-mask-annotations`` too and the
    default None (not given: the command's own default, e.g. a bundle's)."""
    if negatable:
        p.add_argument("--mask-annotations", default=None, action=argparse.BooleanOptionalAction, help=help)
    else:
        p.add_argument("--mask-annotations", action="store_true", help=help)


def add_device(p: argparse.ArgumentParser, *, default: str = AUTO, auto: bool = True, help: str | None = None,
               checked: bool = True) -> None:
    """``--device``: the engines' devices (and "auto" unless ``auto=False``), ``default`` listed first;
    ``checked=False`` leaves the name to the library to check."""
    from thyrofast.engines.select import DEVICES

    choices = _default_first((*DEVICES, AUTO) if auto else DEVICES, default) if checked else None
    p.add_argument("--device", default=default, choices=choices, help=help)


def add_backend(p: argparse.ArgumentParser, *, help: str | None = None, checked: bool = True) -> None:
    """``--backend`` (default auto); ``checked=False`` leaves the name to the library to check."""
    from thyrofast.engines.base import BACKENDS

    p.add_argument("--backend", default=AUTO, choices=(AUTO, *BACKENDS) if checked else None, help=help)


def add_precision(p: argparse.ArgumentParser) -> None:
    """``--precision`` of the inference engine (default auto: the best the backend offers)."""
    from thyrofast.engines.base import PRECISIONS

    p.add_argument("--precision", default=AUTO, choices=(AUTO, *PRECISIONS))


def add_threads(p: argparse.ArgumentParser, *, help: str, default: int | None = None) -> None:
    p.add_argument("--threads", type=int, default=default, help=help)


def add_no_progress(p: argparse.ArgumentParser, *, help: str = "no progress bar", quiet: bool = False) -> None:
    """``--no-progress`` (dest ``no_progress``); ``quiet=True`` also accepts the older spelling ``--quiet``."""
    flags = ("--no-progress", "--quiet") if quiet else ("--no-progress",)
    p.add_argument(*flags, dest="no_progress", action="store_true", help=help)


def add_arch(p: argparse.ArgumentParser) -> None:
    """``--arch``: the model architectures, default as ``thyrofast train``."""
    from thyrofast.models import ARCHS
    from thyrofast.train.loop import DEFAULTS

    p.add_argument("--arch", default=DEFAULTS.arch, choices=ARCHS, help="default: %(default)s")


def add_aggregation(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--aggregation``: the image -> patient rule a training fits, default as ``thyrofast train``."""
    from thyrofast.aggregation import MEAN_LOG_PROB, POOLED_LOGISTIC
    from thyrofast.train.loop import DEFAULTS

    p.add_argument("--aggregation", default=DEFAULTS.aggregation, choices=(POOLED_LOGISTIC, MEAN_LOG_PROB),
                   help=help)


def add_endpoint(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--endpoint NAME=A+B`` (repeatable): a named binary endpoint."""
    p.add_argument("--endpoint", action="append", default=None, metavar="NAME=A+B", help=help)


def add_bootstrap(p: argparse.ArgumentParser, *, help: str) -> None:
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help=help)


def add_workers(p: argparse.ArgumentParser, *, help: str, default: int | None = 2) -> None:
    p.add_argument("--workers", type=int, default=default, help=help)


def add_seed(p: argparse.ArgumentParser, *, default: int = 0, help: str | None = None) -> None:
    p.add_argument("--seed", type=int, default=default, help=help)
