"""A card's result (``audit_card.result``, a ``cds.results.CardResult``) → FHIR R4 resource.

==================  ================================================================
CardResult          DetectedIssue / RiskAssessment / Observation
==================  ================================================================
kind                the resource type (detected-issue, risk-assessment, observation)
code                DetectedIssue.code (+ the HL7 v3 ActCode where one fits) /
                    RiskAssessment.prediction.outcome / Observation.code
model               a contained Device (name, the version and artifact SHA-256 the audit
                    row recorded for that model): DetectedIssue.author /
                    RiskAssessment.performer + method / Observation.device + method
basis               DetectedIssue.evidence.detail / RiskAssessment.basis /
                    Observation.derivedFrom (references to the EHR's resources)
inputs              an input with a reference: a reference as above (display: name = value
                    unit, date); without: a contained Observation (code.text, value, date)
text                DetectedIssue.detail / prediction.rationale / Observation.note
severity            DetectedIssue.severity
implicated          DetectedIssue.implicated
probability         prediction.probabilityDecimal
qualitative         prediction.qualitativeRisk (risk-probability code when it is one)
horizon_years       prediction.whenPeriod (from the call's date)
factors             prediction.extension ``urn:wardround:fhir:extension:prediction-factor``
assertion           Observation.valueCodeableConcept (SNOMED CT Present / Absent + ours)
facts               extension ``urn:wardround:fhir:extension:result-fact`` (name, value)
==================  ================================================================

A field that the kind's resource has no place for (a probability on a detected issue)
becomes a ``result-fact`` extension too: nothing the service recorded is dropped.
Accepted feedback on a DetectedIssue's card becomes a ``mitigation``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from cds.audit.tables import Card, Feedback, Invocation
from cds.fhir_api import codes
from cds.fhir_api.audit_events import card_id
from cds.fhir_api.codes import coding, instant
from cds.services.drug_safety import FINDING_KIND_SYSTEM

#: FHIR dateTime (a partial date, or a date-time with seconds and a zone).
FHIR_DATETIME = re.compile(
    r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$"
)
COMMON_FIELDS = {"kind", "code", "model", "basis", "inputs", "text", "facts"}
KIND_FIELDS = {
    "detected-issue": {"severity", "implicated"},
    "risk-assessment": {"probability", "qualitative", "horizon_years", "factors"},
    "observation": {"assertion"},
}
MODEL_DEVICE = "model"
#: What R4 allows in Observation.derivedFrom; other basis references (a DiagnosticReport)
#: go into the core extension workflow-supportingInfo.
DERIVED_FROM_TYPES = (
    "DocumentReference", "ImagingStudy", "Media", "QuestionnaireResponse", "Observation",
    "MolecularSequence",
)  # fmt: skip
SUPPORTING_INFO = "http://hl7.org/fhir/StructureDefinition/workflow-supportingInfo"


def _fact_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return {"valueInteger": value}
    if isinstance(value, int | float) and math.isfinite(value):
        return {"valueDecimal": value}
    if isinstance(value, str) and value:
        return {"valueString": value}
    return {"valueString": json.dumps(value, sort_keys=True, default=str)}


def _fact(name: str, value: Any) -> dict[str, Any]:
    return {
        "url": codes.EXT_FACT,
        "extension": [{"url": "name", "valueString": name}, {"url": "value", **_fact_value(value)}],
    }


def _facts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's facts, and the fields its resource has no place for, as extensions."""
    kind = result.get("kind")
    used = COMMON_FIELDS | KIND_FIELDS.get(kind, set())  # type: ignore[arg-type]
    facts = dict(result.get("facts") or {})
    leftovers = {k: v for k, v in result.items() if k not in used and v not in (None, [], {})}
    return [_fact(str(k), v) for k, v in sorted((facts | leftovers).items())]


def _model_device(result: dict[str, Any], invocation: Invocation) -> dict[str, Any]:
    model_id = str(result.get("model", "unknown"))
    recorded = next((m for m in invocation.model_versions or [] if m.get("id") == model_id), {})
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": MODEL_DEVICE,
        "deviceName": [{"name": model_id, "type": "model-name"}],
        "type": {"coding": [coding(codes.MODEL, model_id)], "text": "Wardround model"},
    }
    if recorded.get("version"):
        device["version"] = [{"value": str(recorded["version"])}]
    if recorded.get("hash"):
        device["identifier"] = [{"system": codes.MODEL_SHA256, "value": str(recorded["hash"])}]
    return device


def _input_display(item: dict[str, Any]) -> str:
    value = item.get("value")
    text = str(item.get("name", "input"))
    if value is not None:
        text += f" = {value}" + (f" {item['unit']}" if item.get("unit") else "")
    if item.get("date"):
        text += f" ({item['date']})"
    return text


def _input_observation(item: dict[str, Any], index: int, patient: str | None) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"input-{index}",
        "status": "final",
        "code": {"text": str(item.get("name", "input"))},
    }
    if patient:
        observation["subject"] = {"reference": f"Patient/{patient}"}
    date = item.get("date")
    if isinstance(date, str) and FHIR_DATETIME.match(date):
        observation["effectiveDateTime"] = date
    value = item.get("value")
    if isinstance(value, bool):
        observation["valueBoolean"] = value
    elif isinstance(value, int | float) and math.isfinite(value):
        quantity: dict[str, Any] = {"value": value}
        if item.get("unit"):
            quantity["unit"] = str(item["unit"])
        observation["valueQuantity"] = quantity
    elif isinstance(value, str) and value:
        observation["valueString"] = value
    return observation


def _basis(
    result: dict[str, Any], patient: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(references, contained Observations) for the result's basis and inputs."""
    references = [{"reference": ref} for ref in result.get("basis") or []]
    contained = []
    for index, item in enumerate(result.get("inputs") or [], start=1):
        if item.get("reference"):
            references.append({"reference": item["reference"], "display": _input_display(item)})
        else:
            contained.append(_input_observation(item, index, patient))
            references.append({"reference": f"#input-{index}", "display": _input_display(item)})
    return references, contained


def _code(result: dict[str, Any]) -> dict[str, Any]:
    code = result.get("code") or {}
    concept: dict[str, Any] = {
        "coding": [
            coding(str(code.get("system", "")), str(code.get("code", "")), code.get("display"))
        ]
    }
    if code.get("display"):
        concept["text"] = code["display"]
    return concept


def _issue_code(result: dict[str, Any]) -> dict[str, Any]:
    concept = _code(result)
    code = result.get("code") or {}
    if code.get("system") == FINDING_KIND_SYSTEM:
        act = codes.ACT_CODE_FOR_FINDING.get(str(code.get("code")))
        if code.get("code") == "opioid" and (result.get("facts") or {}).get("benzodiazepine"):
            act = codes.OPIOID_WITH_BENZODIAZEPINE
        if act is not None:
            concept["coding"].insert(0, coding(codes.ACT_CODE, *act))
    return concept


def _mitigations(card: Card, feedback: Sequence[Feedback]) -> list[dict[str, Any]]:
    labels = {
        s.get("uuid"): s.get("label", "suggestion")
        for s in card.card_json.get("suggestions", [])
        if isinstance(s, dict)
    }
    mitigations = []
    for entry in feedback:
        if entry.outcome != "accepted":
            continue
        taken = [str(labels.get(uuid, uuid)) for uuid in entry.accepted_suggestions or []]
        mitigations.append({
            "action": {
                "coding": [coding(codes.FEEDBACK_OUTCOME, "accepted", "suggestion accepted")],
                "text": "Accepted: " + "; ".join(taken),
            },
            "date": instant(entry.outcome_timestamp),
        })  # fmt: skip
    return mitigations


def _qualitative(value: str) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": value}
    if value.lower() in ("negligible", "low", "moderate", "high", "certain"):
        concept["coding"] = [coding(codes.RISK_PROBABILITY, value.lower())]
    return concept


def _factor(factor: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "name", "valueString": str(factor.get("name", ""))}]
    contribution = factor.get("contribution")
    if isinstance(contribution, int | float) and math.isfinite(contribution):
        parts.append({"url": "contribution", "valueDecimal": contribution})
    if factor.get("value") is not None:
        parts.append({"url": "value", **_fact_value(factor["value"])})
    return {"url": codes.EXT_FACTOR, "extension": parts}


def result_resource(
    card: Card, invocation: Invocation, feedback: Sequence[Feedback] = ()
) -> dict[str, Any] | None:
    """The FHIR resource for a card's result; None for a card without one."""
    result = card.result
    if not result:
        return None
    kind = result.get("kind")
    patient = invocation.patient_id
    references, contained = _basis(result, patient)
    contained.insert(0, _model_device(result, invocation))
    model = {"reference": f"#{MODEL_DEVICE}"}
    method = {"coding": [coding(codes.MODEL, str(result.get("model", "unknown")))]}
    resource: dict[str, Any]
    if kind == "detected-issue":
        resource = {"resourceType": "DetectedIssue", "status": "final", "code": _issue_code(result)}
        if result.get("severity"):
            resource["severity"] = result["severity"]
        if patient:
            resource["patient"] = {"reference": f"Patient/{patient}"}
        resource["identifiedDateTime"] = instant(invocation.received_at)
        resource["author"] = model
        if result.get("implicated"):
            resource["implicated"] = [{"reference": ref} for ref in result["implicated"]]
        if references:
            resource["evidence"] = [{"detail": references}]
        if result.get("text"):
            resource["detail"] = result["text"]
        source_url = (card.card_json.get("source") or {}).get("url")
        if source_url:
            resource["reference"] = source_url
        if mitigations := _mitigations(card, feedback):
            resource["mitigation"] = mitigations
    elif kind == "risk-assessment":
        resource = {"resourceType": "RiskAssessment", "status": "final", "method": method}
        if patient:
            resource["subject"] = {"reference": f"Patient/{patient}"}
        resource["occurrenceDateTime"] = instant(invocation.received_at)
        resource["performer"] = model
        if references:
            resource["basis"] = references
        prediction: dict[str, Any] = {"outcome": _code(result)}
        if result.get("probability") is not None:
            prediction["probabilityDecimal"] = result["probability"]
        if result.get("qualitative"):
            prediction["qualitativeRisk"] = _qualitative(str(result["qualitative"]))
        horizon = result.get("horizon_years")
        if isinstance(horizon, int | float) and horizon > 0:
            prediction["whenPeriod"] = {
                "start": instant(invocation.received_at),
                "end": instant(invocation.received_at + timedelta(days=round(horizon * 365.25))),
            }
        if result.get("text"):
            prediction["rationale"] = result["text"]
        if result.get("factors"):
            prediction["extension"] = [_factor(f) for f in result["factors"]]
        resource["prediction"] = [prediction]
    elif kind == "observation":
        resource = {"resourceType": "Observation", "status": "final", "code": _code(result)}
        if patient:
            resource["subject"] = {"reference": f"Patient/{patient}"}
        resource["issued"] = instant(invocation.received_at)
        assertion = result.get("assertion")
        if assertion in codes.ASSERTION_CODINGS:
            resource["valueCodeableConcept"] = {
                "coding": codes.ASSERTION_CODINGS[assertion],
                "text": assertion,
            }
        if result.get("text"):
            resource["note"] = [{"text": result["text"]}]
        resource["method"] = method
        resource["device"] = model
        derived = [r for r in references if _derivable(r["reference"])]
        if derived:
            resource["derivedFrom"] = derived
        supporting = [
            {"url": SUPPORTING_INFO, "valueReference": r}
            for r in references
            if not _derivable(r["reference"])
        ]
        if supporting:
            resource["extension"] = supporting
    else:
        return None
    ordered: dict[str, Any] = {
        "resourceType": resource.pop("resourceType"),
        "id": card_id(card.uuid),
        "contained": contained,
    }
    extensions = _facts(result) + resource.pop("extension", [])
    if extensions:
        ordered["extension"] = extensions
    return ordered | resource


def _derivable(reference: str) -> bool:
    return reference.startswith("#") or reference.split("/", 1)[0] in DERIVED_FROM_TYPES
