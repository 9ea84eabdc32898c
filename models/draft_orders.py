"""Draft FHIR R4 MedicationRequests, built one way.

What a card's ``create`` suggestion carries (a statin, apixaban, naloxone) and what the
demo EHR puts in ``draftOrders`` (``cds.demo``): the same resource shape from the same code,
so a suggestion can be fed back as a draft order and read by the same adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fhir_adapters.patient_context import RXNORM, SNOMED, UCUM

ORDERABLE_DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
ORAL_ROUTE: Mapping[str, Any] = {
    "coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]
}


def dose_quantity(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    """A dose: an orderable drug form when ``code`` is upper case (TAB, CAP), else a UCUM
    unit (mg); ``unit`` is the human-readable unit (default: the code in lower case)."""
    system = ORDERABLE_DRUG_FORM if code.isupper() else UCUM
    return {"value": value, "unit": unit or code.lower(), "system": system, "code": code}


def dosage_instruction(
    *,
    text: str | None = None,
    per_day: tuple[int, float, str] | None = None,
    route: Mapping[str, Any] | None = None,
    dose: Mapping[str, Any] | None = None,
    as_needed: str | None = None,
) -> dict[str, Any]:
    """One ``dosageInstruction``. ``per_day``: (frequency, period, periodUnit), e.g.
    (1, 6, "h") for every 6 hours; ``dose``: a :func:`dose_quantity`; ``as_needed``: the
    condition, as text."""
    instruction: dict[str, Any] = {}
    if text is not None:
        instruction["text"] = text
    if per_day is not None:
        frequency, period, unit = per_day
        instruction["timing"] = {
            "repeat": {"frequency": frequency, "period": period, "periodUnit": unit}
        }
    if route is not None:
        instruction["route"] = dict(route)
    if dose is not None:
        instruction["doseAndRate"] = [{"doseQuantity": dict(dose)}]
    if as_needed is not None:
        instruction["asNeededCodeableConcept"] = {"text": as_needed}
    return instruction


def medication_request(
    patient_id: str | None,
    rxnorm: tuple[str, str],
    *,
    text: str | None = None,
    instruction: Mapping[str, Any] | None = None,
    reasons: Sequence[Mapping[str, Any]] = (),
    order_id: str | None = None,
) -> dict[str, Any]:
    """A draft MedicationRequest (intent ``order``) for the RxNorm ``(code, display)``.

    ``text``: the medication's text (default: the display); ``instruction``: one
    :func:`dosage_instruction` (none when empty); ``reasons``: Codings, one ``reasonCode`` each."""
    code, display = rxnorm
    order: dict[str, Any] = {"resourceType": "MedicationRequest"}
    if order_id is not None:
        order["id"] = order_id
    order |= {
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": text or display,
        },
    }
    if patient_id:
        order["subject"] = {"reference": f"Patient/{patient_id}"}
    if reasons:
        order["reasonCode"] = [{"coding": [dict(reason)]} for reason in reasons]
    if instruction:
        order["dosageInstruction"] = [dict(instruction)]
    return order
