"""Minimal, valid US Image Storage DICOM writer for synthetic frames.

Explicit VR little endian, MONOCHROME2 8 bit, one frame, with a
SequenceOfUltrasoundRegions item describing the B-mode tissue region
(RegionSpatialFormat 1 = 2D, RegionDataType 1 = tissue) and its pixel spacing
in cm (PhysicalUnitsX/YDirection 3 = cm).  UIDs are derived from the inputs,
so the same call writes the same bytes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .._fs import atomic_write

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's documented example root


def hashed_patient_id(patient_id: str, salt: str = "thyrofast") -> str:
    """Pseudonymous PatientID (16 hex digits of SHA-256)."""
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:16]


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


def write_us_dicom(path: str | os.PathLike, pixels: np.ndarray, *, patient_id: str,
                   region: tuple[int, int, int, int], spacing_cm: tuple[float, float] | float,
                   instance_number: int = 1, series_key: str | None = None,
                   hash_patient_id: bool = True) -> Path:
    """Write ``pixels`` (H, W uint8) as an Ultrasound Image Storage file.

    ``region`` = (x0, y0, x1, y1) of the tissue region in pixels, x1/y1 exclusive
    (DICOM stores the inclusive max); ``spacing_cm`` = (x, y) or one value.
    ``patient_id`` is stored hashed unless ``hash_patient_id=False``.
    The file is written to a temporary name and renamed, so readers never see half a file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    px = np.asarray(pixels)
    if px.dtype != np.uint8 or px.ndim != 2:
        raise ValueError(f"pixels must be a 2-D uint8 array, got {px.dtype} {px.shape}")
    x0, y0, x1, y1 = (int(v) for v in region)
    if not (0 <= x0 < x1 <= px.shape[1] and 0 <= y0 < y1 <= px.shape[0]):
        raise ValueError(f"region {region} does not fit an image of shape {px.shape}")
    sx, sy = (spacing_cm, spacing_cm) if np.isscalar(spacing_cm) else spacing_cm
    pid = hashed_patient_id(patient_id) if hash_patient_id else str(patient_id)
    series_key = series_key or pid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    sop_uid = _uid("sop", pid, series_key, instance_number)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _UID_PREFIX + "1"
    meta.ImplementationVersionName = "THYROFAST"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("study", pid)
    ds.SeriesInstanceUID = _uid("series", pid, series_key)
    ds.Modality = "US"
    ds.PatientID = pid
    ds.PatientName = "SYNTHETIC^" + pid[:8]
    ds.StudyDate = "20250101"
    ds.ContentDate = "20250101"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    ds.Manufacturer = "thyrofast synthetic"
    ds.BodyPartExamined = "THYROID"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    reg = Dataset()
    reg.RegionSpatialFormat = 1
    reg.RegionDataType = 1
    reg.RegionFlags = 0
    reg.RegionLocationMinX0 = x0
    reg.RegionLocationMinY0 = y0
    reg.RegionLocationMaxX1 = x1 - 1
    reg.RegionLocationMaxY1 = y1 - 1
    reg.PhysicalUnitsXDirection = 3
    reg.PhysicalUnitsYDirection = 3
    reg.PhysicalDeltaX = float(sx)
    reg.PhysicalDeltaY = float(sy)
    reg.ReferencePixelX0 = x0
    reg.ReferencePixelY0 = y0
    ds.SequenceOfUltrasoundRegions = Sequence([reg])
    ds.PixelData = np.ascontiguousarray(px).tobytes()

    path = Path(path)
    with atomic_write(path, fsync=False) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
