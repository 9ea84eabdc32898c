"""Only frontal chest projection radiographs are read; everything else gets a reason."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fhir_adapters.imaging import DicomImage, ImagingInstanceRef, ImagingSeriesRef
from models.imaging.acceptance import DX_FOR_PROCESSING, is_chest, rejection_reason
from tests.imaging.conftest import chest_xray, decoded

PIXELS = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)


@pytest.fixture(scope="module")
def chest_pa() -> DicomImage:
    return decoded(chest_xray(PIXELS, "DX"))


def _series(code: str | None, modality: str = "DX") -> ImagingSeriesRef:
    return ImagingSeriesRef(
        uid="1.2.3.1",
        modality=modality,
        body_site_code=code,
        body_site_display=None,
        instances=(ImagingInstanceRef("1.2.3.1.1", None),),
    )


CHEST, KNEE = "51185008", "72696002"


@pytest.mark.parametrize(
    ("changes", "site", "reason"),
    [
        ({}, None, None),
        ({}, CHEST, None),
        ({"body_part_examined": "THORAX", "view_position": "AP"}, None, None),
        ({"body_part_examined": ""}, CHEST, None),  # the FHIR body site says chest
        ({"body_part_examined": "chest", "modality": "CR"}, None, None),
        ({"modality": "US"}, CHEST, "modality US is not a projection radiograph (CR/DX)"),
        ({"modality": "CT"}, None, "modality CT is not a projection radiograph"),
        ({"sop_class_uid": DX_FOR_PROCESSING}, None, "DX For Processing object"),
        (
            {"body_part_examined": "KNEE"},
            None,
            "not a chest radiograph (Body Part Examined KNEE, ImagingStudy body site (none))",
        ),
        ({"body_part_examined": ""}, KNEE, "not a chest radiograph (Body Part Examined (none), "),
        (
            {},
            KNEE,
            f"not a chest radiograph (Body Part Examined CHEST, ImagingStudy body site {KNEE})",
        ),
        ({"body_part_examined": ""}, None, "body part not recorded"),
        ({"view_position": "LL"}, None, "view position LL is not frontal (PA/AP)"),
        ({"view_position": "LATERAL"}, CHEST, "view position LATERAL is not frontal"),
        ({"view_position": ""}, None, "view position not recorded"),
        ({"modality": "X\x00Y<script>"}, None, "modality (none) is not a projection"),
    ],
)
def test_acceptance(
    chest_pa: DicomImage, changes: dict[str, str], site: str | None, reason: str | None
) -> None:
    image = replace(chest_pa, **changes)
    found = rejection_reason(image, _series(site) if site else None)
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason), found


def test_chest_is_known_only_when_a_source_says_so(chest_pa: DicomImage) -> None:
    no_part = replace(chest_pa, body_part_examined="")
    assert is_chest(chest_pa, None) is True
    assert is_chest(no_part, None) is None
    assert is_chest(no_part, _series(CHEST)) is True
    assert is_chest(chest_pa, _series(KNEE)) is False  # conflicting: not read as chest
    assert is_chest(None, _series(None)) is None
