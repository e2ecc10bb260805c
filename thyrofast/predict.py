"""Batch prediction over files, folders, DICOM and manifests, crash-safe and resumable.

Output (docs/contracts.md, "Prediction records"): one record per image, then
per-patient records.  Guarantees:

* **one record per input**: ``ok`` (one line per frame of the input; with a
  bundle that reads ``crop="panes"``, one per frame and B-mode pane, ``pane``
  its index, otherwise ``pane`` is null / empty) or
  ``error`` with the :class:`~thyrofast.errors.InputError` code;
* **atomic appends**: each input's lines go out in one ``write`` of whole
  lines, then flush + fsync.  A run killed at any point leaves at most one
  partial trailing line, which the next run truncates away before appending;
* **resumable**: an input whose path and file SHA-256 are already recorded is
  skipped (hashing happens before decoding, so a resume costs one read per
  done file); an interrupted-then-resumed run writes exactly what an
  uninterrupted one would.  Identical files at different paths each get their
  record (two patients' images may be byte-identical; none may go missing);
* **full disk**: a failed write is rolled back (``ftruncate`` to the last
  complete record) and :class:`OutputError` says what happened; the file is
  never left with a corrupt record.

Per-patient records (``kind: "patient"``) aggregate all ``ok`` image records
of the output with a non-null ``patient_id`` by mean log-probability.  They
are written at the end of a run; when a later run adds images of a patient, a
new patient record is appended and the *last* patient record of an id wins.

Each ``ok`` record has ``probs`` keyed by the bundle's classes, ``pred`` (the
argmax) and ``decision``: the class called at the bundle's operating point
(``P(positive) >= threshold``, :mod:`thyrofast.operating_point`), or the argmax
when the bundle has none.  CSV columns: :func:`csv_fields` (``prob_<class>``
for each of the bundle's classes).
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._fs import open_regular, sha256_file
from .classifier import bundle_aggregation, bundle_operating_point, bundle_read_options
from .clinical import clinical_fields
from .errors import InputError
from .io import schema
from .io.reader import DEFAULT_MAX_BYTES
from .io.schema import DEFAULT_CLASSES, file_read_options
from .operating_point import decide
from .output_lock import OutputLock

__all__ = [
    "predict_files",
    "expand_inputs",
    "InputItem",
    "RecordWriter",
    "OutputError",
    "PredictSummary",
    "CSV_FIELDS",
    "csv_fields",
]

IMAGE_EXTENSIONS = schema.IMAGE_EXTENSIONS | {".npy"}  # and NumPy arrays (predict only)
MANIFEST_EXTENSIONS = {".csv"}

_PROVENANCE_FIELDS = ("thyrofast", "bundle_sha256", "backend", "precision", "device")
_CSV_HEAD = ("kind", "input", "sha256", "frame_index", "pane", "patient_id", "status", "pred", "decision")
_CSV_TAIL = ("n_images", "error_code", "error_message", "saliency", *_PROVENANCE_FIELDS)


def csv_fields(classes: Sequence[str] = DEFAULT_CLASSES) -> tuple[str, ...]:
    """The CSV columns of a results file for a bundle with ``classes``: one ``prob_<class>`` each."""
    return (*_CSV_HEAD, *(f"prob_{c}" for c in classes), *_CSV_TAIL)


#: The CSV columns for the paper's preset (BTN/NMTN/MMTN); other bundles: :func:`csv_fields`.
CSV_FIELDS = csv_fields(DEFAULT_CLASSES)
#: DICOM modalities that are certainly not ultrasound (CT, MR, nuclear, X-ray, ...).  Others pass:
#: ultrasound often reaches PACS as secondary capture ("OT") or without a Modality.
NON_ULTRASOUND_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "CR", "DX", "MG", "XA", "RF", "RG", "IO", "PX",
                                       "OP", "OPT", "SM", "XC", "ES", "RTIMAGE"})


class OutputError(OSError):
    """The results file could not be written (e.g. the disk is full); it was left consistent."""


@dataclasses.dataclass(frozen=True)
class InputItem:
    path: str
    patient_id: str | None = None
    frame_index: int | None = None  # a manifest row may name one frame of a cine
    pane: int | None = None  # ... and one B-mode pane of it (read with crop="panes")


@dataclasses.dataclass
class PredictSummary:
    n_inputs: int = 0
    n_ok: int = 0
    n_error: int = 0
    n_skipped: int = 0
    #: inputs skipped now whose earlier record is an error (they still count as failed)
    n_error_recorded: int = 0
    n_frames: int = 0
    n_patients: int = 0
    seconds: float = 0.0
    error_codes: dict = dataclasses.field(default_factory=dict)
    #: settings (backend, precision, device) in which the resumed file's earlier records differ from this run
    mixed_settings: dict = dataclasses.field(default_factory=dict)
    #: image records of this run flagged ``refer`` (prediction set not one class, or out of distribution)
    n_referred_images: int = 0

    @property
    def frames_per_second(self) -> float:
        return self.n_frames / self.seconds if self.seconds > 0 else 0.0


# -- inputs ----------------------------------------------------------------------------


def _is_dicom_without_extension(path: Path) -> bool:
    try:
        fd, _ = open_regular(path)  # a FIFO in the folder must not block the walk
    except InputError:
        return False
    try:
        head = os.read(fd, 132)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(head) == 132 and head[128:132] == b"DICM"


def _manifest_items(path: Path) -> list[InputItem]:
    from .io.manifest import manifest_rows

    items = []
    for _, row in manifest_rows(path, need="a manifest of inputs needs a path column "
                                          "(patient_id, frame_index and pane are optional)"):
        p = Path(row["path"])
        if not p.is_absolute():
            p = path.parent / p
        pid = _hash_id((row.get("patient_id") or "").strip() or None)
        frame_index, pane = (_manifest_int(row, k, path) for k in ("frame_index", "pane"))
        items.append(InputItem(str(p), pid, frame_index, pane))
    return items


def _manifest_int(row: dict, key: str, path: Path) -> int | None:
    v = (row.get(key) or "").strip()
    try:
        return int(v) if v else None
    except ValueError:
        raise InputError("bad_manifest", f"{key} {v!r} is not an integer", source=str(path)) from None


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[InputItem]:
    """Files as given, folders walked (sorted; images, DICOM), manifests (``.csv``) expanded.

    A folder without a single image or DICOM file is an ``InputError`` ("empty"):
    most likely a wrong path, and a run that predicts nothing is no result.
    """
    items: list[InputItem] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            n_before = len(items)
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    f = Path(root) / name
                    ext = f.suffix.lower()
                    if ext in IMAGE_EXTENSIONS or (ext == "" and _is_dicom_without_extension(f)):
                        items.append(InputItem(str(f)))
            if len(items) == n_before:
                raise InputError("empty", "no image or DICOM files in this folder", source=str(p))
        elif p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
            items.extend(_manifest_items(p))
        else:
            items.append(InputItem(str(p)))  # missing files become error records
    return items


def _hash_id(pid: str | None) -> str | None:
    """Records carry pseudonymous ids only (contracts.md): hash raw manifest ids."""
    if pid is None:
        return None
    from .io import hash_patient_id

    return hash_patient_id(pid)


def read_frames(path: str, frame_index: int | None = None, read: str | Mapping[str, Any] | None = None,
                pane: int | None = None) -> tuple[list[tuple[int, np.ndarray]], str | None, list[dict]]:
    """``[(frame_index, pixels), ...]`` of one input, its hashed patient id (or None)
    and, aligned with them, what each record should say about its crop:
    ``{"region_source", "notes"}`` (``{}`` for ``.npy``), and with ``crop="panes"``
    also ``"pane"`` and ``"region"`` (the pane's box): one entry per frame and pane.

    Images and DICOM go through :func:`thyrofast.read` (tissue-region crop, memory
    guard, InputError codes) with the read options ``read``: the bundle's
    ``{"crop", "mask_annotations"}``, or a crop mode alone (default: crop "auto",
    unmasked).  ``.npy`` arrays (uint8/uint16 ``(H, W)``, ``(H, W, 3)`` or a stack) are read
    here without pickle, as given.  ``pane``: keep that pane only (a manifest row
    naming one).
    """
    opts = file_read_options(read)
    if frame_index is not None and frame_index < 0:  # a manifest row's own error, not the run's
        raise InputError("frame_out_of_range", f"frame_index must be >= 0, got {frame_index}", source=path)
    if Path(path).suffix.lower() == ".npy":
        frames = _read_npy(path)
        pairs = list(enumerate(frames))
        pid = None
        regions: list[dict] = [{} for _ in pairs]
    else:
        from .io import read as read_file

        read_kw = {"frames": [frame_index]} if frame_index is not None else {}
        got = read_file(path, **read_kw, **opts)
        modality = next((f.modality for f in got if f.modality), None)
        if modality and modality.strip().upper() in NON_ULTRASOUND_MODALITIES:
            raise InputError("unsupported_format", f"DICOM Modality {modality} is not ultrasound; "
                             "the model classifies thyroid ultrasound images", source=path)
        pairs = [(int(f.frame_index), f.pixels) for f in got]
        pid = next((f.patient_hash for f in got if f.patient_hash), None)
        # how each frame was cropped, e.g. a degenerate DICOM region replaced by the detected field
        regions = [{"region_source": f.region_source, "notes": list(f.notes)} for f in got]
        for f, meta in zip(got, regions):
            if f.pane is not None:
                meta.update(pane=int(f.pane), region=[int(v) for v in f.region])
    keep = [n for n, (i, _) in enumerate(pairs) if frame_index is None or i == frame_index]
    if frame_index is not None and not keep:
        raise InputError("empty", f"the input has no frame {frame_index}", source=path)
    if pane is not None:
        keep = [n for n in keep if regions[n].get("pane") == pane]
        if not keep:
            raise InputError("frame_out_of_range", f"the input has no pane {pane}"
                             + ("" if opts["crop"] == "panes" else " (panes are read with crop='panes')"),
                             source=path)
    return [pairs[n] for n in keep], pid, [regions[n] for n in keep]


def _read_npy(path: str) -> list[np.ndarray]:
    fd, _ = open_regular(path, DEFAULT_MAX_BYTES)  # same limits as thyrofast.read; never a FIFO
    try:
        with os.fdopen(fd, "rb") as f:
            a = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError("unreadable", f"not a NumPy array file: {exc}", source=path) from None
    from .classifier import split_frames

    try:  # the Classifier's layout rules: (H, W, 4) is one RGBA frame, (H, W, 1|2) is ambiguous
        return split_frames(a)
    except ValueError as exc:
        raise InputError("unsupported_format", f"array of shape {a.shape} is not a frame or a stack of "
                         f"frames: {exc}", source=path) from None


# -- output ----------------------------------------------------------------------------


def _flatten(rec: dict, fields: Sequence[str] = CSV_FIELDS) -> dict:
    row = {k: rec.get(k) for k in ("kind", "input", "sha256", "frame_index", "pane", "patient_id", "status", "pred",
                                   "decision", "n_images", "saliency")}
    for c, v in (rec.get("probs") or {}).items():
        row[f"prob_{c}"] = v
    err = rec.get("error") or {}
    row["error_code"], row["error_message"] = err.get("code"), err.get("message")
    row.update(rec.get("provenance") or {})
    return {k: ("" if row.get(k) is None else row[k]) for k in fields}


def _unflatten(row: dict) -> dict:
    rec: dict[str, Any] = {k: (row.get(k) or None) for k in ("kind", "input", "sha256", "patient_id", "status", "pred",
                                                             "decision")}
    if row.get("frame_index"):
        rec["frame_index"] = int(row["frame_index"])
    if row.get("pane"):
        rec["pane"] = int(row["pane"])
    if row.get("n_images"):
        rec["n_images"] = int(row["n_images"])
    probs = {k[5:]: float(v) for k, v in row.items() if k and k.startswith("prob_") and v not in (None, "")}
    if probs:
        rec["probs"] = probs
    if row.get("error_code"):
        rec["error"] = {"code": row["error_code"], "message": row.get("error_message")}
    prov = {k: row[k] for k in _PROVENANCE_FIELDS if row.get(k)}
    if prov:
        rec["provenance"] = prov
    return rec


class RecordWriter:
    """Append-only, crash-safe writer of prediction records (``.jsonl`` or ``.csv``)."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None,
                 classes: Sequence[str] = DEFAULT_CLASSES):
        self.path = Path(path)
        self.classes = tuple(classes)
        self.fields = csv_fields(self.classes)
        if self.path.is_dir():
            raise OutputError(errno.EISDIR, f"{self.path} is a folder; give a results file (.jsonl or .csv)")
        fmt = fmt or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"output format must be jsonl or csv, got {fmt!r}")
        self.format = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.truncated_bytes = 0
        self._fd = -1
        # the lock first: a second run must not even read (let alone recover) the file
        self._lock = OutputLock(self.path, OutputError)
        try:
            self._fd = _open_output(self.path)
            self._recover()
        except BaseException:
            self.close()
            raise

    def _recover(self) -> None:
        """Load the records already written, then drop a trailing partial line.

        Everything is checked before anything is changed: a file that is not
        recognisably a results file of ours (another CSV, a text file, an
        image) is refused untouched.
        """
        size = os.fstat(self._fd).st_size
        data = b""
        if size:
            os.lseek(self._fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        keep = data.rfind(b"\n") + 1
        try:
            text = data[:keep].decode("utf-8")
        except UnicodeDecodeError:
            raise OutputError(f"{self.path} is not a thyrofast results file (not UTF-8 text); "
                              "refusing to touch it") from None
        if self.format == "jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        rec = None
                    if not (isinstance(rec, dict) and rec.get("kind") in ("image", "patient")):
                        raise OutputError(f"{self.path}:{n} is not a JSON record of thyrofast predict; "
                                          "refusing to touch the file") from None
                    self.records.append(rec)
        elif text:
            reader = csv.DictReader(io.StringIO(text))
            header = tuple(reader.fieldnames or ())
            if header == tuple(h for h in self.fields if h != "pane"):
                self.fields = header  # written before the pane column: resumed as it is (no panes in it)
            if header != self.fields:
                theirs = [h[5:] for h in header if h.startswith("prob_")]
                if header[:len(_CSV_HEAD)] == _CSV_HEAD and header[len(header) - len(_CSV_TAIL):] == _CSV_TAIL:
                    raise OutputError(f"{self.path} holds predictions for the classes {', '.join(theirs)}, this "
                                      f"bundle's are {', '.join(self.classes)}; write to another --out")
                raise OutputError(f"{self.path} has a different CSV header; refusing to touch it")
            self.records.extend(_unflatten(r) for r in reader)
        if keep < len(data):
            # A run killed mid-append leaves the start of one of our lines; anything else is foreign.
            if not _our_line_start(data[keep:], self.format, header_done=bool(text), fields=self.fields):
                raise OutputError(f"{self.path} does not end like a thyrofast results file; refusing to touch it")
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            self.truncated_bytes = len(data) - keep
        self._size = keep
        if self.format == "csv" and self._size == 0:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(self.fields)
            self._append(buf.getvalue().encode())

    def _encode(self, records: Sequence[dict]) -> bytes:
        if self.format == "csv" and "pane" not in self.fields and any(r.get("pane") is not None for r in records):
            raise OutputError(f"{self.path} was written without a pane column and this run reads panes "
                              "(crop='panes'); write to another --out")
        if self.format == "jsonl":
            return "".join(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in records).encode()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n")
        for r in records:
            w.writerow(_flatten(r, self.fields))
        return buf.getvalue().encode()

    def _append(self, data: bytes) -> None:
        try:
            os.lseek(self._fd, self._size, os.SEEK_SET)
            view = memoryview(data)
            while view:  # a regular file takes it in one write unless the disk fills up
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError as exc:
            # Roll back to the last complete record so the file stays valid.
            try:
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            except OSError:
                pass
            reason = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise OutputError(
                exc.errno, f"cannot write results to {self.path}: {reason}; the file was kept consistent "
                f"({len(self.records)} records); free space and re-run the same command to resume"
            ) from exc
        self._size += len(data)

    def write(self, records: Sequence[dict]) -> None:
        """Append ``records`` (one input's) in a single write + fsync."""
        if records:
            self._append(self._encode(records))
            self.records.extend(json.loads(json.dumps(r)) for r in records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _open_output(path: Path) -> int:
    """``O_RDWR`` fd of the results file (created if missing); a FIFO, a device or
    anything else that is not a regular file is refused without opening it for writing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path} is not a regular file; give a results file (.jsonl or .csv)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the stat
        os.close(fd)
        raise OutputError(f"{path} is not a regular file; give a results file (.jsonl or .csv)")
    return fd


def _our_line_start(tail: bytes, fmt: str, *, header_done: bool, fields: Sequence[str] = CSV_FIELDS) -> bool:
    """Whether ``tail`` (a last line without newline) is the beginning of a line we write."""
    if fmt == "jsonl":
        starts = (b'{"kind": "',)  # json.dumps of our records: "kind" is always the first key
    elif header_done:
        starts = (b"image,", b"patient,")
    else:
        starts = (",".join(fields).encode() + b"\n",)
    return any(tail.startswith(s) or s.startswith(tail) for s in starts)


# -- the run ---------------------------------------------------------------------------


def _error_record(item: InputItem, sha: str | None, exc: InputError, provenance: dict) -> dict:
    return {
        "kind": "image", "input": item.path, "sha256": sha, "frame_index": None, "pane": item.pane,
        "patient_id": item.patient_id, "status": "error",
        "error": {"code": exc.code, "message": str(exc)}, "provenance": dict(provenance),
    }


def _patient_records(records: list[dict], classes: Sequence[str], provenance: dict,
                     aggregation: Any = "mean_log_prob", operating_point: dict | None = None,
                     conformal: dict | None = None) -> list[dict]:
    from .classifier import aggregate_patients

    ok = [r for r in records if r.get("kind") == "image" and r.get("status") == "ok" and r.get("patient_id")]
    if not ok:
        return []
    probs = np.array([[r["probs"][c] for c in classes] for r in ok], dtype=np.float64)
    agg = aggregate_patients(probs, [r["patient_id"] for r in ok], aggregation)
    n_ood: dict = {}  # images of each patient the OOD gate referred (counted once per image record)
    for r in {(r["input"], r.get("frame_index"), r.get("pane"), r["patient_id"]): r for r in ok}.values():
        n_ood[r["patient_id"]] = n_ood.get(r["patient_id"], 0) + bool((r.get("ood") or {}).get("refer"))
    last = {r["patient_id"]: r for r in records if r.get("kind") == "patient"}
    out = []
    for pid, (p, n) in agg.items():
        rec = {"kind": "patient", "patient_id": pid, "status": "ok",
               "probs": {c: float(v) for c, v in zip(classes, p)}, "pred": classes[int(np.argmax(p))],
               "decision": decide(p, classes, operating_point)[0],
               "n_images": int(n), "provenance": dict(provenance)}
        rec.update(clinical_fields(p, classes, conformal, "patient", n_ood=n_ood.get(pid, 0)))
        prev = last.get(pid)
        if prev and prev.get("n_images") == rec["n_images"] and prev.get("probs") and all(
            abs(prev["probs"][c] - rec["probs"][c]) < 1e-9 for c in classes
        ):
            continue
        out.append(rec)
    return out


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="input", disable=not enabled, dynamic_ncols=True, desc="predict")


def predict_files(
    classifier,
    inputs: Sequence[str | os.PathLike] | Sequence[InputItem],
    out: str | os.PathLike,
    *,
    saliency_dir: str | os.PathLike | None = None,
    batch_frames: int = 16,
    progress: bool = True,
    fmt: str | None = None,
) -> PredictSummary:
    """Classify every input and append one record per input (see module doc) to ``out``."""
    items = [i if isinstance(i, InputItem) else None for i in inputs]
    if any(i is None for i in items):
        items = expand_inputs([str(i) for i in inputs])  # type: ignore[arg-type]
    classes = tuple(classifier.classes)
    provenance = dict(classifier.provenance)
    op = bundle_operating_point(classifier)  # the bundle's decision threshold (None: argmax)
    # files are read as the model was trained (the bundle's read options: tissue crop, annotation masking)
    read_opts = bundle_read_options(classifier)
    # clinical outputs: prediction sets + refer, and the OOD gate (when the bundle is calibrated for them)
    conformal = _bundle_field(classifier, "conformal")
    gate = None
    if _bundle_field(classifier, "ood"):
        from .ood import OODGate

        gate = OODGate.for_classifier(classifier)
    summary = PredictSummary(n_inputs=len(items))
    if saliency_dir is not None:
        _prepare_saliency_dir(Path(saliency_dir))  # before the results file is created or locked
    t0 = time.perf_counter()
    with RecordWriter(out, fmt, classes) as writer, _progress(len(items), progress) as bar:
        summary.mixed_settings = _check_resume_provenance(writer, provenance)
        # Resume keys: path and SHA-256 (whole file), and with #frame (one frame
        # named by a manifest row) and /pane (one pane of it).
        done_sha: dict[str, str | None] = {}
        for r in writer.records:
            if r.get("kind") == "image" and r.get("sha256"):
                done_sha.setdefault(_key(r["sha256"], r["input"]), r.get("status"))
                if r.get("frame_index") is not None:
                    done_sha.setdefault(_key(r["sha256"], r["input"], r["frame_index"]), r.get("status"))
                    if r.get("pane") is not None:
                        done_sha.setdefault(_key(r["sha256"], r["input"], r["frame_index"], r["pane"]),
                                            r.get("status"))
        done_path = {r["input"] for r in writer.records if r.get("kind") == "image" and not r.get("sha256")}
        pending: list[tuple[InputItem, str, list[tuple[int, np.ndarray]], str | None]] = []
        pending_sha: set[str] = set()

        def flush() -> None:
            if not pending:
                return
            frames = [f for _, _, fs, _ in pending for _, f in fs]
            try:
                probs = np.asarray(classifier.predict(frames), dtype=np.float64)
                per_input = None
            except (ValueError, TypeError):
                # A frame the pipeline refuses (TypeError/ValueError are the API's
                # "bad argument" errors): find which input, record it as an
                # error, keep the others.  Engine failures still stop the run.
                per_input = []
                for _, _, fs, _ in pending:
                    try:
                        per_input.append(np.asarray(classifier.predict([f for _, f in fs]), dtype=np.float64))
                    except (ValueError, TypeError) as exc:
                        per_input.append(exc)
            k = 0
            for n_item, (item, sha, fs, (pid, regions)) in enumerate(pending):
                if per_input is not None:
                    got = per_input[n_item]
                    if isinstance(got, Exception):
                        err = InputError("unsupported_format", f"the model's preprocessing refused it: {got}",
                                         source=item.path)
                        writer.write([_error_record(item, sha, err, provenance)])
                        done_sha[_key(sha, item.path, item.frame_index, item.pane)] = "error"
                        summary.n_error += 1
                        summary.error_codes[err.code] = summary.error_codes.get(err.code, 0) + 1
                        bar.update(1)
                        continue
                    item_probs, k = got, 0
                else:
                    item_probs = probs
                recs = []
                oods = gate.check([f for _, f in fs]) if gate is not None else [None] * len(fs)
                for (j, f), meta, ood in zip(fs, regions, oods):
                    p = item_probs[k]
                    k += 1
                    pane = meta.get("pane")
                    rec = {
                        "kind": "image", "input": item.path, "sha256": sha, "frame_index": j, "pane": pane,
                        "patient_id": item.patient_id or pid, "status": "ok",
                        "probs": {c: float(v) for c, v in zip(classes, p)},
                        "pred": classes[int(np.argmax(p))], "decision": decide(p, classes, op)[0],
                        "provenance": dict(provenance),
                    }
                    rec.update(clinical_fields(p, classes, conformal, "image", ood))
                    summary.n_referred_images += bool(rec.get("refer"))
                    rec.update((key, v) for key, v in meta.items() if key != "pane")
                    if saliency_dir is not None:
                        rec["saliency"] = str(_write_saliency(classifier, f, Path(saliency_dir), sha, j, pane))
                    recs.append(rec)
                writer.write(recs)
                done_sha[_key(sha, item.path, item.frame_index, item.pane)] = "ok"
                summary.n_ok += 1
                summary.n_frames += len(fs)
                bar.update(1)
            pending.clear()
            pending_sha.clear()
            elapsed = time.perf_counter() - t0
            bar.set_postfix_str(f"{summary.n_frames / elapsed:.1f} frames/s" if elapsed > 0 else "")

        n_pending_frames = 0
        for item in items:
            try:
                sha = sha256_file(item.path, DEFAULT_MAX_BYTES)  # read's limit: refused before it is read
            except InputError as err:  # missing, not a regular file, over the size limit
                flush()
                n_pending_frames = 0
                if item.path in done_path:
                    summary.n_skipped += 1
                    summary.n_error_recorded += 1
                else:
                    writer.write([_error_record(item, None, err, provenance)])
                    done_path.add(item.path)
                    summary.n_error += 1
                    summary.error_codes[err.code] = summary.error_codes.get(err.code, 0) + 1
                bar.update(1)
                continue
            key = _key(sha, item.path, item.frame_index, item.pane)
            if key in done_sha or key in pending_sha:
                summary.n_skipped += 1
                summary.n_error_recorded += done_sha.get(key) == "error"
                bar.update(1)
                continue
            try:
                frames, pid, regions = read_frames(item.path, item.frame_index, read_opts, item.pane)
                if not frames:
                    raise InputError("empty", "the input holds no frames", source=item.path)
                frames = list(zip([i for i, _ in frames], _check_frames([f for _, f in frames], item.path)))
            except InputError as exc:
                flush()
                n_pending_frames = 0
                writer.write([_error_record(item, sha, exc, provenance)])
                done_sha[key] = "error"
                summary.n_error += 1
                summary.error_codes[exc.code] = summary.error_codes.get(exc.code, 0) + 1
                bar.update(1)
                continue
            pending.append((item, sha, frames, (pid, regions)))
            pending_sha.add(key)
            n_pending_frames += len(frames)
            if n_pending_frames >= batch_frames:
                flush()
                n_pending_frames = 0
        flush()
        patients = _patient_records(writer.records, classes, provenance, bundle_aggregation(classifier), op,
                                    conformal)
        writer.write(patients)
        summary.n_patients = len({r["patient_id"] for r in writer.records if r.get("kind") == "patient"})
    summary.seconds = time.perf_counter() - t0
    return summary


def _bundle_field(classifier, name: str) -> dict | None:
    """A card entry of the classifier's bundle (None for stand-ins and bundles without it)."""
    manifest = getattr(getattr(classifier, "bundle", None), "manifest", None)
    v = manifest.get(name) if isinstance(manifest, dict) else None
    return v if isinstance(v, dict) else None


def _check_resume_provenance(writer: "RecordWriter", provenance: dict) -> dict:
    """Refuse to resume a file written by another model; report other engine settings.

    Another bundle would mix two models' predictions in one file (and its
    patient records); another backend, precision or device only moves the
    numbers slightly, so it is reported, not refused.
    """
    earlier = [r.get("provenance") or {} for r in writer.records if r.get("kind") == "image"]
    models = {p.get("bundle_sha256") for p in earlier} - {None}
    if models and models != {provenance.get("bundle_sha256")}:
        raise OutputError(f"{writer.path} holds predictions of another model (bundle "
                          f"{sorted(models)[0][:12]}, this one {str(provenance.get('bundle_sha256'))[:12]}); "
                          "write to another --out")
    mixed = {}
    for k in ("backend", "precision", "device"):
        seen = sorted({str(p[k]) for p in earlier if p.get(k) is not None} - {str(provenance.get(k))})
        if seen:
            mixed[k] = seen
    return mixed


def _key(sha: str, path: str, frame_index: int | None = None, pane: int | None = None) -> str:
    key = f"{sha}:{path}"
    if frame_index is None and pane is not None:
        frame_index = 0  # a manifest row naming a pane but no frame: a still's one frame
    key = key if frame_index is None else f"{key}#{frame_index}"
    return key if pane is None else f"{key}/{pane}"


def _check_frames(frames: list[np.ndarray], source: str) -> list[np.ndarray]:
    """Refuse what preprocessing cannot take, as an input error instead of a crash mid-batch."""
    frames = [f[..., 0] if f.ndim == 3 and f.shape[-1] == 1 else f for f in frames]
    for f in frames:
        if f.dtype not in (np.uint8, np.uint16):
            raise InputError("unsupported_format", f"pixel type {f.dtype} (need uint8 or uint16)", source=source)
        if not (f.ndim == 2 or (f.ndim == 3 and f.shape[-1] in (1, 3))) or 0 in f.shape:
            raise InputError("unsupported_format", f"frame shape {f.shape} is not (H, W) or (H, W, 3)", source=source)
    return frames


def _prepare_saliency_dir(directory: Path) -> None:
    """Create the saliency folder, or say why it cannot be one (naming it, not ``--out``)."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(errno.ENOTDIR, f"saliency folder {directory} exists and is not a folder; "
                          "give a folder for the overlays")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot create the saliency folder {directory}: "
                          f"{exc.strerror or exc}") from None


def _write_saliency(classifier, frame: np.ndarray, directory: Path, sha: str, index: int,
                    pane: int | None = None) -> Path:
    frame = frame[..., 0] if frame.ndim == 3 and frame.shape[-1] == 1 else frame
    name = f"{sha[:16]}_{index}" + ("" if pane is None else f"_p{pane}")
    final = directory / f"{name}.png"
    tmp_name = f".{name}.tmp"
    classifier.save_saliency([frame], directory, [tmp_name])
    os.replace(directory / f"{tmp_name}.png", final)
    return final
