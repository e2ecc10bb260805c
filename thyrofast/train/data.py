"""Training data: manifest -> patient-level splits -> preprocessed frames in memory.

Every image is decoded and preprocessed *once*, by thyrofast's own core with
the exact parameters the bundle will store, and cached as float16 in a
``.npy`` file keyed on the data fingerprint and the parameters; augmentation
then works on these tensors, so the CPU time goes to the CNN.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io.frame import hash_patient_id
from ..io.manifest import Record, expand_frames, manifest_csv, read_dataset
from ..io.schema import DEFAULT_CLASSES, file_read_options
from ..io.splits import assign_splits

__all__ = ["Record", "read_manifest", "manifest_csv", "split_records", "Split", "load_frames", "data_fingerprint",
           "decode_image"]


def read_manifest(data: str | os.PathLike, classes: Sequence[str] | None = None, *,
                  crop: str | None = None) -> list[Record]:
    """The training rows of a cohort: :func:`thyrofast.io.read_dataset`, one record per frame.

    ``data``: the CSV, a folder holding ``manifest.csv``, or a folder laid out
    as one sub-folder per class (``benign/ malignant/``, ``BTN/ NMTN/ MMTN/``) with one
    sub-folder per patient
    (:func:`thyrofast.io.scan_folder`).  A row without a ``frame_index`` means
    every frame of its file (as in ``predict`` and ``evaluate``): a cine
    becomes one training image per frame (:func:`thyrofast.io.expand_frames`).
    ``classes``: None (default) takes the classes from the data (the manifest's
    labels or the class-folder names, :func:`thyrofast.io.schema.classes_from_names`);
    each record's ``classes`` holds them.  ``crop="panes"``: one record per frame and B-mode
    pane (a split-screen screenshot gives one training image per pane, ``Record.pane``).
    """
    return expand_frames(read_dataset(data, classes=classes), crop=crop)


@dataclasses.dataclass
class Split:
    train: list[int]    # record indices
    val: list[int]
    test: list[int]
    val_source: str     # "manifest" or "carved from train (seeded, stratified by patient label)"


def split_records(records: Sequence[Record], *, val_fraction: float = 0.15, seed: int = 0,
                  classes: Sequence[str] = DEFAULT_CLASSES) -> Split:
    """Patient-level train/val/test split (record indices); InputError for leaks or empty classes.

    Splits from the manifest are used as given; rows without a split count as
    training rows.  Without a ``val`` split, a seeded ``val_fraction`` of the
    training *patients* (stratified by label) becomes validation
    (:func:`thyrofast.io.assign_splits` with ``keep=True, val_fraction=...``).
    """
    patient_label: dict[str, int] = {}
    for r in records:
        if patient_label.setdefault(r.patient_id, r.label) != r.label:
            raise InputError("bad_manifest", f"patient {hash_patient_id(r.patient_id)} has images labelled both "
                             f"{classes[patient_label[r.patient_id]]} and {classes[r.label]}",
                             source=str(r.path))
    given = [r if r.split else r.replace(split="train") for r in records]
    has_val = any(r.split == "val" for r in given)
    assigned = assign_splits(given, seed=seed, keep=True, val_fraction=val_fraction)
    source = "manifest" if has_val else (f"carved from train ({val_fraction:.0%} of patients per class, "
                                         f"seed {seed})")
    split = Split([], [], [], source)
    for i, r in enumerate(assigned):
        getattr(split, r.split).append(i)
    for name in ("train", "val"):
        present = {records[i].label for i in getattr(split, name)}
        absent = [classes[k] for k in range(len(classes)) if k not in present]
        if absent:
            raise InputError("empty", f"the {name} split has no {'/'.join(absent)} images; every class "
                             f"needs training and validation patients", source=None)
    return split


def decode_image(record: Record, read: str | Mapping[str, Any] | None = None) -> np.ndarray:
    """The record's frame as the preprocessing core takes it, read by :func:`thyrofast.read`
    with the read options ``read`` (``{"crop", "mask_annotations"}``, or a crop mode alone; see
    :func:`thyrofast.io.schema.file_read_options`): the options ``thyrofast predict`` reads files
    with from the bundle's ``read`` field, so training sees what inference sees.  With
    ``crop="panes"`` the record's ``pane`` (a record without one: a file with one pane only; a
    split screen is ``InputError('bad_manifest')``, never one pane of it silently)."""
    from ..io.reader import read as read_file

    opts = file_read_options(read)
    if record.frame_index is None:
        raise ValueError("decode_image takes one frame: expand the records first (read_manifest does)")
    frames = read_file(record.path, frames=[record.frame_index], **opts)
    if opts["crop"] != "panes":
        return frames[0].pixels
    if record.pane is None:
        if len(frames) > 1:
            raise InputError("bad_manifest", f"frame {record.frame_index} has {len(frames)} panes and the record "
                             "names none: expand the records with crop='panes' (read_manifest(crop=...))",
                             source=str(record.path))
        return frames[0].pixels
    got = [f for f in frames if f.pane == record.pane]
    if not got:
        raise InputError("frame_out_of_range", f"pane {record.pane} of frame {record.frame_index} asked, the "
                         f"frame has {len(frames)} pane(s)", source=str(record.path))
    return got[0].pixels


def data_fingerprint(records: Sequence[Record], split: Split) -> str:
    """SHA-256 over (path, patient, label, split) of every row (file contents: load_frames' key)."""
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        for i in getattr(split, name):
            r = records[i]
            h.update(json.dumps([r.rel if r.rel is not None else r.path, r.patient_id, r.label, name]).encode())
    return h.hexdigest()


def load_frames(records: Sequence[Record], indices: Sequence[int], params, *,
                cache_dir: str | os.PathLike | None = None, threads: int | None = None,
                progress: bool = True, read: str | Mapping[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """Preprocess ``records[indices]`` with ``params`` -> float16 (N, C, H, W), content hash.

    Each frame is read with the read options ``read`` (:func:`decode_image`; the bundle's
    ``read`` field, or a crop mode alone).  With ``cache_dir``, the result is stored as
    ``frames-<key>.npy`` where the key covers the files' bytes, the read options and the
    parameters, and reused next time.
    """
    from tqdm.auto import tqdm

    from .. import Preprocessor

    params = params.replace(dtype="float32")
    pre = Preprocessor(params, threads=threads)
    opts = file_read_options(read)
    # the key of unmasked reads is the one from before the option (caches stay valid)
    what = [params.to_dict(), opts["crop"]] + ([{"mask_annotations": True}] if opts["mask_annotations"] else [])
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    # Hash the raw bytes first: cheap, and it decides whether the cache is valid.
    for i in indices:
        r = records[i]
        try:
            data = Path(r.path).read_bytes()
        except OSError as exc:
            raise InputError("unreadable", f"cannot read: {exc.strerror}", source=str(r.path)) from None
        h.update(hashlib.sha256(data).digest())
        h.update(str(r.frame_index).encode() if r.pane is None else f"{r.frame_index}/{r.pane}".encode())
    key = h.hexdigest()
    cache = Path(cache_dir) / f"frames-{key[:32]}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        arr = np.load(cache, allow_pickle=False)
        if arr.shape == (len(indices), params.channels, *params.size):
            return arr, key
    c, (oh, ow) = params.channels, params.size
    out = np.empty((len(indices), c, oh, ow), np.float16)
    it = tqdm(range(len(indices)), desc="preprocess", unit="img", disable=not progress,
              leave=False, dynamic_ncols=True)
    for j in it:
        out[j] = pre(decode_image(records[indices[j]], opts))[0]
    if cache is not None:
        from .._fs import atomic_write

        with atomic_write(cache) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
    return out, key
