"""Read Synthea patient bundles (FHIR R4 transaction Bundles, optionally gzip-compressed).

Synthea links resources with ``urn:uuid:`` full URLs; :func:`resources_by_type` rewrites
those references to the relative ``Type/id`` form an EHR's FHIR server would serve.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from fhir_adapters.patient_context import LOINC


def load_bundle(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _rewrite(value: Any, references: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: (
                references.get(item, item)
                if key == "reference" and isinstance(item, str)
                else _rewrite(item, references)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, references) for item in value]
    return value


def resources_by_type(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    entries = [e for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
    references = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if str(e.get("fullUrl", "")).startswith("urn:uuid:") and e["resource"].get("id")
    }
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        resource = _rewrite(entry["resource"], references)
        grouped[resource["resourceType"]].append(resource)
    return dict(grouped)


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A single-page searchset Bundle, as CDS clients send prefetched searches."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def _has_code(concept: Any, code: str) -> bool:
    return any(c.get("code") == code for c in (concept or {}).get("coding", []))


def active_conditions(resources: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        r for r in resources.get("Condition", []) if _has_code(r.get("clinicalStatus"), "active")
    ]


def active_medication_requests(resources: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for r in resources.get("MedicationRequest", []) if r.get("status") == "active"]


def _in_category(resource: dict[str, Any], codes: frozenset[str]) -> bool:
    return any(
        coding.get("code") in codes
        for category in resource.get("category") or []
        for coding in category.get("coding") or []
    )


def _has_loinc(resource: dict[str, Any], code: str) -> bool:
    return any(
        coding.get("system") == LOINC and coding.get("code") == code
        for coding in (resource.get("code") or {}).get("coding") or []
    )


def prefetch_for(resources: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What a CDS client would prefetch for the standard templates of
    ``fhir_adapters.context_builder.PATIENT_CONTEXT_PREFETCH`` (same filters, one page)."""
    vital_or_lab = frozenset({"vital-signs", "laboratory"})
    observations = resources.get("Observation", [])
    return {
        "patient": resources["Patient"][0],
        "conditions": searchset(active_conditions(resources)),
        "medications": searchset(active_medication_requests(resources)),
        "allergies": searchset(resources.get("AllergyIntolerance", [])),
        "observations": searchset([r for r in observations if _in_category(r, vital_or_lab)]),
        "imaging": searchset(resources.get("ImagingStudy", [])),
        "reports": searchset(resources.get("DiagnosticReport", [])),
        "documents": searchset(
            [r for r in resources.get("DocumentReference", []) if r.get("status") == "current"]
        ),
        "condition_history": searchset(resources.get("Condition", [])),
        "medication_history": searchset(resources.get("MedicationRequest", [])),
        "encounters": searchset(resources.get("Encounter", [])),
        "smoking_status": searchset([r for r in observations if _has_loinc(r, "72166-2")]),
    }
