"""Fixtures of the imaging model tests: the shared PneumoniaMNIST data, the shipped model,
and chest X-ray DICOM objects built with the same builder as the Orthanc fixtures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from fhir_adapters.imaging import DicomImage, decode_dicom
from models import registry
from models.imaging import MODEL_ID
from models.imaging.classifier import PneumoniaClassifier
from models.imaging.dataset import NPZ, PneumoniaMnist, load_pneumoniamnist
from tests.support.dicom_fixtures import Patient, dicom_bytes, xray_dataset
from tests.support.missing import shared_file

PATIENT = Patient(id="imaging-test", name="Test^Imaging", sex="F", birth_date=None)


@pytest.fixture(scope="session")
def pneumoniamnist() -> PneumoniaMnist:
    return load_pneumoniamnist(shared_file(NPZ))


@pytest.fixture(scope="session")
def classifier() -> PneumoniaClassifier:
    model: PneumoniaClassifier = registry.get(MODEL_ID)
    return model


def chest_xray(pixels: np.ndarray, modality: str = "DX", **changes: Any) -> Dataset:
    """A chest X-ray object (the Orthanc fixtures' builder); ``changes`` set header fields."""
    ds = xray_dataset(
        patient=PATIENT,
        study_uid="1.2.826.0.1.3680043.10.1",
        series_uid="1.2.826.0.1.3680043.10.1.1",
        sop_uid="1.2.826.0.1.3680043.10.1.1.1",
        modality=modality,
        pixels=pixels,
        started=datetime(2024, 1, 2, 3, 4, 5),
    )
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def decoded(ds: Dataset) -> DicomImage:
    return decode_dicom(dicom_bytes(ds))


def write(folder: Path, name: str, ds: Dataset) -> Path:
    path = folder / name
    path.write_bytes(dicom_bytes(ds))
    return path
