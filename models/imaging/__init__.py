"""Imaging diagnosis: pneumonia on frontal chest radiographs (CR/DX), a torch CNN.

Doors:

* :func:`load` (the registry's loader): the verified artifact as a
  :class:`~models.imaging.classifier.PneumoniaClassifier` (id, version, hash in
  ``.identity``);
* :func:`assess_studies` (PatientContext in, one :class:`StudyAssessment` per recent
  X-ray study out): which images were read, their calibrated probabilities, which were
  passed over and why;
* :func:`predict_file` for batch use on DICOM files (``cds imaging predict``).

torch is imported only when the model is loaded or used, never by importing this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.imaging.assessment import (
    ImageOutcome,
    StudyAssessment,
    assess_studies,
    xray_studies,
)

if TYPE_CHECKING:
    from models.imaging.classifier import PneumoniaClassifier

MODEL_ID = "pneumonia-cxr"
MODEL_VERSION = "1.0.0"
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts" / MODEL_ID
#: SNOMED CT 233604007 |Pneumonia (disorder)|: what a positive result is about.
PNEUMONIA = ("233604007", "Pneumonia")


def load(folder: Path | None = None) -> PneumoniaClassifier:
    """The shipped artifact (or ``folder``), verified against its manifest."""
    from models.imaging.classifier import load_classifier

    return load_classifier(folder or ARTIFACT_DIR)


__all__ = [
    "ARTIFACT_DIR",
    "MODEL_ID",
    "MODEL_VERSION",
    "PNEUMONIA",
    "ImageOutcome",
    "StudyAssessment",
    "assess_studies",
    "load",
    "xray_studies",
]
