"""Built-in ``patient-view`` service: a one-card summary of who the patient is.

It proves the whole path (auth → validation → prefetch → FHIR R4 parsing → card →
audit); the clinical services of later issues sit beside it in the registry.
"""

from __future__ import annotations

from datetime import date

from fhir.resources.R4B.patient import Patient

from cds.cards import Card, Source
from cds.services.registry import CdsService, HookCall, ModelRef, PrefetchInvalid, ServiceResult
from fhir_adapters import ResourceInvalid, parse_resource, parse_searchset

VERSION = "1.0.0"
SOURCE = Source(label="Wardround patient summary")
MAX_LISTED = 8
ADMINISTRATIVE_GENDER = frozenset({"male", "female", "other", "unknown"})


def _age_years(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _concept_text(concept) -> str | None:  # type: ignore[no-untyped-def]
    if concept is None:
        return None
    if concept.text:
        return str(concept.text)
    for coding in concept.coding or []:
        if coding.display:
            return str(coding.display)
    return None


def _patient(call: HookCall) -> Patient | None:
    data = call.prefetch.get("patient")
    if data is None:
        return None
    try:
        patient = parse_resource(data, "Patient")
    except ResourceInvalid as exc:
        raise PrefetchInvalid("patient", str(exc)) from None
    # fhir.resources checks structure, not required bindings: check the one used here.
    if patient.gender is not None and patient.gender not in ADMINISTRATIVE_GENDER:
        raise PrefetchInvalid("patient", "gender: not an AdministrativeGender code")
    if patient.id != call.context.patientId:
        raise PrefetchInvalid("patient", "Patient.id does not match context.patientId")
    return patient  # type: ignore[return-value]


def _listed(call: HookCall, key: str, resource_type: str, attribute: str) -> list[str] | None:
    """Display texts of a prefetched searchset, or None when the EHR did not prefetch it."""
    if key not in call.prefetch:
        return None
    bundle = call.prefetch[key]
    if bundle is None:
        return []
    try:
        parsed = parse_searchset(bundle, resource_type)
    except ResourceInvalid as exc:
        raise PrefetchInvalid(key, str(exc)) from None
    texts = {_concept_text(getattr(resource, attribute)) for resource in parsed.resources}
    return sorted(text for text in texts if text)


def _describe(label: str, items: list[str] | None) -> tuple[str, str]:
    if items is None:
        return f"{label.lower()}: not available", f"**{label}**: not available from the EHR"
    count = f"{len(items)} {label.lower()}"
    if not items:
        return count, f"**{label}**: none recorded"
    shown = "\n".join(f"- {item}" for item in items[:MAX_LISTED])
    more = f"\n- … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return count, f"**{label}** ({len(items)}):\n{shown}{more}"


def summarise(call: HookCall, today: date | None = None) -> ServiceResult:
    patient = _patient(call)
    models = [ModelRef(id="patient-summary", version=VERSION)]
    if patient is None:
        return ServiceResult(cards=[], models=models)
    today = today or date.today()
    sex = str(patient.gender or "unknown sex").capitalize()
    if patient.deceasedBoolean or patient.deceasedDateTime:
        age = "deceased"
    elif patient.birthDate:
        age = f"{_age_years(patient.birthDate, today)} y"
    else:
        age = "age unknown"
    problems = _listed(call, "conditions", "Condition", "code")
    medications = _listed(call, "medications", "MedicationRequest", "medicationCodeableConcept")
    problems_short, problems_detail = _describe("Active problems", problems)
    meds_short, meds_detail = _describe("Active medications", medications)
    card = Card(
        summary=f"{sex}, {age}: {problems_short}, {meds_short}",
        detail=f"{problems_detail}\n\n{meds_detail}",
        indicator="info",
        source=SOURCE,
    )
    return ServiceResult(cards=[card], models=models)


SERVICE = CdsService(
    id="patient-summary",
    hook="patient-view",
    title="Patient summary",
    description="Summarises the patient's demographics, active problems and active medications.",
    handler=summarise,
    prefetch={
        "patient": "Patient/{{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
    },
    required_prefetch=frozenset({"patient"}),
    usage_requirements="Send the patient prefetch; conditions and medications are optional.",
)
