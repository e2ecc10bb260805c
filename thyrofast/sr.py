"""DICOM Structured Report output: one Comprehensive 3D SR (TID 1500 Measurement Report) per *study*.

``thyrofast predict ... --sr OUT/`` writes ``OUT/<StudyInstanceUID>.dcm`` for every
study among the DICOM inputs (non-DICOM inputs have no study and get no SR).
Built with highdicom (the ``sr`` extra).  Each report holds one measurement
group (TID 1501) with:

* the source images (Study / Series / SOP Instance UIDs of every input instance
  of the study, as Source image for measurement group and as evidence);
* ``Finding`` (DCM 121071): the called class (the bundle's operating point, else
  the most probable class) of the study's images aggregated by the bundle's rule;
* one ``Probability of <class>`` measurement per class (unit UCUM ``1``);
* one ``Conformal prediction set member`` evaluation per class in the set, the
  set level (``patient``: the study's aggregated probabilities are calibrated
  like a patient's) and alpha;
* ``Refer for human review`` (SCT Yes / No): the set is not exactly one class, or
  an image of the study was referred by the OOD gate;
* algorithm identification: name ``thyrofast``, its version, and the bundle
  SHA-256 as the model's identity (parameter ``bundle_sha256=<hex>``).

Codes for thyrofast's own concepts use the private coding scheme ``99THYROFAST``.
:func:`read_sr` reads those values back (pydicom only).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["write_study_reports", "read_sr", "SCHEME"]

SCHEME = "99THYROFAST"
_PROB = "P"  # code value prefix of the probability measurements
_SET = "PREDSET"
_REFER = "REFER"
_ALPHA = "ALPHA"
_LEVEL = "SETLEVEL"


def _code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning[:64])


def _class_code(k: int, name: str):
    return _code(f"CLS{k}", name)


#: Type 2 Patient / General Study attributes the SR copies from its evidence: present, maybe empty
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_type2(ds):
    """The header with every Type 2 attribute the SR copies present (empty when the source lacks it)."""
    for kw in _TYPE2:
        if kw not in ds:
            setattr(ds, kw, "")
    return ds


def write_study_reports(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, classes: Sequence[str],
                        provenance: Mapping[str, Any], aggregation: Any = "mean_log_prob",
                        operating_point: Mapping | None = None, conformal: Mapping | None = None) -> list[Path]:
    """Write one SR per study of the DICOM inputs among the ``ok`` image ``records``; returns the paths."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .aggregation import aggregate
    from .clinical import clinical_fields
    from .operating_point import decide

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies: dict[str, dict] = {}
    for r in records:
        if r.get("kind") != "image" or r.get("status") != "ok":
            continue
        try:
            ds = pydicom.dcmread(r["input"], stop_before_pixels=True)
        except Exception:  # not DICOM (PNG, JPEG, .npy): no study to report into
            continue
        if "StudyInstanceUID" not in ds or "SOPInstanceUID" not in ds:
            continue
        st = studies.setdefault(str(ds.StudyInstanceUID), {"datasets": {}, "probs": [], "ood": 0})
        st["datasets"].setdefault(str(ds.SOPInstanceUID), _with_type2(ds))
        st["probs"].append([float(r["probs"][c]) for c in classes])
        st["ood"] += bool((r.get("ood") or {}).get("refer"))
    written = []
    version = str(provenance.get("thyrofast", "unknown"))
    sha = str(provenance.get("bundle_sha256", ""))
    algo = hd.sr.AlgorithmIdentification(name="thyrofast", version=version[:64],
                                         parameters=[f"bundle_sha256={sha}"])
    no_units = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    for study_uid, st in studies.items():
        probs = np.asarray(st["probs"], np.float64)
        p = next(iter(aggregate(probs, [study_uid] * len(probs), aggregation).values()))[0]
        called = decide(p, classes, operating_point)[0]
        clin = clinical_fields(p, classes, conformal, "patient", n_ood=st["ood"])
        evals = [hd.sr.QualitativeEvaluation(name=codes.DCM.Finding,
                                             value=_class_code(list(classes).index(called), called))]
        measurements = [hd.sr.Measurement(name=_code(f"{_PROB}{k}", f"Probability of {c}"), value=float(v),
                                          unit=no_units, algorithm_id=algo)
                        for k, (c, v) in enumerate(zip(classes, p))]
        if "prediction_set" in clin:
            evals += [hd.sr.QualitativeEvaluation(name=_code(_SET, "Conformal prediction set member"),
                                                  value=_class_code(list(classes).index(c), c))
                      for c in clin["prediction_set"]]
            evals.append(hd.sr.QualitativeEvaluation(name=_code(_LEVEL, "Conformal set level"),
                                                     value=_code("PATIENT", "patient")))
            measurements.append(hd.sr.Measurement(name=_code(_ALPHA, "Conformal miscoverage level alpha"),
                                                  value=float(clin["alpha"]), unit=no_units))
        refer = bool(clin.get("refer", False))
        evals.append(hd.sr.QualitativeEvaluation(name=_code(_REFER, "Refer for human review"),
                                                 value=codes.SCT.Yes if refer else codes.SCT.No))
        datasets = list(st["datasets"].values())
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="thyroid nodule classification"),
            algorithm_id=algo, measurements=measurements, qualitative_evaluations=evals,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in datasets])
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="thyrofast", manufacturer_name="thyrofast", model_name=sha[:64] or None))
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=device),
            procedure_reported=hd.sr.CodedConcept(value="24842-1", scheme_designator="LN", meaning="US Thyroid"),
            imaging_measurements=[group])
        sr = hd.sr.Comprehensive3DSR(evidence=datasets, content=report[0], series_instance_uid=hd.UID(),
                                     series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
                                     manufacturer="thyrofast", is_complete=True, is_final=False,
                                     is_verified=False)
        sr.SeriesDescription = "thyrofast AI result"
        path = out / f"{study_uid}.dcm"
        tmp = out / f".{study_uid}.tmp"
        sr.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        written.append(path)
    return written


def _items(seq):
    for item in seq or []:
        yield item
        yield from _items(item.get("ContentSequence"))


def read_sr(path: str | os.PathLike) -> dict:
    """The values :func:`write_study_reports` stored: class, probabilities, set, refer, algorithm, hash, UIDs."""
    import pydicom

    ds = pydicom.dcmread(path)
    out: dict = {"study_instance_uid": str(ds.StudyInstanceUID), "probs": {}, "prediction_set": [],
                 "source_sop_instance_uids": []}
    for it in _items(ds.ContentSequence):
        name = it.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in it else None
        if name is None:
            continue
        key = (str(name.CodingSchemeDesignator), str(name.CodeValue))
        if it.ValueType == "CODE":
            v = it.ConceptCodeSequence[0]
            if key == ("DCM", "121071"):
                out["class"] = str(v.CodeMeaning)
            elif key == (SCHEME, _SET):
                out["prediction_set"].append(str(v.CodeMeaning))
            elif key == (SCHEME, _REFER):
                out["refer"] = str(v.CodeValue) == "373066001"  # SCT Yes
            elif key == (SCHEME, _LEVEL):
                out["set_level"] = str(v.CodeMeaning)
        elif it.ValueType == "NUM":
            value = float(it.MeasuredValueSequence[0].NumericValue)
            meaning = str(name.CodeMeaning)
            if key[0] == SCHEME and key[1].startswith(_PROB) and meaning.startswith("Probability of "):
                out["probs"][meaning[len("Probability of "):]] = value
            elif key == (SCHEME, _ALPHA):
                out["alpha"] = value
        elif it.ValueType == "TEXT" and str(it.TextValue).startswith("bundle_sha256="):
            out["bundle_sha256"] = str(it.TextValue).split("=", 1)[1]
        elif it.ValueType == "TEXT" and key == ("DCM", "111001"):  # Algorithm Name
            out["algorithm_name"] = str(it.TextValue)
        elif it.ValueType == "TEXT" and key == ("DCM", "111003"):  # Algorithm Version
            out["algorithm_version"] = str(it.TextValue)
        elif it.ValueType == "IMAGE":
            ref = it.ReferencedSOPSequence[0]
            uid = str(ref.ReferencedSOPInstanceUID)
            if uid not in out["source_sop_instance_uids"]:
                out["source_sop_instance_uids"].append(uid)
    return out
