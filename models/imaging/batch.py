"""Batch prediction on DICOM files: one JSON-able record per file, never an exception.

Used by ``cds imaging predict``. Each file is read (bounded by ``ImagingLimits.max_bytes``),
decoded by the adapters' :func:`~fhir_adapters.imaging.decode_dicom`, checked by
:mod:`~models.imaging.acceptance` (from the DICOM header alone: there is no ImagingStudy)
and, if accepted, pre-processed and read by the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread

from fhir_adapters.imaging import (
    DEFAULT_LIMITS,
    DicomRejected,
    ImagingLimits,
    decode_dicom,
    valid_uid,
)
from models.imaging.acceptance import rejection_reason
from models.imaging.classifier import PneumoniaClassifier
from models.imaging.preprocess import NotPreprocessable

POSITIVE, NEGATIVE = "pneumonia", "no-pneumonia"


def dicom_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively (sorted, hidden entries left out)."""
    for path in paths:
        if path.is_dir():
            for root, folders, files in os.walk(path):
                folders[:] = sorted(f for f in folders if not f.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def _uid_of(path: Path) -> str | None:
    """The SOP Instance UID of a file that could not be decoded, if its header says one."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = str(ds.get("SOPInstanceUID", "")).strip()
    except Exception:  # not DICOM, truncated, …: no UID to report
        return None
    return uid if valid_uid(uid) else None


def _record(
    path: Path, uid: str | None, probability: float | None, label: str | None, reason: str | None
) -> dict[str, Any]:
    return {
        "sop_instance_uid": uid,
        "file": str(path),
        "status": "skipped" if reason else "analysed",
        "probability": None if probability is None else round(probability, 4),
        "label": label,
        "reason": reason,
    }


def predict_file(
    path: Path, classifier: PneumoniaClassifier, limits: ImagingLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """``{"sop_instance_uid", "file", "status", "probability", "label", "reason"}``."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            return _record(path, _uid_of(path), None, None, f"file over {limits.max_bytes} bytes")
        data = path.read_bytes()
    except OSError as exc:
        return _record(path, None, None, None, f"unreadable file ({type(exc).__name__})")
    try:
        image = decode_dicom(data, limits)
    except DicomRejected as exc:
        return _record(path, _uid_of(path), None, None, exc.reason)
    uid = image.sop_instance_uid if valid_uid(image.sop_instance_uid) else None
    reason = rejection_reason(image, None)
    if reason is not None:
        return _record(path, uid, None, None, reason)
    try:
        probability = classifier.predict(image)
    except NotPreprocessable as exc:
        return _record(path, uid, None, None, exc.reason)
    label = POSITIVE if probability >= classifier.threshold else NEGATIVE
    return _record(path, uid, probability, label, None)
