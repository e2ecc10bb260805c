"""The C++ card reader (csrc/runtime/card.cpp) names the same limits and vocabularies as the
Python loader it mirrors; a value changed on one side only fails here, before any build."""
from __future__ import annotations

import re

from conftest import REPO

CARD = (REPO / "csrc" / "runtime" / "card.cpp").read_text()


def _strings(name: str) -> tuple[str, ...]:
    m = re.search(rf"{name}\[\] = \{{(.*?)\}};", CARD, re.S)
    assert m, name
    return tuple(re.findall(r'"([^"]*)"', m.group(1)))


def _number(name: str) -> str:
    m = re.search(rf"{name} = ([^;]+);", CARD)
    assert m, name
    return m.group(1).strip()


def test_vocabularies_match_python():
    from thyrofast.io.schema import CROP_MODES
    from thyrofast.models import ARCHS

    assert _strings("kArchs") == tuple(ARCHS)
    assert _strings("kCrops") == tuple(CROP_MODES)


def test_read_keys_match_python():
    # the card's "read" options (crop, the optional mask_annotations) are the same on both sides
    from thyrofast.io.schema import READ_KEYS

    assert _strings("kReadKeys") == tuple(READ_KEYS)
    assert re.search(r'rd\["mask_annotations"\]\.is_boolean\(\)', CARD)


def test_limits_match_python():
    from thyrofast import card_schema, models, preprocessing

    assert _number("kMaxCardBytes") == "size_t{16} << 20" and card_schema.MAX_CARD_BYTES == 16 << 20
    assert int(_number("kMaxCardDepth")) == card_schema.MAX_CARD_DEPTH
    assert int(_number("kMaxClasses")) == card_schema.MAX_CLASSES
    assert int(_number("kMaxSide")) == card_schema.MAX_SIDE
    assert int(_number("kMaxMembers")) == models.MAX_MEMBERS
    assert _number("kMaxRoi") == "(int64_t{1} << 31) - 1" and preprocessing.MAX_ROI == (1 << 31) - 1
    lo, hi = (float(v) for v in _number("constexpr double kTemperatureLo").split(", kTemperatureHi = "))
    assert (lo, hi) == card_schema.TEMPERATURE_RANGE
