"""The one pre-processing path, in training and in serving: DicomImage pixels → model input.

The adapter (:func:`fhir_adapters.imaging.decode_dataset`) has already applied what the
DICOM header says about presentation: the Modality LUT (Rescale Slope/Intercept), the VOI
LUT or window, and MONOCHROME1 inversion, so its pixels are float32 presentation values in
MONOCHROME2 sense, whatever the bit depth. This module adds what the *model* needs, as a
:class:`PreprocessSpec` that is stored in the artifact and read back at serving:

1. **Aspect-preserving fit**: the centred square of side ``min(rows, columns)`` (what
   MedMNIST v2 did to the Kermany radiographs before resizing them, so the model sees the
   same framing it was trained on; nothing is stretched).
2. **Resize** to ``input_size`` x ``input_size``, bilinear with anti-aliasing (a 4,000-pixel
   film is averaged down, not sub-sampled). An image already at that size is left as is.
3. **Bit-depth normalisation**: min-max of the resized image to [0, 1], which makes 8-, 12-
   and 16-bit images, any rescale and either photometric interpretation comparable; an
   image without contrast is refused (:class:`NotPreprocessable`).
4. **Standardisation** with the training set's mean and standard deviation.

Training wraps every PneumoniaMNIST image as a DICOM object and sends it through the
adapter's decoder and this function (``models.imaging.training``), so a training sample
and the same image served from a PACS give identical tensors (tested).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fhir_adapters.imaging import DicomImage

SPEC_VERSION = 1
FITS = ("center-crop",)
RESAMPLES = ("bilinear-antialias",)
INTENSITIES = ("min-max",)
#: Relative range below which an image counts as blank (no contrast to read).
MIN_CONTRAST = 1e-6


class NotPreprocessable(ValueError):
    """The pixels cannot be turned into a model input; ``reason`` says why (no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: int = 28
    fit: str = "center-crop"
    resample: str = "bilinear-antialias"
    intensity: str = "min-max"
    #: Standardisation after min-max: (x - mean) / std (training-set statistics).
    mean: float = 0.0
    std: float = 1.0
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if not 8 <= self.input_size <= 1024:
            raise ValueError("input_size must be between 8 and 1024")
        if self.fit not in FITS or self.resample not in RESAMPLES:
            raise ValueError(f"unsupported fit/resample {self.fit}/{self.resample}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"unsupported intensity normalisation {self.intensity}")
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ValueError("mean must be finite and std positive")
        if self.version != SPEC_VERSION:
            raise ValueError(f"preprocessing spec version {self.version} is not {SPEC_VERSION}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(**data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def _center_square(pixels: np.ndarray) -> np.ndarray:
    rows, columns = pixels.shape
    side = min(rows, columns)
    top, left = (rows - side) // 2, (columns - side) // 2
    return pixels[top : top + side, left : left + side]


def preprocess_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """2-D presentation pixels (any size, float) → float32 tensor (1, size, size)."""
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise NotPreprocessable("not a 2-D image")
    square = _center_square(pixels)
    tensor = torch.from_numpy(np.array(square, dtype=np.float32, copy=True))[None, None]
    if square.shape[0] != spec.input_size:
        size = (spec.input_size, spec.input_size)
        tensor = F.interpolate(tensor, size=size, mode="bilinear", antialias=True)
    low, high = tensor.min(), tensor.max()
    span = float(high - low)
    if not np.isfinite(span) or span <= MIN_CONTRAST * max(1.0, abs(float(high))):
        raise NotPreprocessable("blank image (no contrast to read)")
    tensor = (tensor - low) / (high - low)
    tensor = (tensor - spec.mean) / spec.std
    return tensor[0].contiguous()


def preprocess(image: DicomImage, spec: PreprocessSpec) -> torch.Tensor:
    """A decoded DICOM image → the model's input tensor (1, size, size)."""
    return preprocess_pixels(image.pixels, spec)
