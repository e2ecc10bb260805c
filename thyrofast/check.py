"""``thyrofast check DATA``: find what would silently spoil training on a data set.

    report = thyrofast.check.check_dataset("cohort/manifest.csv")
    print(report.text()); report.ok  # False when an error was found

Checks (each finding is a :class:`Problem` with severity ``error`` or ``warning``):

* **duplicates** — the same image filed under two patients (or two splits)
  puts it in train *and* test.  *Exact*: SHA-256 of the decoded pixels (dtype,
  shape, bytes), so a PNG and a BMP of one image match and file bytes do not
  matter.  *Near*: a 64-bit difference hash (dHash, :func:`dhash`) of each
  detected B-mode pane, grey, area-averaged to 9x8; two panes are near
  duplicates at a Hamming distance <= ``NEAR_DUPLICATE_DISTANCE`` (6).  On a
  726-image synthetic cohort (40 patients) that threshold matched none of the
  256,036 pairs of distinct images of different patients (closest pair: 7),
  and caught 100% of JPEG q60 re-encodes, 99% of x0.75 and 92% of x0.5
  resizes, 99% of +25 brightness shifts, 63% of -25 ones
  (``tools/near_duplicate_threshold.py``; docs/own-data.md).
  Duplicates within one patient are fine (cine frames, repeated views).
* **manifest** — listed files that are missing or unreadable, image files
  beside the manifest it does not list, a file listed twice, patients with
  several labels (``thyrofast train`` refuses them), classes with no images,
  a patient in two splits.
* **balance** — images and patients per class and split.
* **findings** — finding columns (the auxiliary heads' ``echogenicity``,
  ``margin``, ...) with values outside the accepted vocabulary, or without the
  ``view`` / ``n_nodules`` columns they need (warnings: training ignores them).
* **split screens** — images whose screenshot holds several B-mode panes
  (:func:`thyrofast.io.detect_panes`), each hashed on its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import defaultdict
from typing import Any

import numpy as np

from .errors import InputError
from .io.schema import DEFAULT_CLASSES, IMAGE_EXTENSIONS

__all__ = ["check_dataset", "check_before_training", "CheckReport", "Problem", "dhash", "hamming", "NEAR_DUPLICATE_DISTANCE"]

#: Two panes whose dHashes differ in at most this many of 64 bits are near duplicates.
NEAR_DUPLICATE_DISTANCE = 6

_MAX_LISTED = 20  # examples printed per problem in the text report (the JSON has them all)


@dataclasses.dataclass
class Problem:
    kind: str  # exact_duplicate, near_duplicate, missing, unreadable, unlisted, listed_twice,
    #            several_labels, empty_class, bad_split, findings
    severity: str  # "error" (exit 1) or "warning"
    message: str
    items: list[Any] = dataclasses.field(default_factory=list)  # paths, or groups / pairs of paths


@dataclasses.dataclass
class CheckReport:
    source: str
    layout: str  # "manifest" or "class folders"
    n_images: int = 0  # listed files (or rows)
    n_patients: int = 0
    n_frames_hashed: int = 0
    balance: dict[str, dict[str, dict[str, int]]] = dataclasses.field(default_factory=dict)
    split_screens: list[str] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE
    #: the data set's classes (from its labels or class folders, as ``thyrofast train`` takes them)
    classes: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_CLASSES))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        d["hash"] = {"exact": "sha256 of decoded pixels", "near": "dhash64 of each detected pane",
                     "near_max_hamming": self.near_duplicate_distance}
        return d

    def text(self) -> str:
        out = [f"{self.source} ({self.layout}): {self.n_images} images, {self.n_patients} patients, "
               f"{self.n_frames_hashed} frames hashed"]
        out.append("class balance (images / patients):")
        for split, per in self.balance.items():
            cells = "  ".join(f"{c} {per[c]['images']:>4} / {per[c]['patients']:<4}" for c in self.classes)
            out.append(f"  {split:<8} {cells}")
        if self.split_screens:
            out.append(f"{len(self.split_screens)} split-screen image(s) (several B-mode panes; "
                       "read() keeps all panes in one crop)")
        for p in self.problems:
            out.append(f"{p.severity.upper()} {p.kind}: {p.message}")
            for it in p.items[:_MAX_LISTED]:
                out.append("    " + (" == ".join(map(str, it)) if isinstance(it, (list, tuple)) else str(it)))
            if len(p.items) > _MAX_LISTED:
                out.append(f"    ... and {len(p.items) - _MAX_LISTED} more (--json has all)")
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        out.append("ok: no problems found" if not self.problems else
                   f"{n_err} error(s), {n_warn} warning(s)")
        return "\n".join(out)


def _gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        a = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


def dhash(pixels: np.ndarray) -> int:
    """64-bit difference hash: grey, area-averaged to 9x8, bit = right neighbour brighter.

    Comparing neighbours makes it blind to brightness offsets and gain; area
    averaging to 9x8 makes it blind to re-encoding noise and resizing.
    """
    from PIL import Image

    s = np.asarray(Image.fromarray(_gray(pixels), mode="F").resize((9, 8), Image.BOX), dtype=np.float64)
    bits = (s[:, 1:] > s[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return int(a ^ b).bit_count()


def pane_hashes(pixels: np.ndarray) -> tuple[list[int], int]:
    """dHash of every detected pane of a decoded frame, and the number of panes.

    The field is detected after subtracting the frame's 1st-percentile level, so
    a brightness-shifted copy (grey margins) is cropped like the original; a
    frame with no detectable field is hashed whole.
    """
    from .io.regions import detect_panes

    g = _gray(pixels)
    lo = float(np.percentile(g, 1))
    top = float(g.max()) - lo
    norm = np.zeros(g.shape, np.uint8) if top <= 0 else np.clip((g - lo) * (255.0 / max(top, 1.0)), 0, 255
                                                                  ).astype(np.uint8)
    try:
        panes = detect_panes(norm)
    except InputError:
        return [dhash(g)], 1
    return [dhash(g[y0:y1, x0:x1]) for x0, y0, x1, y1 in panes], len(panes)


def _load(data: str) -> tuple[list, str, str]:
    """Records (thyrofast.io.Record), layout, and the folder the data set lives in."""
    from .io import read_manifest, scan_folder

    if os.path.isdir(data):
        csv_path = os.path.join(data, "manifest.csv")
        if os.path.isfile(csv_path):
            return _either(read_manifest, csv_path), "manifest", os.path.abspath(data)
        return _either(scan_folder, data), "class folders", os.path.abspath(data)
    if not os.path.exists(data):
        raise InputError("bad_manifest", "no such file or folder", source=data)
    return _either(read_manifest, data), "manifest", os.path.dirname(os.path.abspath(data))


def _either(read, source: str) -> list:
    """The records as the paper's preset (BTN/NMTN/MMTN) when they are, else with the data's own
    classes (labels / folder names, as ``thyrofast train`` takes them)."""
    try:
        return read(source, classes=DEFAULT_CLASSES)
    except InputError:
        return read(source, classes=None)


def _patient_key(pid: str) -> str:
    from .io import hash_patient_id

    return hash_patient_id(pid) or ""


def check_dataset(data: str | os.PathLike, *, near_distance: int = NEAR_DUPLICATE_DISTANCE,
                  progress: bool = False) -> CheckReport:
    """Check a data set (a manifest CSV, a folder holding ``manifest.csv``, or
    ``BTN/ NMTN/ MMTN/`` class folders) and return a :class:`CheckReport`.

    Raises :class:`InputError` when the data set cannot be read at all (no such
    path, a manifest without the required columns); problems *in* the data set
    are reported, not raised.  Patient ids appear only hashed in the report.
    """
    from tqdm.auto import tqdm

    from .io import read

    data = os.fspath(data)
    try:
        records, layout, root = _load(data)
    except InputError as exc:
        if exc.code != "bad_split" and "listed for two patients" not in str(exc):
            raise
        # a problem in the data set, not an unreadable one: report it (nothing else can be checked)
        rep = CheckReport(source=data, layout="manifest")
        kind = "bad_split" if exc.code == "bad_split" else "listed_twice"
        rep.problems.append(Problem(kind, "error", str(exc).split("] ", 1)[-1]))
        return rep
    rep = CheckReport(source=data, layout=layout, n_images=len(records),
                      n_patients=len({r.patient_id for r in records}), near_duplicate_distance=int(near_distance))
    err = rep.problems.append
    classes = tuple(records[0].classes) if records else DEFAULT_CLASSES
    if set(classes) <= set(DEFAULT_CLASSES):  # the paper's preset: checked against all of its classes
        records = [r.replace(label=DEFAULT_CLASSES.index(r.label_name), classes=DEFAULT_CLASSES) for r in records]
        classes = DEFAULT_CLASSES
    rep.classes = list(classes)

    # --- manifest / labels ------------------------------------------------------------
    labels: dict[str, set[int]] = defaultdict(set)
    for r in records:
        labels[r.patient_id].add(r.label)
    several = sorted(_patient_key(p) + ": " + "/".join(classes[k] for k in sorted(s))
                     for p, s in labels.items() if len(s) > 1)
    if several:
        err(Problem("several_labels", "error", f"{len(several)} patient(s) have images with different labels "
                    "(thyrofast train refuses this; one label per patient)", several))
    seen_rows: dict[tuple[str, int | None, int | None], int] = defaultdict(int)
    for r in records:
        seen_rows[(r.path, r.frame_index, r.pane)] += 1  # one row per pane (crop="panes") is not twice
    twice = sorted(os.path.relpath(p, root) for (p, _, _), n in seen_rows.items() if n > 1)
    if twice:
        err(Problem("listed_twice", "warning", f"{len(twice)} file(s) are listed more than once", twice))
    missing = sorted({os.path.relpath(r.path, root) for r in records if not os.path.isfile(r.path)})
    if missing:
        err(Problem("missing", "error", f"{len(missing)} listed file(s) do not exist", missing))
    if layout == "manifest":
        listed = {os.path.normcase(os.path.abspath(r.path)) for r in records}
        for r in records:  # other columns naming files (e.g. the synthetic cohort's dicom_path)
            for v in r.extra.values():
                if v and not os.path.isabs(v) and os.path.splitext(v)[1].lower() in IMAGE_EXTENSIONS:
                    listed.add(os.path.normcase(os.path.abspath(os.path.join(root, v))))
        unlisted = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                if (not fn.startswith(".") and os.path.splitext(fn)[1].lower() in IMAGE_EXTENSIONS
                        and os.path.normcase(os.path.abspath(full)) not in listed):
                    unlisted.append(os.path.relpath(full, root))
        if unlisted:
            err(Problem("unlisted", "warning", f"{len(unlisted)} image file(s) in the data set's folder are "
                        "not in the manifest (unknown files: forgotten, or stray?)", unlisted))

    # --- finding annotations (the auxiliary heads' columns) ----------------------------------
    if layout == "manifest":
        from .train.aux import finding_problems

        for msg, items in finding_problems(records):
            err(Problem("findings", "warning", msg, items))

    # --- balance ------------------------------------------------------------------------
    splits = sorted({r.split or "unsplit" for r in records}, key=lambda s: (["train", "val", "test",
                                                                             "unsplit"].index(s), s))
    for s in splits:
        per = {c: {"images": 0, "patients": 0} for c in classes}
        pats: dict[str, set[str]] = {c: set() for c in classes}
        for r in records:
            if (r.split or "unsplit") == s:
                per[classes[r.label]]["images"] += 1
                pats[classes[r.label]].add(r.patient_id)
        for c in classes:
            per[c]["patients"] = len(pats[c])
        rep.balance[s] = per
    present = {r.label for r in records}
    empty = [c for k, c in enumerate(classes) if k not in present]
    if empty:
        err(Problem("empty_class", "error", f"no images of class {', '.join(empty)} "
                    "(the paper's preset needs every class; thyrofast train would make a model of the "
                    f"classes present: {', '.join(c for c in classes if c not in empty)})", empty))
    if len(splits) > 1 or splits != ["unsplit"]:
        gaps = [f"{s}: no {c}" for s in splits for c in classes if rep.balance[s][c]["images"] == 0]
        if gaps:
            err(Problem("empty_class", "warning", f"{len(gaps)} split/class cell(s) are empty", gaps))

    # --- duplicates ---------------------------------------------------------------------
    exact: dict[str, list[int]] = defaultdict(list)  # sha -> item indices
    items: list[tuple[str, str, str | None, int]] = []  # (display path, patient, split, frame index)
    hashes: list[int] = []
    owner: list[int] = []  # hash index -> item index
    unreadable = []
    todo = [r for r in records if os.path.isfile(r.path)]
    done: set[tuple[str, int | None]] = set()
    for r in tqdm(todo, desc="check", unit="file", disable=not progress, leave=False, dynamic_ncols=True):
        if (r.path, r.frame_index) in done:
            continue
        done.add((r.path, r.frame_index))
        rel = os.path.relpath(r.path, root)
        try:
            frames = read(r.path, crop="none", frames=None if r.frame_index is None else [r.frame_index])
        except InputError as exc:
            unreadable.append(f"{rel}: {exc}")
            continue
        for f in frames:
            idx = len(items)
            name = rel if len(frames) == 1 else f"{rel}#{f.frame_index}"
            items.append((name, r.patient_id, r.split, f.frame_index))
            px = np.ascontiguousarray(f.pixels)
            sha = hashlib.sha256(f"{px.dtype.str}{px.shape}".encode() + px.tobytes()).hexdigest()
            exact[sha].append(idx)
            hs, n_panes = pane_hashes(px)
            if n_panes > 1 and name not in rep.split_screens:
                rep.split_screens.append(name)
            hashes.extend(hs)
            owner.extend([idx] * len(hs))
    rep.n_frames_hashed = len(items)
    if unreadable:
        err(Problem("unreadable", "error", f"{len(unreadable)} file(s) cannot be read", unreadable))

    def crosses(i: int, j: int) -> bool:
        return items[i][1] != items[j][1] or (items[i][2] or "") != (items[j][2] or "")

    groups = [g for g in exact.values() if len(g) > 1 and any(crosses(g[0], j) for j in g[1:])]
    same_sha = {i: k for k, g in enumerate(exact.values()) for i in g}
    if groups:
        n_pat = sum(len({items[i][1] for i in g}) for g in groups)
        leak = sum(1 for g in groups if len({items[i][2] for i in g}) > 1)
        err(Problem("exact_duplicate", "error",
                    f"{len(groups)} image(s) appear pixel-identical under {n_pat} patient entries"
                    + (f"; {leak} of them in more than one split (train/test leak)" if leak else "")
                    + " — a copy filed under another case number?",
                    [[items[i][0] for i in g] for g in groups]))
    pairs = []
    if len(hashes) > 1:
        h = np.array(hashes, dtype=np.uint64)
        for a in range(0, len(h), 1024):  # blocks: memory stays ~ 1024 x n
            d = np.bitwise_count(h[a:a + 1024, None] ^ h[None, :])
            ii, jj = np.nonzero(d <= near_distance)
            for i, j in zip(ii + a, jj):
                if j <= i:
                    continue
                p, q = owner[i], owner[j]
                if p == q or same_sha[p] == same_sha[q] or not crosses(p, q):
                    continue
                pairs.append((min(p, q), max(p, q), int(d[i - a, j])))
    seen_pairs: dict[tuple[int, int], int] = {}
    for p, q, dist in pairs:
        seen_pairs[(p, q)] = min(dist, seen_pairs.get((p, q), 64))
    if seen_pairs:
        leak = sum(1 for p, q in seen_pairs if (items[p][2] or "") != (items[q][2] or ""))
        err(Problem("near_duplicate", "error",
                    f"{len(seen_pairs)} pair(s) of images of different patients look the same "
                    f"(dHash distance <= {near_distance}: re-encoded, resized or re-exported copies?)"
                    + (f"; {leak} across splits" if leak else ""),
                    [[items[p][0], items[q][0], f"distance {d}"] for (p, q), d in sorted(seen_pairs.items())]))
    return rep


def check_before_training(data: str | os.PathLike, *, allow_duplicates: bool = False, say=print,
                          progress: bool = False) -> CheckReport:
    """The check ``thyrofast train`` and ``thyrofast cv`` run first.

    Exact duplicates across patients (the same pixels filed under two case
    numbers) are refused with ``InputError('duplicates')`` listing them: a
    patient-level split would put one image in training and in validation /
    test, which inflates every held-out number.  ``allow_duplicates=True``
    turns the refusal into a warning (``say``).  Near duplicates (dHash) are
    warned about only: the hash has a small false-positive rate
    (:data:`NEAR_DUPLICATE_DISTANCE`), so they are for the user to look at
    (``thyrofast check DATA``).  Other problems (missing or unreadable files,
    several labels per patient) are left to training, which refuses them with
    its own error.  Returns the report.
    """
    rep = check_dataset(data, progress=progress)
    for p in rep.problems:
        if p.kind not in ("exact_duplicate", "near_duplicate"):
            continue
        listed = "; ".join(" == ".join(map(str, it)) if isinstance(it, (list, tuple)) else str(it)
                           for it in p.items[:5]) + (f"; ... {len(p.items) - 5} more" if len(p.items) > 5 else "")
        if p.kind == "exact_duplicate" and not allow_duplicates:
            raise InputError("bad_manifest", f"{p.message}: {listed}. Remove the copies (thyrofast check DATA lists "
                             "them all) or pass --allow-duplicates / allow_duplicates=True", source=os.fspath(data))
        say(f"warning: {p.kind.replace('_', ' ')}s: {p.message}: {listed}")
    for p in rep.problems:
        if p.kind == "findings":
            say(f"warning: findings: {p.message}: {', '.join(map(str, p.items))}")
    return rep
