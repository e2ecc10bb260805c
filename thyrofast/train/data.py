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
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io.frame import hash_patient_id

__all__ = ["Record", "read_manifest", "manifest_csv", "assign_splits", "Split", "load_frames", "data_fingerprint",
           "decode_image"]

CLASSES = ("BTN", "NMTN", "MMTN")
MANIFEST_NAME = "manifest.csv"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Record:
    path: Path          # absolute
    rel: str            # relative to the manifest's folder when inside it (for the fingerprint)
    patient_id: str
    label: int          # index into CLASSES
    split: str | None   # train / val / test / None
    frame_index: int = 0


def _manifest_path(data: str | os.PathLike) -> Path:
    data = Path(data)
    if data.is_dir():
        data = data / MANIFEST_NAME
    if not data.is_file():
        raise InputError("bad_manifest", "no manifest: pass a manifest CSV or a folder holding "
                         f"{MANIFEST_NAME} (columns path, patient_id, label[, split])", source=str(data))
    return data


def _is_class_folders(data: str | os.PathLike) -> bool:
    """A folder laid out as ``BTN/ NMTN/ MMTN/`` (no manifest.csv): see :func:`thyrofast.io.scan_folder`."""
    d = Path(data)
    return (d.is_dir() and not (d / MANIFEST_NAME).is_file()
            and any(p.is_dir() and p.name.upper() in CLASSES for p in d.iterdir()))


def manifest_csv(data: str | os.PathLike) -> Path | None:
    """The manifest CSV behind ``data``; None for a class-folder layout (which has no annotations)."""
    return None if _is_class_folders(data) else _manifest_path(data)


def read_manifest(data: str | os.PathLike) -> list[Record]:
    """Read a cohort manifest (docs/contracts.md) with :func:`thyrofast.io.read_manifest`.

    ``data``: the CSV, a folder holding ``manifest.csv``, or a folder laid out
    as ``BTN/ NMTN/ MMTN/`` with one sub-folder per patient
    (:func:`thyrofast.io.scan_folder`).  Rows without a ``frame_index`` use
    the file's first frame.
    """
    from ..io import read_manifest as io_read_manifest
    from ..io import scan_folder

    path = manifest_csv(data)
    if path is None:
        root = Path(data).resolve()
        rows = scan_folder(root)
    else:
        root = path.parent.resolve()
        rows = io_read_manifest(path)
    out = []
    for r in rows:
        p = Path(r.path)
        try:
            rel = p.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(p)
        out.append(Record(p, rel, str(r.patient_id), int(r.label), r.split,
                          int(r.frame_index or 0)))
    return out


@dataclasses.dataclass
class Split:
    train: list[int]    # record indices
    val: list[int]
    test: list[int]
    val_source: str     # "manifest" or "carved from train (seeded, stratified by patient label)"


def assign_splits(records: Sequence[Record], *, val_fraction: float = 0.15, seed: int = 0) -> Split:
    """Patient-level train/val/test split; raises InputError for leaks or empty classes.

    Splits from the manifest are used as given.  Without a ``val`` split, a
    seeded ``val_fraction`` of the training *patients* (stratified by label)
    becomes validation.  Rows without a split count as training rows.
    """
    patient_split: dict[str, str] = {}
    patient_label: dict[str, int] = {}
    for r in records:
        s = r.split or "train"
        if patient_split.setdefault(r.patient_id, s) != s:
            raise InputError("bad_split", f"patient {hash_patient_id(r.patient_id)} appears in both the "
                             f"{patient_split[r.patient_id]!r} and {s!r} splits: splits must be by "
                             "patient, or validation/test results leak", source=str(r.path))
        if patient_label.setdefault(r.patient_id, r.label) != r.label:
            raise InputError("bad_manifest", f"patient {hash_patient_id(r.patient_id)} has images labelled both "
                             f"{CLASSES[patient_label[r.patient_id]]} and {CLASSES[r.label]}",
                             source=str(r.path))
    source = "manifest"
    if "val" not in patient_split.values():
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        source = f"carved from train ({val_fraction:.0%} of patients per class, seed {seed})"
        for k in range(len(CLASSES)):
            pats = sorted(p for p, s in patient_split.items() if s == "train" and patient_label[p] == k)
            n_val = int(round(len(pats) * val_fraction))
            if len(pats) >= 2:
                n_val = min(max(n_val, 1), len(pats) - 1)  # keep >= 1 on each side
            else:
                n_val = 0
            for p in rng.permutation(pats)[:n_val]:
                patient_split[str(p)] = "val"
    split = Split([], [], [], source)
    for i, r in enumerate(records):
        getattr(split, patient_split[r.patient_id]).append(i)
    for name in ("train", "val"):
        present = {records[i].label for i in getattr(split, name)}
        absent = [CLASSES[k] for k in range(len(CLASSES)) if k not in present]
        if absent:
            raise InputError("empty", f"the {name} split has no {'/'.join(absent)} images; every class "
                             f"needs training and validation patients", source=None)
    return split


def decode_image(record: Record, crop: str = "auto") -> np.ndarray:
    """The record's frame as the preprocessing core takes it, read by :func:`thyrofast.read`
    with ``crop`` (the reader ``thyrofast predict`` uses with the bundle's ``read``
    options, so training sees what inference sees)."""
    from ..io import read

    frames = read(record.path, frames=[record.frame_index], crop=crop)
    return frames[0].pixels


def data_fingerprint(records: Sequence[Record], split: Split) -> str:
    """SHA-256 over (path, patient, label, split) of every row (file contents: load_frames' key)."""
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        for i in getattr(split, name):
            r = records[i]
            h.update(json.dumps([r.rel, r.patient_id, r.label, name]).encode())
    return h.hexdigest()


def load_frames(records: Sequence[Record], indices: Sequence[int], params, *,
                cache_dir: str | os.PathLike | None = None, threads: int | None = None,
                progress: bool = True, crop: str = "auto") -> tuple[np.ndarray, str]:
    """Preprocess ``records[indices]`` with ``params`` -> float16 (N, C, H, W), content hash.

    With ``cache_dir``, the result is stored as ``frames-<key>.npy`` where the
    key covers the files' bytes and the parameters, and reused next time.
    """
    from tqdm.auto import tqdm

    from .. import Preprocessor

    params = params.replace(dtype="float32")
    pre = Preprocessor(params, threads=threads)
    h = hashlib.sha256(json.dumps([params.to_dict(), crop], sort_keys=True).encode())
    # Hash the raw bytes first: cheap, and it decides whether the cache is valid.
    for i in indices:
        r = records[i]
        try:
            data = r.path.read_bytes()
        except OSError as exc:
            raise InputError("unreadable", f"cannot read: {exc.strerror}", source=str(r.path)) from None
        h.update(hashlib.sha256(data).digest())
        h.update(str(r.frame_index).encode())
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
        out[j] = pre(decode_image(records[indices[j]], crop))[0]
    if cache is not None:
        from .._fs import atomic_write

        with atomic_write(cache) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
    return out, key
