"""Code systems and identifier systems of the FHIR API, named once.

HL7 and DICOM systems are the published ones; ``urn:wardround:*`` are Wardround's own
(documented in README, "FHIR API: mapping").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_adapters.patient_context import SNOMED as SNOMED
from fhir_adapters.patient_context import UCUM as UCUM

# --- published systems
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
NETWORK_TYPE_IP = "2"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACTION_TYPE = "http://terminology.hl7.org/CodeSystem/action-type"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
URI = "urn:ietf:rfc:3986"
#: CDS Hooks hook names (``order-sign``, ``patient-view`` …), the hook registry's address.
CDS_HOOKS = "https://cds-hooks.org/hooks"

# --- Wardround's own
WR = "urn:wardround"
SERVICE = f"{WR}:cds-service"
EVENT = f"{WR}:audit-event"
CARD = f"{WR}:card"
MODEL = f"{WR}:model"
MODEL_SHA256 = f"{WR}:model-artifact-sha256"
AUDIT_SEQ = f"{WR}:audit-seq"
ROLE = f"{WR}:role"
SCOPE = f"{WR}:smart-scope"
FEEDBACK_OUTCOME = f"{WR}:feedback-outcome"
#: Error codes of a failed CDS call (``invalid_request``, ``prefetch_required`` …).
ERROR = f"{WR}:error"
ASSERTION = f"{WR}:assertion"
EXT_FACT = f"{WR}:fhir:extension:result-fact"
EXT_FACTOR = f"{WR}:fhir:extension:prediction-factor"
#: Wardround's search parameters (``date`` on GuidanceResponse and Observation.issued).
SEARCH_PARAMETER = f"{WR}:fhir:SearchParameter"

# --- Wardround event subtypes (AuditEvent.subtype, system EVENT)
CDS_CALL = "cds-call"
CDS_FEEDBACK = "cds-feedback"
AUDIT_READ = "audit-read"

#: CDS Hooks card indicator → RequestGroup.action.priority.
PRIORITY = {"info": "routine", "warning": "urgent", "critical": "stat"}

#: Drug-safety finding kinds (``cds.services.drug_safety.FINDING_KIND_SYSTEM``) →
#: HL7 v3 ActCode detected-issue codes, where one fits.
ACT_CODE_FOR_FINDING = {
    "interaction": ("DRG", "Drug Interaction Alert"),
    "allergy": ("ALGY", "Allergy Alert"),
    "duplicate": ("DUPTHPY", "Duplicate Therapy Alert"),
    "renal": ("DOSECOND", "dosage-condition alert"),
    "opioid": ("DOSEH", "High Dose Alert"),
}
#: An opioid finding that is about a benzodiazepine taken with it is an interaction.
OPIOID_WITH_BENZODIAZEPINE = ("DRG", "Drug Interaction Alert")

ASSERTION_CODINGS: dict[str, list[dict[str, str]]] = {
    "present": [
        {"system": SNOMED, "code": "52101004", "display": "Present"},
        {"system": ASSERTION, "code": "present", "display": "Present"},
    ],
    "absent": [
        {"system": SNOMED, "code": "2667000", "display": "Absent"},
        {"system": ASSERTION, "code": "absent", "display": "Absent"},
    ],
    "uncertain": [{"system": ASSERTION, "code": "uncertain", "display": "Uncertain"}],
}


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [coding(system, code, display)]}


def instant(value: datetime) -> str:
    """A FHIR instant in UTC with microseconds (SQLite hands back naive UTC datetimes)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_code(status_code: int) -> str:
    """AuditEvent.outcome from an HTTP status: 0 success, 4 minor (4xx), 8 serious (5xx)."""
    if status_code < 400:
        return "0"
    return "4" if status_code < 500 else "8"
