"""Type and range checks of the model card's fields (``thyrofast.json``; docs/contracts.md).

A card is edited by hand more often than anyone admits, and every field that
reaches the numbers must be exactly what the code assumes: ``temperature:
Infinity`` made every probability 1/3, ``1e-320`` made them NaN, duplicate
class names mapped probabilities to the wrong columns, ``classes: "BTN"``
became the classes B, T, N and ``temperature: true`` was taken as 1.  So each
field is checked for its type *and* range when a bundle is opened (and when
one is written), and the first bad field is reported by name in one
:class:`~thyrofast.errors.InputError`.

The artifact entries (path, sha256, bytes) are checked in
:mod:`thyrofast.bundle` next to the hash verification; unknown top-level keys
are allowed (readers ignore keys they do not know).

Also here: :func:`parse_card`, the JSON reader for the card: bounded size,
bounded nesting (a deeply nested file raised ``RecursionError``), no
duplicate keys.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, NoReturn

__all__ = ["check_card_fields", "parse_card", "TEMPERATURE_RANGE", "MAX_CARD_BYTES", "MAX_CARD_DEPTH",
           "MAX_CLASSES"]

#: A calibration temperature outside this range is not a calibration (thyrofast
#: fits T in [0.05, 20]); it would flatten (T -> inf) or saturate/overflow (T -> 0)
#: every probability.
TEMPERATURE_RANGE = (0.01, 100.0)
MAX_CLASSES = 1000
MAX_SIDE = 4096  # as PreprocessParams.size
MAX_CARD_BYTES = 16 << 20
MAX_CARD_DEPTH = 64


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), type(v).__name__)


def check_card_fields(m: dict, bad: Callable[[str], NoReturn]) -> None:
    """Check every non-artifact field of the card ``m``; ``bad(message)`` raises.

    ``m`` has already been checked to be a dict with the required keys.
    """
    def field(name: str, msg: str) -> NoReturn:
        bad(f"field {name!r} {msg}")

    if not _is_int(m["format_version"]):  # True == 1 and 1.0 == 1 passed the version check
        field("format_version", f"must be an integer, got {m['format_version']!r:.60}")

    # classes: the column names of the probabilities, in the model's output order
    classes = m["classes"]
    if not isinstance(classes, list):
        field("classes", f"must be a list of class names, got {_type(classes)} {classes!r:.60}")
    if not 2 <= len(classes) <= MAX_CLASSES:
        field("classes", f"must name 2 to {MAX_CLASSES} classes, got {len(classes)}")
    seen: dict[str, int] = {}
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c.strip() or c != c.strip() or not c.isprintable():
            field("classes", f"entry {i} must be a non-empty printable string without surrounding "
                             f"spaces, got {c!r:.60}")
        key = c.upper()  # labels are matched case-insensitively (thyrofast.io.label_index)
        if key in seen:
            field("classes", f"names {c!r} twice (entries {seen[key]} and {i}): each probability "
                             "column needs its own name")
        seen[key] = i

    # the network
    from .models import ARCHS, check_members

    arch = m["arch"]
    if not isinstance(arch, str) or arch not in ARCHS:
        field("arch", f"must be one of {', '.join(ARCHS)}, got {arch!r:.60}")
    in_ch = m["in_channels"]
    if not _is_int(in_ch) or in_ch not in (1, 3):
        field("in_channels", f"must be the integer 1 or 3, got {in_ch!r:.60}")
    if "width" in m:
        w = m["width"]
        if not _is_number(w) or not math.isfinite(w) or not 0 < w <= 4:
            field("width", f"must be a number in (0, 4], got {w!r:.60}")
    if "members" in m:
        try:
            check_members(m["members"])
        except ValueError as exc:
            field("members", str(exc).replace("members ", "", 1))
    if "model" in m and not isinstance(m["model"], dict):
        field("model", f"must be an object, got {_type(m['model'])}")

    # input_shape and the preprocessing that fills it
    shape = m["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
        field("input_shape", f"must be [C, H, W] (three integers), got {shape!r:.60}")
    if shape[0] not in (1, 3) or not all(1 <= v <= MAX_SIDE for v in shape[1:]):
        field("input_shape", f"must have C in (1, 3) and 1 <= H, W <= {MAX_SIDE}, got {shape}")
    if shape[0] != in_ch:
        field("input_shape", f"has {shape[0]} channel(s) but in_channels is {in_ch}")
    pre = m["preprocess"]
    if not isinstance(pre, dict):
        field("preprocess", f"must be an object of preprocessing parameters, got {_type(pre)} {pre!r:.60}")
    from .preprocessing import PreprocessParams

    try:
        params = PreprocessParams.from_dict(pre)
    except (TypeError, ValueError) as exc:
        field("preprocess", f"is not valid preprocessing: {exc}")
    if [params.channels, *params.size] != list(shape):
        field("preprocess", f"gives inputs of shape {[params.channels, *params.size]}, but input_shape "
                            f"is {shape}")

    # calibration and aggregation: they turn logits into the reported numbers
    if "temperature" in m:
        t = m["temperature"]
        lo, hi = TEMPERATURE_RANGE
        if not _is_number(t):
            field("temperature", f"must be a number, got {_type(t)} {t!r:.60}")
        if not (math.isfinite(t) and lo <= t <= hi):
            field("temperature", f"must be a finite number in [{lo}, {hi}], got {t!r}")
    from .aggregation import check_spec

    try:
        check_spec(m.get("aggregation"), len(classes))
    except (TypeError, ValueError) as exc:
        field("aggregation", str(exc))
    if m.get("operating_point") is not None:  # the decision threshold train chose (thyrofast.operating_point)
        from .operating_point import check_operating_point

        try:
            check_operating_point(m["operating_point"], classes)
        except ValueError as exc:
            field("operating_point", str(exc))

    if m.get("endpoints") is not None:  # named binary endpoints (thyrofast.evaluate.endpoints)
        ep = m["endpoints"]
        if not (isinstance(ep, dict) and all(
                isinstance(k, str) and k.strip() and isinstance(v, list) and v
                and all(isinstance(c, str) and c in classes for c in v) and len(set(v)) == len(v) < len(classes)
                for k, v in ep.items())):
            field("endpoints", f"must map names to lists of the classes {list(classes)} (not all of them), "
                               f"got {ep!r:.80}")
    # clinical outputs (optional; bundles written before them have neither and load unchanged)
    if m.get("conformal") is not None:  # prediction sets calibrated on validation patients (thyrofast.conformal)
        from .conformal import check_conformal

        try:
            check_conformal(m["conformal"], classes)
        except ValueError as exc:
            field("conformal", str(exc))
    if m.get("ood") is not None:  # the out-of-distribution gate fitted on training frames (thyrofast.ood)
        from .ood import check_ood

        try:
            check_ood(m["ood"], classes)
        except ValueError as exc:
            field("ood", str(exc))

    # the rest
    rd = m.get("read", {"crop": "auto"})
    from .io.schema import CROP_MODES as READ_CROPS
    from .io.schema import READ_KEYS

    # {"crop": ..., "mask_annotations": bool}: the thyrofast.read options training used; mask_annotations
    # is optional (absent: False, as in the cards written before it)
    if not (isinstance(rd, dict) and set(rd) <= set(READ_KEYS) and isinstance(rd.get("crop", "auto"), str)
            and rd.get("crop", "auto") in READ_CROPS and isinstance(rd.get("mask_annotations", False), bool)):
        field("read", f"must be {{'crop': one of {READ_CROPS}, 'mask_annotations': True or False (optional)}}, "
                      f"got {rd!r:.80}")
    if "training" in m and not isinstance(m["training"], dict):
        field("training", f"must be an object, got {_type(m['training'])}")
    if "thyrofast_version" in m and not isinstance(m["thyrofast_version"], str):
        field("thyrofast_version", f"must be a string, got {_type(m['thyrofast_version'])}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice in one object (which one counts is not defined)")
        out[k] = v
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth_ok(text: str, limit: int) -> bool:
    """Whether no bracket nesting in ``text`` exceeds ``limit`` (string contents skipped)."""
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


def parse_card(data: bytes) -> Any:
    """The card's JSON, or ``ValueError`` with a one-line reason (size, encoding, nesting, syntax).

    Nesting is bounded before the parser runs (a deeply nested file would raise
    ``RecursionError`` inside ``json``), and a key given twice in one object is
    refused instead of silently taking the last value.
    """
    if len(data) > MAX_CARD_BYTES:
        raise ValueError(f"{len(data)} bytes; a model card is at most {MAX_CARD_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc})") from None
    if not _depth_ok(text, MAX_CARD_DEPTH):
        raise ValueError(f"nested more than {MAX_CARD_DEPTH} levels deep")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:  # belt and braces: the depth check above should make this unreachable
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
