"""The :class:`Frame` every reader returns, and patient-id hashing."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

__all__ = ["Frame", "hash_patient_id", "SALT_ENV"]

#: Environment variable holding a site secret mixed into patient-id hashes, so a
#: hashed id cannot be reversed by hashing every plausible medical record number.
SALT_ENV = "THYROFAST_ID_SALT"


def hash_patient_id(patient_id: Any, *, salt: str | None = None) -> str | None:
    """A stable pseudonym for a patient id: ``"pt-"`` + 16 hex digits of SHA-256.

    The same id (and salt) always gives the same hash, so hashed ids still group
    a patient's images.  ``salt`` defaults to ``$THYROFAST_ID_SALT`` (or none).
    Empty / missing ids give ``None``.  Already-hashed ids are returned unchanged.
    """
    if patient_id is None:
        return None
    pid = str(patient_id).strip()
    if not pid:
        return None
    if is_hashed(pid):
        return pid
    salt = os.environ.get(SALT_ENV, "") if salt is None else str(salt)
    digest = hashlib.sha256(f"thyrofast\0{salt}\0{pid}".encode("utf-8")).hexdigest()
    return "pt-" + digest[:16]


def is_hashed(patient_id: str) -> bool:
    """True for strings produced by :func:`hash_patient_id`."""
    s = str(patient_id)
    return len(s) == 19 and s.startswith("pt-") and all(c in "0123456789abcdef" for c in s[3:])


@dataclasses.dataclass(eq=False)
class Frame:
    """One decoded frame and where it came from.

    ``pixels`` is what the preprocessing core accepts: ``uint8``/``uint16``,
    ``(H, W)`` gray or ``(H, W, 3)`` RGB, C-contiguous, already cropped to
    ``region``.
    """

    pixels: np.ndarray
    source: str
    frame_index: int = 0  # 0-based index of the frame in its file (cine)
    n_frames: int = 1  # frames the file holds
    region: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x0, y0, x1, y1) half-open, in the original frame
    region_source: str = "full"  # "dicom" (ultrasound regions), "detected", "full"
    region_clipped: bool = False  # the DICOM region ran past the image and was clipped
    original_shape: tuple[int, int] = (0, 0)  # (H, W) of the uncropped frame
    spacing_cm: tuple[float, float] | None = None  # (dx, dy) cm per pixel, when the file says
    patient_hash: str | None = None  # hash_patient_id(PatientID); raw ids are never kept
    format: str = ""  # "dicom", "png", "jpeg", "bmp", "tiff"
    photometric: str = ""  # as stored: DICOM photometric interpretation or Pillow mode
    modality: str | None = None
    sop_class: str | None = None
    transfer_syntax: str | None = None
    doppler: bool = False  # Doppler / color-flow regions, or >= 1% colored pixels in the field
    color_fraction: float = 0.0  # share of strongly colored pixels (channel spread > 40/255) in the crop
    notes: tuple[str, ...] = ()
    #: ``crop="panes"``: which B-mode pane of the screen this frame is (0-based, left to right; ``region``
    #: is its box); every other crop mode: None
    pane: int | None = None

    @property
    def color(self) -> str:
        return "rgb" if self.pixels.ndim == 3 else "gray"

    def metadata(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-safe."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pixels"}
        d["region"] = list(self.region)
        d["original_shape"] = list(self.original_shape)
        d["spacing_cm"] = list(self.spacing_cm) if self.spacing_cm is not None else None
        d["notes"] = list(self.notes)
        d["shape"] = list(self.pixels.shape)
        d["dtype"] = str(self.pixels.dtype)
        return d

    def __repr__(self) -> str:
        pane = "" if self.pane is None else f", pane={self.pane}"
        return (f"Frame({os.path.basename(self.source)!r}, index={self.frame_index}{pane}, "
                f"shape={self.pixels.shape}, dtype={self.pixels.dtype}, region={self.region}, "
                f"spacing_cm={self.spacing_cm})")
