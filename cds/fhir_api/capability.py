"""``GET /fhir/metadata``: a CapabilityStatement generated from what the API implements.

The resource types, interactions and search parameters come from
:data:`cds.fhir_api.search_params.PARAMETERS` (the same list the parser enforces), so the
statement cannot list a parameter the server refuses or miss one it accepts.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from cds.access import RESOURCE_TYPES
from cds.fhir_api.search_params import CONTROL, PARAMETERS

SECURITY = (
    "Bearer JWT access tokens (RFC 9068 or plain JWT) signed by an issuer on the API "
    "allow-list (WARDROUND_API_ISSUERS), aud = this base URL. Grants: scopes "
    "system/*.read, user/*.read, system/<Type>.read (SMART v1; v2 .rs/.r/.s too) or the "
    "roles claim (reviewer: results and the AuditEvents of CDS calls and feedback; "
    "auditor: also the access log). Hook tokens of EHRs are refused. Every read is itself "
    "recorded as an AuditEvent."
)
PROFILES = {
    "AuditEvent": "One AuditEvent per CDS call (inv-<seq>), feedback entry (fb-<seq>) and read "
    "of the audit or reviewer log-in (acc-<seq>), after IHE BALP; built from the "
    "hash-chained audit rows.",
    "GuidanceResponse": "One per CDS call (inv-<seq>); the cards as a contained RequestGroup "
    "(R4; RequestOrchestration is R5).",
    "DetectedIssue": "A card's drug-safety finding (card-<uuid>).",
    "RiskAssessment": "A card's risk score or model prediction (card-<uuid>).",
    "Observation": "A card's finding read from a report (card-<uuid>).",
}


def _version() -> str:
    try:
        return metadata.version("wardround")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "0"


def _search_params(resource_type: str) -> list[dict[str, Any]]:
    params = []
    for parameter in PARAMETERS[resource_type] + CONTROL:
        entry: dict[str, Any] = {"name": parameter.name, "type": parameter.type}
        if parameter.definition:
            entry["definition"] = parameter.definition
        documentation = parameter.documentation
        if parameter.modifiers:
            documentation += " (modifiers: " + ", ".join(f":{m}" for m in parameter.modifiers) + ")"
        entry["documentation"] = documentation
        params.append(entry)
    return params


def capability_statement(base_url: str) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "documentation": PROFILES[resource_type],
            "interaction": [
                {"code": "read"},
                {"code": "search-type", "documentation": "keyset pages, _sort=-date by default"},
            ],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": _search_params(resource_type),
        }
        for resource_type in RESOURCE_TYPES
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "Wardround",
        "kind": "instance",
        "software": {"name": "Wardround", "version": _version()},
        "implementation": {
            "description": "Wardround FHIR API: CDS results and the audit log (read-only)",
            "url": f"{base_url}/fhir",
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read and search only. Unknown search parameters are a 400 "
                "OperationOutcome unless the request says Prefer: handling=lenient. Paging "
                "is by a cursor in the Bundle's next link, stable under concurrent inserts.",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "OAuth",
                                }
                            ]
                        }
                    ],
                    "description": SECURITY,
                },
                "resource": resources,
            }
        ],
    }
