"""Built-in ``patient-view`` service: a one-card summary of who the patient is.

It proves the whole path (auth → validation → prefetch → FHIR R4 parsing → card →
audit); the clinical services (drug safety, report findings, pneumonia, risk) sit beside
it in the registry.
"""

from __future__ import annotations

from cds.cards import Card, Source
from cds.services.registry import CdsService, HookCall, ServiceResult
from fhir_adapters import PATIENT_CONTEXT_PREFETCH, PatientContext
from models.artifacts import ModelIdentity

VERSION = "1.1.0"
SOURCE = Source(label="Wardround patient summary")
MAX_LISTED = 8


def _labels(items: tuple, attribute: str) -> list[str]:  # type: ignore[type-arg]
    return sorted({label for item in items if (label := getattr(item, attribute).label)})


def _listed(patient: PatientContext, key: str, labels: list[str]) -> list[str] | None:
    """Display texts, or None when the data could not be had (not prefetched nor fetched)."""
    return None if key in patient.unavailable else labels


def _describe(label: str, items: list[str] | None) -> tuple[str, str]:
    if items is None:
        return f"{label.lower()}: not available", f"**{label}**: not available from the EHR"
    count = f"{len(items)} {label.lower()}"
    if not items:
        return count, f"**{label}**: none recorded"
    shown = "\n".join(f"- {item}" for item in items[:MAX_LISTED])
    more = f"\n- … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return count, f"**{label}** ({len(items)}):\n{shown}{more}"


def summarise(call: HookCall) -> ServiceResult:
    patient = call.patient
    models = [ModelIdentity(id="patient-summary", version=VERSION)]
    sex = str(patient.sex or "unknown sex").capitalize()
    if patient.deceased:
        age = "deceased"
    elif patient.age_years is not None:
        age = f"{patient.age_years} y"
    else:
        age = "age unknown"
    problems = _listed(patient, "conditions", _labels(patient.problems, "concept"))
    medications = _listed(patient, "medications", _labels(patient.medications, "concept"))
    allergies = _listed(patient, "allergies", _labels(patient.allergies, "substance"))
    problems_short, problems_detail = _describe("Active problems", problems)
    meds_short, meds_detail = _describe("Active medications", medications)
    _, allergies_detail = _describe("Allergies", allergies)
    card = Card(
        summary=f"{sex}, {age}: {problems_short}, {meds_short}",
        detail=f"{problems_detail}\n\n{meds_detail}\n\n{allergies_detail}",
        indicator="info",
        source=SOURCE,
    )
    return ServiceResult(cards=[card], models=models)


SERVICE = CdsService(
    id="patient-summary",
    hook="patient-view",
    title="Patient summary",
    description=(
        "Summarises the patient's demographics, active problems, active medications and allergies."
    ),
    handler=summarise,
    prefetch={
        key: PATIENT_CONTEXT_PREFETCH[key]
        for key in ("patient", "conditions", "medications", "allergies")
    },
    required_prefetch=frozenset({"patient"}),
    usage_requirements=(
        "Send the patient prefetch, or fhirServer with fhirAuthorization so the service can "
        "fetch it; conditions, medications and allergies are optional."
    ),
)
