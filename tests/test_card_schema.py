"""Every model-card field is checked for type and range when a bundle is opened (issue 22, item 3).

Before: ``temperature: Infinity`` gave 1/3 for every class, ``1e-320`` NaN (then
a JSON traceback when writing), duplicate class names a wrong column mapping,
``classes: "BTN"`` the classes B/T/N, ``temperature: true`` was taken as 1, a
deeply nested card raised RecursionError and ``preprocess: "x"`` a TypeError.
Now each is one InputError that names the field.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from thyrofast.bundle import Bundle
from thyrofast.errors import InputError

import _bundle_fixture as fx


@pytest.fixture(scope="module")
def card(bundle_dir) -> dict:
    return json.loads((bundle_dir / "thyrofast.json").read_text())


def _write(folder, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thyrofast.json").write_text(text)
    return folder


def _edited(card: dict, path: tuple, value):
    new = json.loads(json.dumps(card))
    d = new
    for k in path[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return new


_DELETE = object()
INF = float("inf")

BAD_FIELDS = [
    # (path, value, field named in the message)
    (("temperature",), INF, "temperature"),
    (("temperature",), -INF, "temperature"),
    (("temperature",), float("nan"), "temperature"),
    (("temperature",), 1e-320, "temperature"),
    (("temperature",), 1e6, "temperature"),
    (("temperature",), 0, "temperature"),
    (("temperature",), True, "temperature"),
    (("temperature",), "1.5", "temperature"),
    (("temperature",), None, "temperature"),
    (("classes",), "BTN", "classes"),
    (("classes",), ["BTN", "NMTN", "BTN"], "classes"),
    (("classes",), ["BTN", "btn", "MMTN"], "classes"),
    (("classes",), ["BTN"], "classes"),
    (("classes",), [], "classes"),
    (("classes",), ["BTN", "", "MMTN"], "classes"),
    (("classes",), ["BTN", " NMTN", "MMTN"], "classes"),
    (("classes",), [1, 2, 3], "classes"),
    (("classes",), {"BTN": 0}, "classes"),
    (("preprocess",), "srad", "preprocess"),
    (("preprocess",), ["size", 64], "preprocess"),
    (("preprocess", "size"), 64.5, "preprocess"),
    (("preprocess", "size"), "64", "preprocess"),
    (("preprocess", "std"), 1e-45, "preprocess"),
    (("preprocess", "mean"), -1e39, "preprocess"),
    (("preprocess", "roi"), [0, 0, 10 ** 20, 10], "preprocess"),
    (("preprocess", "size"), [32, 32], "preprocess"),  # no longer fills input_shape
    (("preprocess", "bogus"), 1, "preprocess"),
    (("input_shape",), [1, 64], "input_shape"),
    (("input_shape",), [1, 64.0, 64], "input_shape"),
    (("input_shape",), [True, 64, 64], "input_shape"),
    (("input_shape",), [3, 64, 64], "input_shape"),  # in_channels is 1
    (("input_shape",), "1x64x64", "input_shape"),
    (("in_channels",), True, "in_channels"),
    (("in_channels",), 2, "in_channels"),
    (("arch",), "resnet9000", "arch"),
    (("arch",), ["resnet18"], "arch"),
    (("width",), INF, "width"),
    (("width",), -1, "width"),
    (("width",), "0.25", "width"),
    (("members",), 0, "members"),
    (("members",), True, "members"),
    (("model",), "resnet18", "model"),
    (("aggregation",), "median", "aggregation"),
    (("aggregation",), {"method": "pooled_logistic", "coef": "x"}, "aggregation"),
    (("read",), {"crop": "everything"}, "read"),
    (("read",), {"crop": ["auto"]}, "read"),
    (("read",), "auto", "read"),
    (("read",), {"crop": "detect", "mask_annotations": "yes"}, "read"),  # issue 24: a boolean only
    (("read",), {"crop": "detect", "mask_annotations": 1}, "read"),
    (("read",), {"crop": "detect", "mask_annotations": None}, "read"),
    (("read",), {"crop": "detect", "mask": True}, "read"),
    (("training",), "fine", "training"),
    (("thyrofast_version",), 1, "thyrofast_version"),
    (("format_version",), True, "format_version"),
    (("format_version",), 1.0, "format_version"),
]


@pytest.mark.parametrize("path, value, name", BAD_FIELDS,
                         ids=[f"{'.'.join(p)}={v!r:.20}" for p, v, _ in BAD_FIELDS])
def test_bad_field_is_one_input_error_naming_it(tmp_path, card, path, value, name):
    text = json.dumps(_edited(card, path, value))  # allow_nan: Infinity / NaN as a hand edit writes them
    _write(tmp_path / "b", text)
    with pytest.raises(InputError, match=rf"\b{name}\b") as info:  # the message names the field
        Bundle.load(tmp_path / "b", verify=False)
    assert info.value.code == "unreadable"
    assert "\n" not in str(info.value)


def test_the_fixture_card_itself_passes(tmp_path, card):
    Bundle.load(_write(tmp_path / "b", json.dumps(card)), verify=False)
    for t in (0.01, 0.05, 1, 20, 100):  # the sane range is inclusive
        Bundle.load(_write(tmp_path / f"t{t}", json.dumps(_edited(card, ("temperature",), t))), verify=False)


@pytest.mark.parametrize("read", [{"crop": "detect", "mask_annotations": True},
                                  {"crop": "auto", "mask_annotations": False}, {"mask_annotations": True},
                                  {"crop": "panes"}])
def test_read_may_name_mask_annotations(tmp_path, card, read):
    # issue 24: the optional boolean beside crop; a card without it (as before) reads unmasked
    b = Bundle.load(_write(tmp_path / "b", json.dumps(_edited(card, ("read",), read))), verify=False)
    assert b.read_options == {"crop": "auto", **read}


def test_deeply_nested_card_is_an_input_error_not_a_recursion_error(tmp_path, card):
    deep = json.dumps(card)[:-1] + ', "training_extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(InputError, match="nested"):
        Bundle.load(_write(tmp_path / "deep", deep), verify=False)
    # also inside a string-free but bracket-heavy object nest
    deep_obj = '{"a": ' * 50_000 + "1" + "}" * 50_000
    with pytest.raises(InputError, match="nested"):
        Bundle.load(_write(tmp_path / "deep2", deep_obj), verify=False)
    # brackets inside strings do not count as nesting
    ok = _edited(card, ("training",), {"note": "[" * 1000 + "{" * 1000})
    Bundle.load(_write(tmp_path / "ok", json.dumps(ok)), verify=False)


def test_duplicate_keys_are_refused(tmp_path, card):
    text = json.dumps(card)[:-1] + ', "temperature": 1.0}'  # "temperature" now appears twice
    with pytest.raises(InputError, match="twice"):
        Bundle.load(_write(tmp_path / "dup", text), verify=False)


def test_huge_card_is_refused_before_parsing(tmp_path, card):
    text = json.dumps(_edited(card, ("training",), {"blob": "x" * (17 << 20)}))
    with pytest.raises(InputError, match="bytes"):
        Bundle.load(_write(tmp_path / "huge", text), verify=False)


@pytest.mark.parametrize("edit, value", [("temperature", INF), ("temperature", 1e-320),
                                         ("classes", ["BTN", "BTN", "MMTN"]), ("classes", "BTN"),
                                         ("temperature", True)])
def test_classifier_refuses_an_edited_card(tmp_path, bundle_dir, card, edit, value):
    """The probe's cases end to end: no Classifier, so no wrong probabilities."""
    from thyrofast.classifier import Classifier

    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    (b / "thyrofast.json").write_text(json.dumps(_edited(card, (edit,), value)))
    with pytest.raises(InputError, match=rf"field '{edit}'"):
        Classifier.load(b, backend="onnxruntime", precision="fp32", threads=1)


def test_writers_validate_too(tmp_path, bundle_dir):
    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    bundle = Bundle.load(b)
    with pytest.raises(InputError, match="field 'temperature'"):
        bundle.update(temperature=float("inf"))
    with pytest.raises(InputError, match="field 'classes'"):
        bundle.update(classes=["A", "A", "B"])
    assert Bundle.load(b).temperature == fx.TEMPERATURE  # nothing was written
    bundle.update(temperature=2.0)
    assert Bundle.load(b).temperature == 2.0


def test_model_output_width_must_match_the_classes(tmp_path, bundle_dir, card):
    """Two class names for a three-logit model: refused at the first prediction, never zipped short."""
    from thyrofast.classifier import Classifier

    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    (b / "thyrofast.json").write_text(json.dumps(_edited(card, ("classes",), ["BTN", "MMTN"])))
    clf = Classifier.load(b, backend="onnxruntime", precision="fp32", threads=1)
    with pytest.raises(InputError, match="3 logits"):
        clf.predict(fx.phantom(1, seed=0)[0])
    assert np.asarray(clf.predict(np.zeros((0, 10, 10), np.uint8))).shape == (0, 2)
