"""Error responses as every part of ``/openapi.json`` describes them (the hook endpoints in
``cds.openapi``, the FHIR API in ``cds.fhir_api.openapi_paths``): one body schema per
status, ``WWW-Authenticate`` on authentication refusals, ``Retry-After`` on 503."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def error_responses(
    statuses: Mapping[int, str], content: Mapping[str, Any], challenged: Collection[int] = (401,)
) -> dict[str, Any]:
    """``responses`` entries for ``statuses`` (status → description), each with ``content``;
    the ``challenged`` statuses carry ``WWW-Authenticate``."""
    responses: dict[str, Any] = {}
    for status, description in statuses.items():
        response: dict[str, Any] = {"description": description, "content": dict(content)}
        if status in challenged:
            response["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
            }
        if status == 503:
            response["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string"}}}
        responses[str(status)] = response
    return responses
