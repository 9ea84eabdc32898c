"""One pre-processing path: a training sample and the same image served as DICOM are the same
input, whatever the bit depth, photometric interpretation or (lossless) compression."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fhir_adapters.imaging import decode_dicom
from models.imaging import ARTIFACT_DIR
from models.imaging.classifier import PneumoniaClassifier
from models.imaging.dataset import PneumoniaMnist, model_inputs
from models.imaging.preprocess import NotPreprocessable, PreprocessSpec, preprocess_pixels
from tests.imaging.conftest import PATIENT, chest_xray, decoded
from tests.support.dicom_fixtures import compressed_study, variant_study

SAMPLES = (0, 1, 17, 404, 1213, 2427)


def test_the_served_spec_is_the_one_training_wrote(classifier: PneumoniaClassifier) -> None:
    stored = json.loads((ARTIFACT_DIR / "preprocess.json").read_text())
    assert PreprocessSpec.from_json(stored) == classifier.spec
    assert classifier.spec.input_size == 28 and 0 < classifier.spec.std < 1


@pytest.mark.parametrize(
    "change",
    [{"input_size": 4}, {"fit": "pad"}, {"intensity": "window"}, {"std": 0.0}, {"version": 2}],
)
def test_a_spec_the_code_does_not_implement_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PreprocessSpec.from_json(PreprocessSpec().to_json() | change)


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_a_training_sample_and_its_dicom_twin_are_the_same_input(
    pneumoniamnist: PneumoniaMnist, classifier: PneumoniaClassifier, modality: str
) -> None:
    images = pneumoniamnist.train_images[list(SAMPLES)]
    training = model_inputs(images, classifier.spec)  # what training fed the network
    # The twins: built like the Orthanc fixtures (another header, DX with a window, CR
    # without), written as Part 10 bytes and decoded as a DICOMweb answer would be.
    served = torch.stack([classifier.prepare(decoded(chest_xray(i, modality))) for i in images])
    assert torch.equal(training, served)
    assert classifier.probabilities(list(training)) == classifier.probabilities(list(served))


def test_images_stored_differently_are_the_same_input(
    pneumoniamnist: PneumoniaMnist, classifier: PneumoniaClassifier, tmp_path: Path
) -> None:
    images = pneumoniamnist.train_images
    variants = variant_study(PATIENT, tmp_path, images, 100)
    compressed = compressed_study(PATIENT, tmp_path, images, 200)
    exact = [
        variants.instance("monochrome1"),  # stored 255 - v, MONOCHROME1
        variants.instance("rescale16"),  # 16 bits allocated, 12 stored, slope/intercept
        compressed.instance("jpeg2000_lossless"),
        compressed.instance("rle_lossless"),
    ]
    for instance in exact:
        image = decode_dicom(instance.data)
        expected = model_inputs(images[[instance.source_index]], classifier.spec)[0]
        assert torch.equal(classifier.prepare(image), expected), instance.name
    # Lossy JPEG: close, not equal.
    jpeg = compressed.instance("jpeg_baseline")
    expected = model_inputs(images[[jpeg.source_index]], classifier.spec)[0]
    difference = (classifier.prepare(decode_dicom(jpeg.data)) - expected).abs()
    assert 0 < float(difference.mean()) < 0.05


def test_twelve_bit_scaled_values_are_the_same_input(
    pneumoniamnist: PneumoniaMnist, classifier: PneumoniaClassifier
) -> None:
    source = pneumoniamnist.train_images[5]
    stored = source.astype(np.uint16) * 16  # the same image on a 12-bit detector scale
    ds = chest_xray(source, "CR", BitsAllocated=16, BitsStored=12, HighBit=11)
    ds.PixelData = stored.astype("<u2").tobytes()
    image = decoded(ds)
    expected = model_inputs(source[None], classifier.spec)[0]
    torch.testing.assert_close(classifier.prepare(image), expected, rtol=0, atol=1e-5)


def test_aspect_is_kept_by_the_centred_square_and_the_resize_is_antialiased() -> None:
    rows, columns = 3000, 4000
    pixels = np.zeros((rows, columns), np.float32)
    pixels[:, :] = np.linspace(0, 100, columns, dtype=np.float32)[None, :]
    pixels[:, :500] = pixels[:, -500:] = 4000.0  # outside the centred 3000 x 3000 square
    pixels[::2, :] += 50.0  # a one-pixel stripe pattern: averaged away, not aliased
    spec = PreprocessSpec()  # mean 0, std 1: the min-max output itself
    out = preprocess_pixels(pixels, spec)[0].numpy()
    assert out.shape == (28, 28)
    assert out.min() == 0.0 and out.max() == 1.0  # the margins were cropped away
    # Reference: the same crop, resized by Pillow's bilinear filter (also antialiased).
    square = pixels[:, 500:3500]
    reference = np.asarray(Image.fromarray(square, mode="F").resize((28, 28), Image.BILINEAR))
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    np.testing.assert_allclose(out, reference, atol=2e-3)
    assert np.ptp(out[:, 14]) < 0.01  # stripes averaged: every row of a column alike
    assert (np.diff(out, axis=1) > 0).all()  # the gradient runs left to right


def test_an_image_at_the_input_size_is_not_resampled() -> None:
    pixels = np.arange(28 * 28, dtype=np.float32).reshape(28, 28)
    out = preprocess_pixels(pixels, PreprocessSpec())[0].numpy()
    np.testing.assert_array_equal(out, pixels / pixels.max())


@pytest.mark.parametrize("value", [0.0, 1234.5])
def test_an_image_without_contrast_is_refused(value: float) -> None:
    with pytest.raises(NotPreprocessable, match="blank image"):
        preprocess_pixels(np.full((100, 80), value, np.float32), PreprocessSpec())
