"""``pneumonia-cxr`` (patient-view): the pneumonia model on the patient's recent chest X-rays.

The loader retrieves the DICOM of the X-ray studies started within the look-back
(``WARDROUND_IMAGING_LOOKBACK_DAYS``) over DICOMweb; ``models.imaging`` reads the frontal
chest images. For each study, newest first:

* calibrated probability ≥ the model's operating threshold → a **warning** card worded as
  decision support ("Findings suggestive of pneumonia (p = 0.87); radiologist review
  required"), linking to the study (viewer and/or DICOMweb) and to the model card
  (``/models/pneumonia-cxr/``), naming the model version, with a ``risk-assessment``
  result (SNOMED CT 233604007, the probability, the study);
* a chest study none of whose images could be read → an **info** card saying why;
* below the threshold → no card. A negative reading from this model is not evidence of
  absence, and a "no pneumonia" card would invite false reassurance and alert fatigue.

Images passed over (another body part, a lateral view, undecodable, …) are recorded with the
invocation's ``imaging`` prefetch record in the audit log, next to the retrieval failures
the adapters record there, whether or not a card was shown.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from cds.cards import Card, Link, Source
from cds.model_pages import MODEL_CARD_LABEL, card_links
from cds.results import CardResult, Code, Input
from cds.services.registry import CdsService, HookCall, ServiceResult
from fhir_adapters import PATIENT_CONTEXT_PREFETCH
from fhir_adapters.imaging import ImagingStudyRef
from fhir_adapters.parsing import fhir_datetime
from fhir_adapters.patient_context import SNOMED
from models import registry
from models.imaging import MODEL_ID, PNEUMONIA, StudyAssessment, assess_studies

if TYPE_CHECKING:
    from models.imaging.classifier import PneumoniaClassifier

PREFETCH_KEYS = ("patient", "imaging")
RETRIEVAL_NOT_POSSIBLE = (
    "images not retrieved: the request has no fhirServer to read the study's DICOMweb Endpoint from"
)
MAX_REASONS_SHOWN = 5


def _study_label(study: ImagingStudyRef) -> str:
    return study.study_uid or f"ImagingStudy/{study.resource_id}"


def _study_date(study: ImagingStudyRef) -> str:
    started = fhir_datetime(study.started)
    return started.date().isoformat() if started else "unknown date"


def _links(assessment: StudyAssessment, call: HookCall) -> list[Link]:
    study_uid = assessment.study.study_uid
    if not study_uid:
        return []
    links = []
    viewer = call.settings.imaging_viewer_url if call.settings else None
    if viewer:
        links.append(
            Link(
                label="Open the study in the image viewer",
                url=viewer.format(study_uid=study_uid),
                type="absolute",
            )
        )
    if assessment.dicomweb_root:
        links.append(
            Link(
                label="The study on the PACS (DICOMweb)",
                url=f"{assessment.dicomweb_root.rstrip('/')}/studies/{study_uid}",
                type="absolute",
            )
        )
    return links


def _source(version: str) -> Source:
    return Source(label=f"Wardround pneumonia model ({MODEL_ID} {version})")


def _model_line(model: PneumoniaClassifier) -> str:
    identity = model.identity
    test = (model.metadata.get("metrics") or {}).get("test") or {}
    metrics = test.get("metrics") or {}
    performance = ""
    if metrics:
        performance = (
            f" Held-out test set: AUROC {metrics['auroc']['value']:.2f}, sensitivity "
            f"{metrics['sensitivity']['value']:.2f}, specificity "
            f"{metrics['specificity']['value']:.2f} at this threshold."
        )
    return (
        f"Model {identity.id} {identity.version} (artifact {(identity.sha256 or '')[:12]}), "
        "a CNN trained on paediatric chest radiographs at 28x28 pixels (PneumoniaMNIST)."
        f"{performance} Not a diagnostic device."
    )


def _reasons(assessment: StudyAssessment) -> list[str]:
    counted = Counter(o.reason for o in assessment.skipped if o.reason)
    return [
        f"{reason} ({count} images)" if count > 1 else reason
        for reason, count in counted.most_common(MAX_REASONS_SHOWN)
    ]


def positive_card(assessment: StudyAssessment, call: HookCall, model: PneumoniaClassifier) -> Card:
    p = assessment.probability
    assert p is not None
    analysed, total = len(assessment.analysed), len(assessment.analysed) + len(assessment.skipped)
    skipped = _reasons(assessment)
    passed_over = f" Passed over: {'; '.join(skipped)}." if skipped else ""
    detail = (
        f"Chest radiograph of {_study_date(assessment.study)}: the pneumonia model gives a "
        f"calibrated probability of **{p:.2f}**, at or above its operating threshold of "
        f"{assessment.threshold:.2f}. Images analysed: {analysed} of {total}.{passed_over}\n\n"
        "This is decision support, not a diagnosis: **a radiologist must review the images** "
        "before any clinical decision.\n\n"
        f"{_model_line(model)}"
    )
    return Card(
        summary=f"Findings suggestive of pneumonia (p = {p:.2f}); radiologist review required",
        detail=detail,
        indicator="warning",
        source=_source(model.identity.version),
        links=_links(assessment, call) + card_links(call.settings, MODEL_ID, MODEL_CARD_LABEL),
    )


def positive_result(assessment: StudyAssessment, summary: str) -> CardResult:
    study = assessment.study
    started = fhir_datetime(study.started)
    reference = f"ImagingStudy/{study.resource_id}" if study.resource_id else None
    return CardResult(
        kind="risk-assessment",
        code=Code(system=SNOMED, code=PNEUMONIA[0], display=PNEUMONIA[1]),
        model=MODEL_ID,
        basis=(reference,) if reference else (),
        inputs=(
            Input(
                name="chest radiograph",
                value=study.study_uid,
                date=started.isoformat() if started else None,
                reference=reference,
            ),
        ),
        text=summary,
        probability=assessment.probability,
        qualitative="suggestive",
        facts={
            "study_uid": study.study_uid,
            "threshold": assessment.threshold,
            "analysed": {o.instance_uid: o.probability for o in assessment.analysed},
            "skipped": {o.instance_uid: o.reason for o in assessment.skipped},
        },
    )


def not_analysed_card(
    assessment: StudyAssessment, call: HookCall, model: PneumoniaClassifier
) -> Card:
    reasons = _reasons(assessment) or ["no images"]
    listed = "\n".join(f"- {reason}" for reason in reasons)
    return Card(
        summary=(
            f"Chest radiograph of {_study_date(assessment.study)} could not be analysed for "
            "pneumonia"
        ),
        detail=(
            f"The pneumonia model read none of this study's images:\n\n{listed}\n\n"
            "Nothing is implied about the images themselves.\n\n"
            f"{_model_line(model)}"
        ),
        indicator="info",
        source=_source(model.identity.version),
        links=_links(assessment, call),
    )


def _audit_lines(assessments: list[StudyAssessment]) -> list[str]:
    """The passed-over images (beside what the adapters record), for the audit row."""
    return [
        f"imaging: {_study_label(a.study)}: {o.instance_uid}: not read by {MODEL_ID}: {o.reason}"
        for a in assessments
        for o in a.skipped
        if not o.retrieval
    ]


def assess(call: HookCall) -> ServiceResult:
    model: PneumoniaClassifier = registry.get(MODEL_ID)
    no_retrieval = None if call.request.fhirServer else RETRIEVAL_NOT_POSSIBLE
    assessments = assess_studies(call.patient, model, not_retrieved_reason=no_retrieval)
    cards: list[Card] = []
    results: dict[str, CardResult] = {}
    for assessment in assessments:
        if assessment.positive:
            card = positive_card(assessment, call, model)
            cards.append(card)
            results[card.uuid] = positive_result(assessment, card.summary)
        elif not assessment.analysed and assessment.chest:
            cards.append(not_analysed_card(assessment, call, model))
    return ServiceResult(
        cards=cards,
        models=[model.identity],
        results=results,
        skipped={"imaging": _audit_lines(assessments)},
    )


SERVICE = CdsService(
    id="pneumonia-cxr",
    hook="patient-view",
    title="Pneumonia on recent chest radiographs",
    description=(
        "Reads the patient's recent frontal chest radiographs (CR/DX) from the PACS over "
        "DICOMweb with a calibrated CNN and flags findings suggestive of pneumonia for "
        "radiologist review."
    ),
    handler=assess,
    prefetch={key: PATIENT_CONTEXT_PREFETCH[key] for key in PREFETCH_KEYS},
    with_images=True,
    usage_requirements=(
        "Send fhirServer with fhirAuthorization: the ImagingStudy's DICOMweb Endpoint is read "
        "from it, and the PACS must be reachable (WARDROUND_DICOMWEB_AUTH for its credentials)."
    ),
)
