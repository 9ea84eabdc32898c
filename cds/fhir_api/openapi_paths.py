"""The FHIR API's part of ``/openapi.json``, generated from the same parameter list as the
parser and the CapabilityStatement (``search_params.PARAMETERS``)."""

from __future__ import annotations

from typing import Any

from cds.access import RESOURCE_TYPES
from cds.fhir_api.search_params import CONTROL, MAX_COUNT, PARAMETERS, Parameter
from cds.openapi_responses import error_responses

FHIR_JSON = "application/fhir+json"
SECURITY = [{"fhirBearer": []}]
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "FHIR API access token from an issuer on WARDROUND_API_ISSUERS; aud = the "
    "FHIR base URL; grants from the scope (system/*.read, system/<Type>.read …) or roles "
    "(reviewer, auditor) claims. EHR hook tokens are refused.",
}
OPERATION_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}


def _resource(resource_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType", "id"],
        "properties": {"resourceType": {"const": resource_type}, "id": {"type": "string"}},
    }


def _bundle(resource_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType", "type", "link"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "searchset"},
            "link": {"type": "array", "minItems": 1},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "resource": {
                            "type": "object",
                            "properties": {
                                "resourceType": {"enum": [resource_type, "OperationOutcome"]}
                            },
                        }
                    },
                },
            },
        },
    }


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {FHIR_JSON: {"schema": schema}}


def _errors(statuses: dict[int, str]) -> dict[str, Any]:
    outcome = _content({"$ref": "#/components/schemas/OperationOutcome"})
    return error_responses(statuses, outcome, challenged=(401, 403))


AUTH = {
    401: "no token, or a token that is refused (expired, wrong aud, untrusted issuer …)",
    403: "the token grants no read of this resource type (recorded in the access log)",
    406: "a format other than JSON was asked for (_format or Accept)",
    503: "the audit database or the access log is unavailable: retry after Retry-After",
}


def _parameter(parameter: Parameter, name: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if parameter.name == "_count":
        schema = {"type": "integer", "minimum": 1, "maximum": 10 * MAX_COUNT}
    elif parameter.name == "_sort":
        schema = {"type": "string", "enum": ["date", "-date"]}
    elif parameter.name == "_format":
        schema = {"type": "string", "enum": ["json", "application/json", "application/fhir+json"]}
    return {
        "name": name or parameter.name,
        "in": "query",
        "required": False,
        "description": parameter.documentation,
        "schema": schema,
    }


def _search(resource_type: str) -> dict[str, Any]:
    parameters = []
    for parameter in PARAMETERS[resource_type] + CONTROL:
        parameters.append(_parameter(parameter))
        parameters += [_parameter(parameter, f"{parameter.name}:{m}") for m in parameter.modifiers]
    return {
        "operationId": f"fhir-search-{resource_type}",
        "tags": ["FHIR API"],
        "summary": f"Search {resource_type}",
        "description": "Keyset pages (Bundle.link next), newest first; unknown parameters are "
        "a 400 unless `Prefer: handling=lenient`. The read is recorded in the access log.",
        "security": SECURITY,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "a searchset Bundle",
                "content": _content(_bundle(resource_type)),
            },
            **_errors({400: "a parameter is unknown or its value is not valid", **AUTH}),
        },
    }


def _read(resource_type: str) -> dict[str, Any]:
    return {
        "operationId": f"fhir-read-{resource_type}",
        "tags": ["FHIR API"],
        "summary": f"Read {resource_type}",
        "security": SECURITY,
        "parameters": [
            {"name": "resource_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": resource_type, "content": _content(_resource(resource_type))},
            **_errors({400: "a read takes no parameters", 404: "no such resource", **AUTH}),
        },
    }


def _unknown(with_id: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "resource_type",
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "pattern": "^[A-Za-z][A-Za-z0-9]*$",
                "not": {"enum": [*RESOURCE_TYPES, "metadata"]},
            },
        }
    ]
    if with_id:
        parameters.append(
            {"name": "resource_id", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    return {
        "operationId": "fhir-unknown-type" + ("-read" if with_id else ""),
        "tags": ["FHIR API"],
        "summary": "A resource type this server does not serve: 404",
        "security": SECURITY,
        "parameters": parameters,
        "responses": _errors({404: "not a resource type of this server", **AUTH}),
    }


def fhir_paths(schemas: Any) -> dict[str, Any]:
    """``paths`` entries for ``/fhir``; ``schemas`` is cds.openapi's component registry."""
    schemas.put("OperationOutcome", OPERATION_OUTCOME)
    paths: dict[str, Any] = {
        "/fhir/metadata": {
            "get": {
                "operationId": "fhir-metadata",
                "tags": ["FHIR API"],
                "summary": "CapabilityStatement: what the FHIR API implements (no token needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "CapabilityStatement",
                        "content": _content(
                            {
                                "type": "object",
                                "required": ["resourceType"],
                                "properties": {"resourceType": {"const": "CapabilityStatement"}},
                            }
                        ),
                    },
                    **_errors({406: AUTH[406]}),
                },
            }
        }
    }
    for resource_type in RESOURCE_TYPES:
        paths[f"/fhir/{resource_type}"] = {"get": _search(resource_type)}
        paths[f"/fhir/{resource_type}/{{resource_id}}"] = {"get": _read(resource_type)}
    paths["/fhir/{resource_type}"] = {"get": _unknown(False)}
    paths["/fhir/{resource_type}/{resource_id}"] = {"get": _unknown(True)}
    return paths
