"""Checks every FHIR resource the API serves must pass: fhir.resources (R4B models, which
accept R4) and the JSON and contained-resource rules those models do not enforce."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class


def _walk(value: Any, path: str = "") -> list[str]:
    """Paths of values FHIR JSON forbids: null, empty strings, arrays or objects."""
    bad = []
    if value is None or value in ("", [], {}):
        bad.append(path or "(root)")
    elif isinstance(value, dict):
        for key, item in value.items():
            bad += _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            bad += _walk(item, f"{path}[{index}]")
    return bad


def _local_references(value: Any) -> list[str]:
    found = []
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.startswith("#"):
            found.append(reference[1:])
        for item in value.values():
            found += _local_references(item)
    elif isinstance(value, list):
        for item in value:
            found += _local_references(item)
    return found


def check_resource(resource: dict[str, Any]) -> Any:
    """Validate one resource; returns the fhir.resources model."""
    assert not _walk(resource), f"empty or null values at {_walk(resource)}"
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    contained = resource.get("contained", [])
    ids = [item["id"] for item in contained]
    assert len(ids) == len(set(ids)), f"duplicate contained ids {ids}"
    for item in contained:
        assert "contained" not in item, "contained resources may not contain resources (dom-2)"
    referenced = set(_local_references(resource))
    assert referenced <= set(ids), f"unresolved local references {referenced - set(ids)}"
    assert set(ids) <= referenced, (
        f"contained but never referenced (dom-3): {set(ids) - referenced}"
    )
    json.dumps(resource, allow_nan=False)
    return model


def check_bundle(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a Bundle and every entry's resource; returns the resources."""
    assert bundle["resourceType"] == "Bundle"
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert not _walk(bundle)
    resources = []
    for entry in bundle.get("entry", []):
        check_resource(entry["resource"])
        resources.append(entry["resource"])
    return resources
