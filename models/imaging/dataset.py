"""PneumoniaMNIST as the model sees it: each image wrapped as a DICOM object and decoded.

Training does not feed the raw arrays to the network. Every 28 x 28 uint8 image becomes a
DX chest PA object (pydicom, in memory, MONOCHROME2, 8 bits, as a PACS would hold it), is
decoded by the adapters' :func:`~fhir_adapters.imaging.decode_dataset` and pre-processed by
:func:`~models.imaging.preprocess.preprocess`: the code path every served image takes.

Data: PneumoniaMNIST (MedMNIST v2, Yang et al., Scientific Data 2023; images from Kermany
et al., Cell 2018: paediatric chest radiographs, Guangzhou), the balanced development
subset in ``shared/data`` (CC BY 4.0). It is read at training time and never shipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from fhir_adapters.imaging import DX_FOR_PRESENTATION, decode_dataset
from models.imaging.preprocess import PreprocessSpec, preprocess
from models.shared_data import shared_data

NPZ = Path("pneumoniamnist") / "pneumoniamnist_28_dev.npz"
#: UIDs of the in-memory training objects (never stored anywhere).
UID_ROOT = "2.25.1"


@dataclass(frozen=True)
class PneumoniaMnist:
    train_images: np.ndarray  #: (N, 28, 28) uint8
    train_labels: np.ndarray  #: (N,) int64, 1 = pneumonia
    val_images: np.ndarray
    val_labels: np.ndarray


def load_pneumoniamnist(path: Path | None = None) -> PneumoniaMnist:
    path = path or shared_data() / NPZ
    if not path.is_file():
        raise FileNotFoundError(f"PneumoniaMNIST not found at {path} (set WARDROUND_SHARED_DATA)")
    with np.load(path) as npz:
        return PneumoniaMnist(
            train_images=npz["train_images"],
            train_labels=npz["train_labels"].reshape(-1).astype(np.int64),
            val_images=npz["val_images"],
            val_labels=npz["val_labels"].reshape(-1).astype(np.int64),
        )


def as_dicom(pixels: np.ndarray, index: int = 0) -> Dataset:
    """One 8-bit greyscale image as a DX For Presentation chest PA object (in memory)."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError("expected a 2-D uint8 image")
    ds = Dataset()
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = f"{UID_ROOT}.{index}"
    ds.StudyInstanceUID = f"{UID_ROOT}.{index}.1"
    ds.SeriesInstanceUID = f"{UID_ROOT}.{index}.1.1"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def model_inputs(
    images: Iterable[np.ndarray], spec: PreprocessSpec, first_index: int = 0
) -> torch.Tensor:
    """Images → DICOM → decode → preprocess, stacked as (N, 1, size, size) float32."""
    tensors = [
        preprocess(decode_dataset(as_dicom(image, first_index + k)), spec)
        for k, image in enumerate(images)
    ]
    return torch.stack(tensors)
