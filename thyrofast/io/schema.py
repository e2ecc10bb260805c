"""The data layer's vocabulary, in one place: class names, split names, crop modes.

* :data:`DEFAULT_CLASSES` is the paper's preset (BTN / NMTN / MMTN), the class
  order of every output, manifest and report.  Functions that map label names
  take the class list as a parameter (``classes=DEFAULT_CLASSES``), so a later
  version can take the list from the data instead of the preset.
* :data:`SPLITS`: the split names a manifest may use.
* :data:`CROP_MODES`: what :func:`thyrofast.read` may crop to (``crop=``), the
  modes a bundle's ``read`` options may name.
* :data:`READ_KEYS` / :func:`file_read_options`: the :func:`thyrofast.read` options a
  model bundle records (its card's ``read`` field), so every step reads files the same way.

This module imports nothing from the rest of the package.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["DEFAULT_CLASSES", "SPLITS", "CROP_MODES", "RENDER_CROPS", "PICTURE_EXTENSIONS", "DICOM_EXTENSIONS",
           "IMAGE_EXTENSIONS", "READ_KEYS", "crop_mode", "file_read_options", "label_index",
           "classes_from_names"]

#: The paper's class preset: benign thyroid nodule, non-metastatic and metastatic malignant.
DEFAULT_CLASSES: tuple[str, ...] = ("BTN", "NMTN", "MMTN")
#: File name extensions of the picture formats :func:`thyrofast.read` opens (Pillow).
PICTURE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
#: Extensions DICOM files carry (a DICOM file may also have none: readers check the ``DICM`` preamble).
DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: What a folder walk (``scan_folder``, ``check``, ``predict``) takes as an image file.
IMAGE_EXTENSIONS: frozenset[str] = PICTURE_EXTENSIONS | DICOM_EXTENSIONS
#: Split names of a manifest's ``split`` column.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: ``thyrofast.read(crop=...)``: "auto" (the DICOM tissue region, else the whole frame), "detect"
#: (like auto, but the ultrasound field is detected when there are no regions), "regions" (the file
#: must have a DICOM tissue region), "none" (never crop), "panes" (like detect, but each B-mode pane
#: of a split-screen screenshot is its own frame, ``Frame.pane``).  The CLIs' ``--crop`` choices.
CROP_MODES: tuple[str, ...] = ("auto", "detect", "regions", "none", "panes")
#: The crops of a rendered phantom frame (pretraining's lexicon): "regions" is its true ultrasound
#: region, as a DICOM file's regions give it; "auto" is not offered (a rendering always has one).
RENDER_CROPS: tuple[str, ...] = ("detect", "regions", "none")
#: Older spellings, accepted and normalized: the lexicon called "regions" "region".
_CROP_ALIASES = {"region": "regions"}


def crop_mode(value: str, allowed: Sequence[str] = CROP_MODES) -> str:
    """``value`` as one of ``allowed`` (an older spelling normalized); ValueError otherwise."""
    v = _CROP_ALIASES.get(value, value) if isinstance(value, str) else value
    if v not in allowed:
        raise ValueError(f"crop must be one of {tuple(allowed)}, got {value!r}")
    return v


#: The :func:`thyrofast.read` options a bundle's card records in ``read`` (how training read the
#: files, so predict / evaluate / export / preprocess read them the same way): ``crop`` (one of
#: :data:`CROP_MODES`, default "auto") and ``mask_annotations`` (bool, default False; optional,
#: cards before it have only ``crop``).  csrc/runtime/card.cpp's ``kReadKeys`` mirrors it.
READ_KEYS: tuple[str, ...] = ("crop", "mask_annotations")


def file_read_options(read: str | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"crop": ..., "mask_annotations": ...}``: the read options of a bundle (its card's ``read``
    field) or of a training run, every key present with its default ("auto", False) where left out.

    ``read``: such a mapping, a crop mode alone (``"detect"``: that crop, unmasked), or None (the
    defaults).  Pass the result to :func:`thyrofast.read` as ``**opts``.  ValueError for an
    unknown key, a crop not in :data:`CROP_MODES` or a non-boolean ``mask_annotations``.
    """
    given: Mapping[str, Any] = {} if read is None else {"crop": read} if isinstance(read, str) else read
    if not isinstance(given, Mapping):
        raise ValueError(f"read options must be a mapping of {READ_KEYS}, got {read!r:.80}")
    unknown = sorted(set(given) - set(READ_KEYS))
    if unknown:
        raise ValueError(f"unknown read option(s) {unknown}: a bundle records {READ_KEYS}")
    mask = given.get("mask_annotations", False)
    if type(mask) is not bool and type(mask).__name__ != "bool_":  # numpy.bool_ too, never 0/1
        raise ValueError(f"mask_annotations must be True or False, got {mask!r:.80}")
    return {"crop": crop_mode(given.get("crop", "auto")), "mask_annotations": bool(mask)}


def label_index(value: Any, classes: Sequence[str] = DEFAULT_CLASSES) -> int:
    """``"BTN"``/``"nmtn"``/``2`` -> index into ``classes``; ValueError otherwise."""
    names = [str(c).upper() for c in classes]
    s = str(value).strip()
    if s.upper() in names:
        return names.index(s.upper())
    if s.isdigit() and int(s) < len(names):
        return int(s)
    raise ValueError(f"label must be one of {tuple(classes)}, got {s!r}")


def classes_from_names(names: Sequence[Any]) -> tuple[str, ...]:
    """The class list of a data set from its label names (a manifest's ``label`` column, or
    the class-folder names).

    Names are compared case-insensitively (the first spelling met is kept).  When every
    name is one of the paper's preset (BTN/NMTN/MMTN), the classes are those present in
    the preset's order; otherwise the names sorted case-insensitively (so ``benign`` comes
    before ``malignant``: for two classes the second is the positive class unless
    told otherwise).  ValueError for fewer than 2 classes.
    """
    seen: dict[str, str] = {}
    for v in names:
        s = str(v).strip()
        if s and s.casefold() not in seen:
            seen[s.casefold()] = s
    preset = {c.casefold(): c for c in DEFAULT_CLASSES}
    if seen and all(k in preset for k in seen):
        out = tuple(c for c in DEFAULT_CLASSES if c.casefold() in seen)
    else:
        out = tuple(seen[k] for k in sorted(seen))
    if len(out) < 2:
        raise ValueError(f"a data set needs 2 or more classes, found {len(out)} ({', '.join(out) or 'none'})")
    return out
