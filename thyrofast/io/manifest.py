"""Data sets on disk: CSV manifests and folder-per-class layouts -> :class:`Record` lists.

The one record type and manifest reader of the package: ``train``,
``evaluate`` and ``export`` read cohorts through here.

Manifest (docs/contracts.md): UTF-8 CSV with a header; required ``path``
(relative to the manifest's folder, or absolute), ``patient_id``, ``label``
(BTN/NMTN/MMTN); optional ``split`` (train/val/test), ``view``,
``frame_index``, ``pane`` (one B-mode pane of a split-screen screenshot read with
``crop="panes"``, 0-based left to right); other columns (the synthetic cohort's features, posteriors)
are kept in ``Record.extra``.  A row without a ``frame_index`` stands for
*every* frame of its file (:func:`expand_frames` makes one record per frame,
and with ``crop="panes"`` one per frame and pane).

Patient ids are hashed (:func:`hash_patient_id`) in everything written or
logged here; error messages name patients only by their hash.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .._fs import atomic_write
from ..errors import InputError
from .frame import hash_patient_id
from .schema import DEFAULT_CLASSES, IMAGE_EXTENSIONS, PICTURE_EXTENSIONS, SPLITS, classes_from_names, label_index
from .splits import check_split

__all__ = ["Record", "read_manifest", "read_dataset", "manifest_csv", "write_manifest", "scan_folder",
           "expand_frames", "count_panes", "MANIFEST_NAME"]

log = logging.getLogger("thyrofast.io")

#: The manifest a cohort folder holds.
MANIFEST_NAME = "manifest.csv"
_KNOWN = ("path", "patient_id", "label", "split", "view", "frame_index", "pane")
IMAGE_EXTS = IMAGE_EXTENSIONS | {""}  # "": extensionless DICOM files


@dataclasses.dataclass(frozen=True)
class Record:
    """One row of a data set: an image file (or one frame of it) with its patient and label."""

    path: str  # absolute
    patient_id: str
    label: int  # index into ``classes``
    split: str | None = None
    frame_index: int | None = None  # None: every frame of the file (see expand_frames)
    view: str | None = None
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    #: the path relative to the data set's folder when inside it (posix separators), else ``path``
    rel: str | None = dataclasses.field(default=None, compare=False)
    #: the data set's class list, which ``label`` indexes (the preset unless read with ``classes=None``)
    classes: tuple[str, ...] = dataclasses.field(default=DEFAULT_CLASSES, compare=False, repr=False)
    #: ``crop="panes"``: the B-mode pane of the frame (0-based, left to right); None: the whole crop
    #: (every pane, for records expanded with ``crop="panes"``)
    pane: int | None = None

    @property
    def label_name(self) -> str:
        return self.classes[self.label]

    def replace(self, **changes: Any) -> "Record":
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # never print a raw patient id
        return (f"Record({os.path.basename(self.path)!r}, patient={hash_patient_id(self.patient_id)}, "
                f"label={self.label_name}, split={self.split}, frame_index={self.frame_index}"
                + ("" if self.pane is None else f", pane={self.pane}") + ")")


def _rel(path: str, root: str) -> str:
    """``path`` relative to ``root`` (both resolved) in posix form when inside it, else ``path``."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def read_manifest(path: str | os.PathLike, *, check_files: bool = False,
                  classes: Sequence[str] | None = DEFAULT_CLASSES) -> list[Record]:
    """Read a CSV manifest; ``InputError('bad_manifest')`` names the first bad line.

    ``classes``: the label names allowed (``Record.label`` indexes them); ``None``
    takes them from the ``label`` column (:func:`thyrofast.io.schema.classes_from_names`:
    the preset's order when the labels are preset names, else sorted).
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    rows = manifest_rows(path, required=("path", "patient_id", "label"), allow_empty=True,
                         need="a manifest needs path, patient_id, label[, split]")
    try:
        if classes is None and rows:
            try:
                classes = classes_from_names(_field(row, "label") for _, row in rows)
            except ValueError as exc:
                raise InputError("bad_manifest", f"label column: {exc}", source=path) from None
        classes = tuple(classes or DEFAULT_CLASSES)
        records = [_record(row, base, line=line, source=path, classes=classes) for line, row in rows]
    except InputError:
        raise
    if not records:
        raise InputError("empty", "the manifest has no rows", source=path)
    if check_files:
        absent = [r.path for r in records if not os.path.isfile(r.path)]
        if absent:
            raise InputError("bad_manifest", f"{len(absent)} file(s) not found, e.g. {absent[0]}", source=path)
    _check_consistent(records, path)
    check_split(records, source=path)
    return records


def manifest_rows(path: str | os.PathLike, *, required: Sequence[str] = ("path",), need: str = "",
                  allow_empty: bool = False) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` of each row of a CSV manifest, header names stripped (UTF-8, a BOM allowed).

    The one CSV reader of manifests (training's :func:`read_manifest`, ``predict``'s inputs):
    ``InputError("bad_manifest")`` when it cannot be read or lacks a ``required`` column (``need``
    says what a manifest needs), ``InputError("empty")`` when it has no rows (unless ``allow_empty``).
    """
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError("bad_manifest", f"missing column(s) {missing}" + (f"; {need}" if need else ""),
                                 source=path)
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("bad_manifest", f"cannot read the manifest ({type(exc).__name__}: {exc})",
                         source=path) from None
    if not rows and not allow_empty:
        raise InputError("empty", "the manifest has no rows", source=path)
    return rows


#: What a data set may be, for error messages.
LAYOUT_RULE = (f"pass a manifest CSV, a folder holding {MANIFEST_NAME} (columns path, patient_id, label[, split]), "
               "or a folder with one sub-folder per class (2 or more, named by the class, e.g. benign/ "
               "malignant/ or BTN/ NMTN/ MMTN/), each holding images or one folder per patient")


def _subfolders(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except OSError:
        return []


def manifest_csv(data: str | os.PathLike) -> str | None:
    """The manifest CSV behind ``data`` (the CSV, or a folder holding ``manifest.csv``);
    None for a class-folder layout (a folder without ``manifest.csv`` that has
    sub-folders: ``benign/ malignant/``, ``BTN/ NMTN/ MMTN/``; it annotates nothing)."""
    data = os.fspath(data)
    if os.path.isdir(data) and not os.path.isfile(os.path.join(data, MANIFEST_NAME)):
        if _subfolders(data):
            return None
        raise InputError("bad_manifest", f"no {MANIFEST_NAME} and no class sub-folders: {LAYOUT_RULE}",
                         source=data)
    path = os.path.join(data, MANIFEST_NAME) if os.path.isdir(data) else data
    if not os.path.isfile(path):
        raise InputError("bad_manifest", f"no manifest: {LAYOUT_RULE}", source=path)
    return path


def read_dataset(data: str | os.PathLike, *, classes: Sequence[str] | None = DEFAULT_CLASSES,
                 **scan: Any) -> list[Record]:
    """Records of a data set given as a manifest CSV, a folder holding ``manifest.csv``, or a
    folder of class folders (:func:`scan_folder`, which takes ``scan``).  ``classes``: the
    allowed class names, or None to take them from the data (labels / folder names)."""
    path = manifest_csv(data)
    return scan_folder(data, classes=classes, **scan) if path is None else read_manifest(path, classes=classes)


def expand_frames(records: Iterable[Record], *, max_bytes: int | None = None,
                  crop: str | None = None) -> list[Record]:
    """One record per frame: a record without ``frame_index`` becomes one record for every
    frame of its file (frame count from the header, :func:`thyrofast.io.count_frames`);
    records that name a frame are kept.  Order: the records', then frame order.

    ``crop="panes"``: one record per frame *and* B-mode pane (:func:`thyrofast.read` with
    ``crop="panes"`` decodes each frame once here to find its panes); records that name a
    pane are kept.  Order: frame, then pane (left to right)."""
    from .reader import DEFAULT_MAX_BYTES, count_frames

    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    out: list[Record] = []
    for r in records:
        if r.frame_index is not None:
            per_frame = [r]
        else:
            try:
                n = count_frames(r.path, max_bytes=max_bytes)
            except OSError as exc:
                raise InputError("unreadable", f"cannot read: {exc.strerror or exc}", source=r.path) from None
            per_frame = [r.replace(frame_index=i) for i in range(n)]
        if crop == "panes" and r.pane is None:
            out.extend(q.replace(pane=k) for q in per_frame
                       for k in range(count_panes(q.path, q.frame_index, max_bytes=max_bytes)))
        else:
            out.extend(per_frame)
    return out


def count_panes(path: str, frame_index: int = 0, *, max_bytes: int | None = None) -> int:
    """How many frames ``thyrofast.read(path, crop="panes", frames=[frame_index])`` gives: the
    B-mode panes of that frame (1 for a file cropped to its DICOM tissue region)."""
    from .reader import DEFAULT_MAX_BYTES, read

    return len(read(path, crop="panes", frames=[frame_index],
                    max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes))


def _field(row: Mapping[str, Any], key: str) -> str:
    v = row.get(key)
    return "" if v is None else str(v).strip()


def _record(row: Mapping[str, Any], base: str, *, line: int, source: str,
            classes: tuple[str, ...] = DEFAULT_CLASSES) -> Record:
    where = f"line {line}"
    p, pid, lab = _field(row, "path"), _field(row, "patient_id"), _field(row, "label")
    if not p:
        raise InputError("bad_manifest", f"{where}: empty path", source=source)
    if not pid:
        raise InputError("bad_manifest", f"{where}: empty patient_id", source=source)
    try:
        label = label_index(lab, classes)
    except ValueError as exc:
        raise InputError("bad_manifest", f"{where}: {exc}", source=source) from None
    split = _field(row, "split").lower() or None
    if split is not None and split not in SPLITS:
        raise InputError("bad_manifest", f"{where}: split must be one of {SPLITS}, got {split!r}", source=source)
    frame_index, pane = (_index(row, k, where, source) for k in ("frame_index", "pane"))
    extra = {k: ("" if v is None else str(v)) for k, v in row.items()
             if k is not None and k not in _KNOWN}
    full = p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    return Record(full, pid, label, split, frame_index, _field(row, "view") or None, extra, _rel(full, base),
                  classes, pane)


def _index(row: Mapping[str, Any], key: str, where: str, source: str) -> int | None:
    """An optional index column (``frame_index``, ``pane``): None when empty, else an integer >= 0."""
    s = _field(row, key)
    if not s:
        return None
    try:
        v = int(s)
    except ValueError:
        v = -1
    if v < 0:
        raise InputError("bad_manifest", f"{where}: {key} must be an integer >= 0, got {s!r}", source=source)
    return v


def _check_consistent(records: list[Record], source: str) -> None:
    owner: dict[tuple[str, int | None, int | None], str] = {}
    for r in records:
        key = (r.path, r.frame_index, r.pane)
        prev = owner.setdefault(key, r.patient_id)
        if prev != r.patient_id:
            raise InputError("bad_manifest", f"{os.path.basename(r.path)} is listed for two patients "
                             f"({hash_patient_id(prev)} and {hash_patient_id(r.patient_id)})", source=source)


def write_manifest(records: Iterable[Record], path: str | os.PathLike, *, hash_ids: bool = True,
                   salt: str | None = None) -> str:
    """Write records as a manifest CSV (paths relative to its folder when below it).

    Patient ids are written hashed unless ``hash_ids=False`` (only for ids that
    are not identifying, e.g. a synthetic cohort's).
    """
    path = os.fspath(path)
    records = list(records)
    base = os.path.dirname(os.path.abspath(path))
    extra_cols: list[str] = []
    for r in records:
        for k in r.extra:
            if k not in extra_cols and k not in _KNOWN:
                extra_cols.append(k)
    panes = any(r.pane is not None for r in records)  # the pane column only where a record names one
    cols = ["path", "patient_id", "label", "split", "view", "frame_index", *(["pane"] if panes else []),
            *extra_cols]
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in records:
            rel = os.path.relpath(r.path, base)
            p = r.path if rel.startswith("..") else rel.replace(os.sep, "/")
            pid = hash_patient_id(r.patient_id, salt=salt) if hash_ids else r.patient_id
            w.writerow([p, pid, r.label_name, r.split or "", r.view or "",
                        "" if r.frame_index is None else r.frame_index,
                        *(["" if r.pane is None else r.pane] if panes else []),
                        *(r.extra.get(k, "") for k in extra_cols)])
    return path


def _dicom_patient(path: str, salt: str | None) -> str | None:
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return hash_patient_id(ds.get("PatientID"), salt=salt)
    except Exception:
        return None


def scan_folder(root: str | os.PathLike, *, patient_from: str | Callable[[str], str] = "auto",
                salt: str | None = None, classes: Sequence[str] | None = DEFAULT_CLASSES) -> list[Record]:
    """Records from a folder-per-class layout ``root/<class>/...``.

    ``classes``: the class folders looked for (names compared case-insensitively;
    default the preset ``BTN/ NMTN/ MMTN/``), or None: every non-hidden sub-folder
    is a class, named by the folder (2 or more; the preset's order when they are
    the preset's names, else sorted: :func:`thyrofast.io.schema.classes_from_names`).

    ``patient_from``: ``"folder"`` (``root/BTN/<patient>/<files>``), ``"dicom"``
    (the hashed DICOM PatientID), ``"file"`` (the file name without extension:
    one patient per image), a callable ``path -> id``, or ``"auto"``
    (folder when files sit in a sub-folder, else the DICOM PatientID, else the
    file name).  Hidden files and files that are not images/DICOM are skipped.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise InputError("bad_manifest", "not a folder", source=root)
    if not (callable(patient_from) or patient_from in ("auto", "folder", "dicom", "file")):
        raise ValueError(f"patient_from must be auto/folder/dicom/file or a callable, got {patient_from!r}")
    found = _subfolders(root)
    shown = ", ".join(f"{n}/" for n in found) or "none"
    if classes is None:
        try:
            classes = classes_from_names(found)
        except ValueError:
            raise InputError("bad_manifest", f"class folders found: {shown}; a class-folder layout needs 2 or more "
                             "sub-folders, one per class, named by the class (e.g. benign/ malignant/), each "
                             "holding images or one folder per patient", source=root) from None
    classes = tuple(classes)
    keys = [c.casefold() for c in classes]
    class_dirs: dict[int, str] = {}
    for name in found:
        if name.casefold() in keys:
            k = keys.index(name.casefold())
            if k in class_dirs:
                raise InputError("bad_manifest", f"two folders for class {classes[k]}", source=root)
            class_dirs[k] = os.path.join(root, name)
    if not class_dirs:
        raise InputError("bad_manifest", f"no class folders ({', '.join(classes)}) inside; sub-folders found: "
                         f"{shown}.  {LAYOUT_RULE[0].upper()}{LAYOUT_RULE[1:]}", source=root)
    records: list[Record] = []
    by_file = 0
    for cls, cdir in class_dirs.items():
        for dirpath, dirnames, filenames in os.walk(cdir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                ext = os.path.splitext(fn)[1].lower()
                if fn.startswith(".") or (ext not in IMAGE_EXTS and not ext[1:].isdigit()):
                    continue
                fpath = os.path.join(dirpath, fn)
                rel_parts = os.path.relpath(fpath, cdir).split(os.sep)
                pid = _patient_for(fpath, rel_parts, patient_from, salt)
                if pid is None:
                    raise InputError("bad_manifest", f"no patient id for {os.path.relpath(fpath, root)} "
                                     f"(patient_from={patient_from!r})", source=root)
                if pid[1] == "file":
                    by_file += 1
                records.append(Record(fpath, pid[0], cls, rel=_rel(fpath, root), classes=classes))
    if not records:
        raise InputError("empty", "the class folders hold no image or DICOM files", source=root)
    if by_file:
        log.warning("%d image(s) have no patient folder or DICOM PatientID; each counts as its own patient, "
                    "so splits are per image for them", by_file)
    return records


def _patient_for(fpath: str, rel_parts: list[str], how, salt) -> tuple[str, str] | None:
    if callable(how):
        v = how(fpath)
        return (str(v), "callable") if v not in (None, "") else None
    if how in ("auto", "folder") and len(rel_parts) > 1:
        return rel_parts[0], "folder"
    if how == "folder":
        return None
    if how in ("auto", "dicom"):
        pid = _dicom_patient(fpath, salt) if os.path.splitext(fpath)[1].lower() not in (
            PICTURE_EXTENSIONS) else None
        if pid is not None:
            return pid, "dicom"
        if how == "dicom":
            return None
    return os.path.splitext(os.path.basename(fpath))[0], "file"
