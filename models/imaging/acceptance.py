"""Which images the pneumonia model may read: frontal chest projection radiographs, nothing else.

The model was trained on frontal chest radiographs only. An image is accepted when all
of these hold, and otherwise passed over with the first failing reason (never guessed at):

* modality CR or DX (a projection radiograph) and not a DX *For Processing* object (raw
  detector values, not meant to be looked at);
* chest: DICOM Body Part Examined (``CHEST``, or ``THORAX`` as some vendors write it)
  and/or the ImagingStudy series body site (SNOMED CT 51185008 Thoracic structure,
  302551006 Entire thorax). One of them must say chest, and neither may say otherwise;
* a frontal view: View Position ``PA`` or ``AP`` (a lateral or an unrecorded view is
  passed over: the model has never seen one).
"""

from __future__ import annotations

from fhir_adapters.imaging import DicomImage, ImagingSeriesRef

PROJECTION_MODALITIES = frozenset({"CR", "DX"})
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX"})
#: SNOMED CT body structures meaning the chest (ImagingStudy.series.bodySite).
CHEST_BODY_SITES = frozenset({"51185008", "302551006"})
FRONTAL_VIEWS = frozenset({"PA", "AP"})


def series_is_chest(series: ImagingSeriesRef | None) -> bool | None:
    """What the FHIR series says: chest (True), another site (False), or nothing (None)."""
    if series is None or not series.body_site_code:
        return None
    return series.body_site_code in CHEST_BODY_SITES


def header_is_chest(image: DicomImage) -> bool | None:
    """What the DICOM header says: chest (True), another part (False), or nothing (None)."""
    part = image.body_part_examined.strip().upper()
    if not part:
        return None
    return part in CHEST_BODY_PARTS


def is_chest(image: DicomImage | None, series: ImagingSeriesRef | None) -> bool | None:
    """Chest when one source says so and none says otherwise; None when neither says."""
    said = (header_is_chest(image) if image is not None else None, series_is_chest(series))
    known = [s for s in said if s is not None]
    if not known:
        return None
    return all(known)


def _shown(value: str) -> str:
    value = value.strip()
    return value if value and value.replace(" ", "").replace("_", "").isalnum() else "(none)"


def rejection_reason(image: DicomImage, series: ImagingSeriesRef | None) -> str | None:
    """None when the model may read ``image``; else why not (codes only, no patient data)."""
    modality = image.modality.strip().upper()
    if modality not in PROJECTION_MODALITIES:
        return f"modality {_shown(modality)} is not a projection radiograph (CR/DX)"
    if image.sop_class_uid == DX_FOR_PROCESSING:
        return "DX For Processing object (raw detector data, not for presentation)"
    header, site = header_is_chest(image), series_is_chest(series)
    body_part = _shown(image.body_part_examined.upper())
    body_site = series.body_site_code if series and series.body_site_code else "(none)"
    if header is None and site is None:
        return "body part not recorded (no Body Part Examined, no ImagingStudy body site)"
    if header is False or site is False:
        return (
            f"not a chest radiograph (Body Part Examined {body_part}, "
            f"ImagingStudy body site {_shown(body_site)})"
        )
    view = image.view_position.strip().upper()
    if not view:
        return "view position not recorded (the model reads frontal PA/AP views only)"
    if view not in FRONTAL_VIEWS:
        return f"view position {_shown(view)} is not frontal (PA/AP)"
    return None
