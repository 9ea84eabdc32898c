"""PatientContext in, one assessment per recent X-ray study out (pure: no HTTP, no SQL).

For each X-ray study the loader considered (``PatientContext.images_since``), newest first:
every retrieved image is either *analysed* (it passes :mod:`~models.imaging.acceptance`
and pre-processing, and gets a calibrated probability) or *skipped* with a reason; every
image the loader could not deliver is skipped with the loader's reason. The study's
probability is the highest of its analysed images (a frontal view read as suggestive is
enough to ask for review).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fhir_adapters.imaging import DicomImage, ImagingSeriesRef, ImagingStudyRef
from fhir_adapters.imaging import xray_studies as recent_xray_studies
from fhir_adapters.patient_context import PatientContext
from models.imaging.acceptance import is_chest, rejection_reason, series_is_chest

if TYPE_CHECKING:
    import torch

XRAY_MODALITIES = ("CR", "DX")


class Classifier(Protocol):
    @property
    def threshold(self) -> float: ...

    def prepare(self, image: DicomImage) -> torch.Tensor: ...

    def probabilities(self, inputs: Sequence[torch.Tensor]) -> list[float]: ...


@dataclass(frozen=True)
class ImageOutcome:
    instance_uid: str
    #: Calibrated probability of pneumonia; None when skipped.
    probability: float | None = None
    #: Why the image was not analysed; None when it was.
    reason: str | None = None
    #: Skipped by the loader (never retrieved or decoded), not by the model.
    retrieval: bool = False


@dataclass(frozen=True)
class StudyAssessment:
    study: ImagingStudyRef
    #: Chest by its DICOM headers or its ImagingStudy body site; None when nothing says.
    chest: bool | None
    analysed: tuple[ImageOutcome, ...]
    skipped: tuple[ImageOutcome, ...]
    threshold: float
    #: The DICOMweb root the images came from (for a link), when they were retrieved.
    dicomweb_root: str | None = None

    @property
    def probability(self) -> float | None:
        return max(
            (o.probability for o in self.analysed if o.probability is not None), default=None
        )

    @property
    def positive(self) -> bool:
        return self.probability is not None and self.probability >= self.threshold

    @property
    def strongest(self) -> ImageOutcome | None:
        scored = [o for o in self.analysed if o.probability is not None]
        return max(scored, key=lambda o: o.probability or 0.0) if scored else None


def xray_studies(patient: PatientContext) -> list[ImagingStudyRef]:
    """The studies the loader considered: X-ray, since ``images_since``, newest first."""
    return recent_xray_studies(patient.imaging_studies, patient.images_since, XRAY_MODALITIES)


def _series_of(study: ImagingStudyRef, series_uid: str) -> ImagingSeriesRef | None:
    return next((s for s in study.series if s.uid == series_uid), None)


def _study_is_chest(study: ImagingStudyRef, images: Sequence[DicomImage]) -> bool | None:
    said = [is_chest(image, _series_of(study, image.series_uid)) for image in images]
    said += [series_is_chest(s) for s in study.series if s.modality in XRAY_MODALITIES]
    known = [s for s in said if s is not None]
    return any(known) if known else None


NOT_RETRIEVED = "images not retrieved"


def assess_study(
    patient: PatientContext,
    study: ImagingStudyRef,
    classifier: Classifier,
    not_retrieved_reason: str | None = None,
) -> StudyAssessment:
    from models.imaging.preprocess import NotPreprocessable

    images = [i for i in patient.images if study.study_uid and i.study_uid == study.study_uid]
    skipped: list[ImageOutcome] = []
    accepted: list[tuple[DicomImage, torch.Tensor]] = []
    for image in images:
        reason = rejection_reason(image, _series_of(study, image.series_uid))
        if reason is None:
            try:
                accepted.append((image, classifier.prepare(image)))
                continue
            except NotPreprocessable as exc:
                reason = exc.reason
        skipped.append(ImageOutcome(image.sop_instance_uid, reason=reason))
    for skip in patient.image_skips:
        same = (
            skip.study_uid == study.study_uid
            if study.study_uid
            else skip.study_id == study.resource_id
        )
        if same and (skip.study_uid or skip.study_id):
            uid = skip.instance_uid or "(whole study)"
            skipped.append(ImageOutcome(uid, reason=skip.reason, retrieval=True))
    if not images and not skipped:
        reason = not_retrieved_reason or NOT_RETRIEVED
        skipped.append(ImageOutcome("(whole study)", reason=reason, retrieval=True))
    probabilities = classifier.probabilities([tensor for _, tensor in accepted])
    analysed = tuple(
        ImageOutcome(image.sop_instance_uid, probability=p)
        for (image, _), p in zip(accepted, probabilities, strict=True)
    )
    return StudyAssessment(
        study=study,
        chest=_study_is_chest(study, images),
        analysed=analysed,
        skipped=tuple(skipped),
        threshold=classifier.threshold,
        dicomweb_root=patient.image_sources.get(study.study_uid or ""),
    )


def assess_studies(
    patient: PatientContext, classifier: Classifier, not_retrieved_reason: str | None = None
) -> list[StudyAssessment]:
    """Every X-ray study of the look-back (``PatientContext.images_since``), newest first.

    ``not_retrieved_reason``: what to say of a study the loader did not try to retrieve
    (e.g. the request had no FHIR server to read its Endpoint from).
    """
    return [
        assess_study(patient, study, classifier, not_retrieved_reason)
        for study in xray_studies(patient)
    ]
