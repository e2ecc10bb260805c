"""A data set of preprocessed frames for training and evaluation.

>>> ds = FrameDataset("cohort/manifest.csv", PreprocessParams(size=(224, 224)), split="train")
>>> x, y, pid = ds[0]                   # (C, H, W) float32, class index, patient id
>>> for xb, yb, pids in ds.batches(32, shuffle=True, seed=0): ...

Works as a ``torch.utils.data.Dataset`` as is (``__len__``/``__getitem__``).
Every frame of a multi-frame file is one item unless the record names a
``frame_index``; ``read_options`` (e.g. ``{"stride": 5}``) go to :func:`read`.
With ``read_options={"crop": "panes"}`` every B-mode pane of a frame is one item
(a split-screen screenshot gives one item per pane) unless the record names a
``pane``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .._fs import atomic_write
from ..errors import InputError
from .manifest import Record, count_panes, read_dataset
from .reader import DEFAULT_MAX_BYTES, count_frames, read
from .reader import read_options as _validate_read_options
from .schema import DEFAULT_CLASSES, SPLITS
from .splits import check_split

__all__ = ["FrameDataset", "count_frames"]

log = logging.getLogger("thyrofast.io")


class FrameDataset:
    """Preprocessed frames with labels and patient ids.

    Parameters
    ----------
    source : manifest CSV path | folder-per-class root | iterable of Record
    params : PreprocessParams | dict | None
        Preprocessing (default ``PreprocessParams()``); applied by the core.
    split : "train" | "val" | "test" | None
        Keep only records of that split (the manifest is first checked for
        patients in two splits: ``InputError('bad_split')``).
    cache : None | "memory" | folder path
        Keep preprocessed frames in memory or as ``.npy`` files keyed by file
        content stamp, frame, read options and preprocessing parameters.
    read_options : dict
        Passed to :func:`thyrofast.read` (crop, color, stride, max_bytes, ...).
    on_error : "raise" | "skip"
        What to do with records whose header cannot be read while indexing.
    threads : int | None
        Preprocessing threads per frame (None: all cores).
    """

    def __init__(self, source: Any, params: Any = None, *, split: str | None = None, cache: Any = None,
                 read_options: dict | None = None, on_error: str = "raise", threads: int | None = None):
        from ..preprocessing import Preprocessor, PreprocessParams

        if params is None:
            params = PreprocessParams()
        elif isinstance(params, dict):
            params = PreprocessParams.from_dict(params)
        elif not isinstance(params, PreprocessParams):
            raise TypeError(f"params must be a PreprocessParams or dict, got {type(params).__name__}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.params = params
        self._pre = Preprocessor(params, threads=threads)
        opts = dict(read_options or {})
        self._stride = int(opts.pop("stride", 1))
        if opts.get("frames") is not None:
            raise ValueError("select frames with the manifest's frame_index column, not read_options['frames']")
        opts.pop("frames", None)
        _validate_read_options(stride=self._stride, **opts)
        self.read_options = opts

        records = _load_records(source)
        check_split(records)
        if split is not None:
            records = [r for r in records if r.split == split]
        self.records: list[Record] = records
        self.skipped: list[tuple[str, str]] = []  # (path, error code) skipped while indexing
        # (record index, frame index, pane): pane is None unless read with crop="panes"
        self._items: list[tuple[int, int, int | None]] = []
        self._cine: dict[int, list[int]] = {}  # record index -> its frames, for multi-frame records
        panes = opts.get("crop") == "panes"
        max_bytes = opts.get("max_bytes", DEFAULT_MAX_BYTES)
        for ri, r in enumerate(records):
            if r.pane is not None and not panes:
                raise InputError("bad_manifest", f"{os.path.basename(r.path)} names pane {r.pane}, but the "
                                 "frames are not read with crop='panes'", source=r.path)
            try:
                if r.frame_index is not None:
                    fis = [r.frame_index]
                else:
                    fis = list(range(0, count_frames(r.path, max_bytes=max_bytes), self._stride))
                if panes:
                    # each frame's panes, found as read() finds them when the item is loaded
                    items = [(ri, fi, p) for fi in fis for p in (
                        [r.pane] if r.pane is not None else range(count_panes(r.path, fi, max_bytes=max_bytes)))]
                else:
                    items = [(ri, fi, None) for fi in fis]
            except (InputError, OSError) as exc:
                code = getattr(exc, "code", "unreadable")
                if on_error == "raise":
                    if isinstance(exc, InputError):
                        raise
                    raise InputError("unreadable", f"cannot open ({exc})", source=r.path) from None
                self.skipped.append((r.path, code))
                log.warning("skipping %s (%s)", os.path.basename(r.path), code)
                continue
            self._items.extend(items)
            if r.frame_index is None and len(fis) > 1 and not panes:
                self._cine[ri] = fis

        self._cache_kind, self._cache_dir = _cache_kind(cache)
        self._mem: dict[int, np.ndarray] = {}
        self._last: tuple[str, dict[int, np.ndarray]] | None = None  # decoded frames of the last cine
        self._last_panes: tuple[tuple[str, int], dict[int, np.ndarray]] | None = None  # the last frame's panes
        self._key_base = json.dumps({"params": params.to_dict(), "read": {k: v for k, v in sorted(opts.items())
                                                                          if k not in ("timeout",)}},
                                    sort_keys=True, default=str)

    # -- the Dataset protocol --------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, str]:
        if isinstance(i, (np.integer,)):
            i = int(i)
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        ri, fi, _ = self._items[i]
        r = self.records[ri]
        return self._frame(i, r, fi), r.label, r.patient_id

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.records[ri].label for ri, _, _ in self._items], dtype=np.int64)

    @property
    def patient_ids(self) -> list[str]:
        return [self.records[ri].patient_id for ri, _, _ in self._items]

    def item_record(self, i: int) -> tuple[Record, int]:
        """The record and frame index behind item ``i`` (with ``crop="panes"``, the record names the
        item's pane: ``record.pane``)."""
        ri, fi, pane = self._items[i]
        r = self.records[ri]
        return (r if pane is None or r.pane == pane else r.replace(pane=pane)), fi

    def class_counts(self) -> dict[str, int]:

        lab = self.labels
        return {c: int((lab == k).sum()) for k, c in enumerate(DEFAULT_CLASSES)}

    def batches(self, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, indices: Sequence[int] | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """Yield ``(x (B, C, H, W), y (B,) int64, patient ids)``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        order = np.arange(len(self)) if indices is None else np.asarray(list(indices), dtype=np.int64)
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            if drop_last and len(chunk) < batch_size:
                break
            items = [self[int(i)] for i in chunk]
            yield (np.stack([x for x, _, _ in items]), np.array([y for _, y, _ in items], dtype=np.int64),
                   [p for _, _, p in items])

    def __repr__(self) -> str:
        return (f"FrameDataset({len(self.records)} records, {len(self)} frames, "
                f"{len(set(r.patient_id for r in self.records))} patients, {self.class_counts()})")

    # -- internals ---------------------------------------------------------------
    def _frame(self, i: int, r: Record, fi: int) -> np.ndarray:
        if self._cache_kind == "memory" and i in self._mem:
            return self._mem[i]
        path = None
        if self._cache_kind == "dir":
            path = os.path.join(self._cache_dir, self._key(r.path, fi, self._items[i][2]) + ".npy")
            if os.path.exists(path):
                try:
                    return np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    pass  # a damaged cache entry is recomputed
        x = self._pre(self._pixels(self._items[i][0], r, fi, self._items[i][2]))[0]
        if self._cache_kind == "memory":
            self._mem[i] = x
        elif path is not None:
            with atomic_write(path, fsync=False) as tmp:  # a cache: a lost entry is recomputed
                with open(tmp, "wb") as f:
                    np.save(f, x, allow_pickle=False)
        return x

    def _pixels(self, ri: int, r: Record, fi: int, pane: int | None = None) -> np.ndarray:
        if pane is not None:
            # crop="panes": decode the frame once, keep its panes for the next items
            if self._last_panes is None or self._last_panes[0] != (r.path, fi):
                got = read(r.path, frames=[fi], **self.read_options)
                self._last_panes = ((r.path, fi), {f.pane: f.pixels for f in got})
            got_panes = self._last_panes[1]
            if pane not in got_panes:
                raise InputError("frame_out_of_range", f"pane {pane} of frame {fi} asked, the frame has "
                                 f"{len(got_panes)} pane(s)", source=r.path)
            return got_panes[pane]
        if self._last is not None and self._last[0] == r.path and fi in self._last[1]:
            return self._last[1][fi]
        if ri in self._cine:
            # a cine: decode the frames this data set uses once, keep them for the next items
            frames = read(r.path, frames=self._cine[ri], **self.read_options)
            self._last = (r.path, {f.frame_index: f.pixels for f in frames})
            return self._last[1][fi]
        return read(r.path, frames=[fi], **self.read_options)[0].pixels

    def _key(self, path: str, fi: int, pane: int | None = None) -> str:
        st = os.stat(path)
        at = fi if pane is None else f"{fi}\0pane {pane}"
        raw = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{at}\0{self._key_base}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _load_records(source: Any) -> list[Record]:
    if isinstance(source, (str, os.PathLike)):
        return read_dataset(source)
    if isinstance(source, Iterable):
        records = list(source)
        if not all(isinstance(r, Record) for r in records):
            raise TypeError("source must be a manifest path, a folder, or Record objects")
        return records
    raise TypeError(f"source must be a manifest path, a folder, or Record objects, got {type(source).__name__}")


def _cache_kind(cache: Any) -> tuple[str | None, str | None]:
    if cache is None or cache is False:
        return None, None
    if cache == "memory" or cache is True:
        return "memory", None
    if isinstance(cache, (str, os.PathLike)):
        d = os.fspath(cache)
        os.makedirs(d, exist_ok=True)
        return "dir", d
    raise ValueError(f"cache must be None, 'memory' or a folder path, got {cache!r}")
