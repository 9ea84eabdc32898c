"""OpenAPI 3.1 description of the service, generated from the code.

Nothing here is written by hand twice: the request and response schemas come from the
pydantic models that validate requests and build responses (``model_json_schema``), the
paths from the service registry (one path per service, with its hook's exact context
model and its declared prefetch), and the optional routes (``/metrics``) from the Flask
URL map. ``GET /openapi.json`` serves the document without authentication.

Response schemas state the service's JSON rules: a member without a value is *omitted*,
never ``null``, so nullable members of the response models are described as optional and
non-nullable; every other member is required.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.routing import Map

from cds.app_state import service_registry, settings
from cds.cards import CdsResponse
from cds.feedback import FeedbackRequest
from cds.fhir_api import openapi_paths as fhir_openapi
from cds.hook_request import HOOK_CONTEXTS, FieldError, HookRequest
from cds.openapi_responses import error_responses
from cds.review import openapi_paths as review_openapi
from cds.services.registry import CdsService, ServiceRegistry

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
JSON_MEDIA_TYPES = ("application/json", "application/fhir+json")
#: Example request bodies, one per hook (``{hook}-request.json``), shipped in the repository.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
#: The blueprint whose routes authenticate the caller (``cds.hooks_api.bp``).
AUTHENTICATED_BLUEPRINT = "cds_hooks"


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable ``error`` code and a human ``message``."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="machine-readable code, e.g. invalid_request, unauthorized")
    message: str
    field: str | None = Field(None, description="dotted path of the first bad field (400)")
    errors: list[FieldError] | None = Field(None, description="every bad field (400)")
    reason: str | None = Field(None, description="why authentication failed (401)")
    missing: list[str] | None = Field(
        None, description="required prefetch keys neither sent nor fetchable (412)"
    )
    reasons: dict[str, str] | None = Field(
        None,
        description="per missing key, why it could not be fetched: no_fhir_server, deadline, "
        "http_status (e.g. 401 from the FHIR server), unreachable, template_token … (412)",
    )
    cards: list[str] | None = Field(None, description="card uuids this service never returned")


class DiscoveryService(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(BaseModel):
    """``GET /cds-services`` (CDS Hooks 2.0 §Discovery)."""

    model_config = ConfigDict(extra="forbid")

    services: list[DiscoveryService]


class FeedbackAccepted(BaseModel):
    """``200 {}``: every feedback entry is stored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- schemas
def _is_null(schema: Any) -> bool:
    return schema == {"type": "null"}


def _response_shape(schema: Any) -> Any:
    """Omitted-never-null: nullable members become optional and non-nullable, the rest required."""
    if isinstance(schema, list):
        return [_response_shape(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _response_shape(value) for key, value in schema.items()}
    properties = out.get("properties")
    if out.get("type") == "object" and isinstance(properties, dict):
        required = []
        for name, prop in properties.items():
            branches = prop.get("anyOf", [])
            if "default" in prop and prop["default"] is None and any(map(_is_null, branches)):
                kept = [b for b in branches if not _is_null(b)]
                rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
                properties[name] = (kept[0] | rest) if len(kept) == 1 else {"anyOf": kept} | rest
            else:
                required.append(name)
        if required:
            out["required"] = required
        else:
            out.pop("required", None)
    return out


class _Schemas:
    """``components.schemas``, filled from pydantic models; a name may hold one schema only."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def put(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        if name in self.schemas and self.schemas[name] != schema:
            raise ValueError(f"two different schemas are named {name}")
        self.schemas[name] = schema
        return {"$ref": REF.format(model=name)}

    def model(self, model: type[BaseModel], *, response: bool = False) -> dict[str, str]:
        mode = "serialization" if response else "validation"
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self.put(name, _response_shape(sub) if response else sub)
        return self.put(model.__name__, _response_shape(schema) if response else schema)


def _camel(service_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", service_id) if part)


def _prefetch_value(template: str) -> dict[str, Any]:
    """What one prefetch key holds: the resource read, or the searchset Bundle of the search."""
    head = template.split("?", 1)[0]
    resource_type = head.split("/", 1)[0]
    described = {"description": f"FHIR R4 result of `{template}`, or null for no data"}
    if "?" not in template and "/" in head:
        resource = {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"const": resource_type}},
        }
    else:
        entry_resource = {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"enum": [resource_type, "OperationOutcome"]}},
        }
        resource = {
            "type": "object",
            "required": ["resourceType"],
            "properties": {
                "resourceType": {"const": "Bundle"},
                "entry": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"resource": entry_resource}},
                },
            },
        }
    return {"anyOf": [resource, {"type": "null"}]} | described


def _service_request(service: CdsService, schemas: _Schemas) -> dict[str, str]:
    """The envelope with this service's hook, its hook's context model and its prefetch keys."""
    schemas.model(HookRequest)
    context = schemas.model(HOOK_CONTEXTS[service.hook])
    envelope = copy.deepcopy(schemas.schemas["HookRequest"])
    envelope["title"] = f"{service.id} request"
    envelope["description"] = f"A `{service.hook}` request for the `{service.id}` service."
    properties = envelope["properties"]
    properties["hook"] = {"type": "string", "const": service.hook}
    properties["context"] = context
    generic_value = properties["prefetch"]["anyOf"][0]["additionalProperties"]
    prefetch: dict[str, Any] = {
        "type": "object",
        "properties": {key: _prefetch_value(t) for key, t in service.prefetch.items()},
        "additionalProperties": generic_value,
    }
    if service.required_prefetch:
        prefetch["description"] = (
            "Required keys (absent: 412): " + ", ".join(sorted(service.required_prefetch)) + "."
        )
    properties["prefetch"] = {"anyOf": [prefetch, {"type": "null"}], "default": None}
    return schemas.put(f"{_camel(service.id)}Request", envelope)


def _hook_examples(hook: str, examples_dir: Path | None) -> dict[str, Any]:
    path = examples_dir / f"{hook}-request.json" if examples_dir else None
    if path is None or not path.is_file():
        return {}
    return {
        "synthea": {
            "summary": f"a {hook} request whose prefetch holds a Synthea patient",
            "value": json.loads(path.read_text(encoding="utf-8")),
        }
    }


# --------------------------------------------------------------------------- operations
def _json(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = examples
    return {"application/json": media}


def _errors(schemas: _Schemas, statuses: dict[int, str]) -> dict[str, Any]:
    return error_responses(statuses, _json(schemas.model(ErrorBody, response=True)))


AUTH_ERRORS = {
    401: "the JWT is missing or refused; `reason` says why (expired, invalid_audience, …)",
    503: "the audit log (or the jti replay store) is unavailable: retry after Retry-After",
}
DEFECT = {500: "a defect in the service (audited); never expected"}
BODY_ERRORS = {
    413: "the body is larger than WARDROUND_MAX_BODY_BYTES",
    415: "the body is not application/json (or application/fhir+json)",
}


def _request_body(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict:
    content = {media: {"schema": schema} for media in JSON_MEDIA_TYPES}
    if examples:
        content["application/json"]["examples"] = examples
    return {"required": True, "content": content}


def _invoke(service: CdsService, schemas: _Schemas, examples_dir: Path | None) -> dict:
    examples = _hook_examples(service.hook, examples_dir)
    prefetch = "".join(f"\n- `{key}`: `{t}`" for key, t in service.prefetch.items())
    return {
        "operationId": f"invoke-{service.id}",
        "tags": ["CDS services"],
        "summary": f"{service.title} ({service.hook})",
        "description": service.description + (f"\n\nPrefetch:{prefetch}" if prefetch else ""),
        "requestBody": _request_body(_service_request(service, schemas), examples),
        "responses": {
            "200": {
                "description": "the cards (and systemActions, when any)",
                "content": _json(schemas.model(CdsResponse, response=True)),
            },
            **_errors(
                schemas,
                {
                    400: "the request breaks the specification: `field` names the bad field "
                    "(envelope, context, fhirServer/fhirAuthorization, prefetch.<key>)",
                    **AUTH_ERRORS,
                    412: "a required prefetch key was neither sent nor fetchable from "
                    "fhirServer; `missing` lists them and `reasons` says why",
                    **BODY_ERRORS,
                    **DEFECT,
                },
            ),
        },
    }


def _feedback(service: CdsService, schemas: _Schemas) -> dict:
    return {
        "operationId": f"feedback-{service.id}",
        "tags": ["Feedback"],
        "summary": f"Feedback on cards of {service.id}",
        "requestBody": _request_body(schemas.model(FeedbackRequest)),
        "responses": {
            "200": {
                "description": "every entry is stored",
                "content": _json(schemas.model(FeedbackAccepted, response=True)),
            },
            **_errors(
                schemas,
                {
                    400: "an entry breaks the feedback rules; `field` names it",
                    **AUTH_ERRORS,
                    404: "an entry names a card this service never returned (nothing stored)",
                    **BODY_ERRORS,
                    **DEFECT,
                },
            ),
        },
    }


def _unknown_service(schemas: _Schemas, ids: list[str], what: str) -> dict:
    return {
        "operationId": f"{what}-unknown-service",
        "tags": ["CDS services"],
        "summary": f"{what} on a service id that is not registered: 404",
        "parameters": [
            {
                "name": "service_id",
                "in": "path",
                "required": True,
                "schema": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_~-]*$",
                    "not": {"enum": ids},
                },
            }
        ],
        "requestBody": _request_body({"type": "object"}),
        "responses": _errors(
            schemas, {404: "no CDS service with this id", **AUTH_ERRORS, **DEFECT}
        ),
    }


def build_openapi(
    registry: ServiceRegistry,
    *,
    url_map: Map | None = None,
    base_url: str | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``registry``.

    ``url_map`` (the app's) adds the optional routes registered on it (``/metrics``);
    ``base_url`` becomes the document's server.
    """
    schemas = _Schemas()
    services = list(registry)
    ids = [service.id for service in services]
    paths: dict[str, Any] = {
        "/cds-services": {
            "get": {
                "operationId": "discovery",
                "tags": ["Discovery"],
                "summary": "The CDS services offered (CDS Hooks 2.0 discovery)",
                "responses": {
                    "200": {
                        "description": "the services, generated from the registry",
                        "content": _json(schemas.model(DiscoveryResponse, response=True)),
                    },
                    **_errors(schemas, {**AUTH_ERRORS, **DEFECT}),
                },
            }
        }
    }
    for service in services:
        paths[f"/cds-services/{service.id}"] = {"post": _invoke(service, schemas, examples_dir)}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": _feedback(service, schemas)}
    paths["/cds-services/{service_id}"] = {"post": _unknown_service(schemas, ids, "invoke")}
    paths["/cds-services/{service_id}/feedback"] = {
        "post": _unknown_service(schemas, ids, "feedback")
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "tags": ["Meta"],
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}
            },
        }
    }
    security_schemes: dict[str, Any] = {}
    if url_map is not None:
        for rule in url_map.iter_rules():
            if rule.rule == "/metrics" and (rule.methods is None or "GET" in rule.methods):
                paths["/metrics"] = {"get": _metrics(schemas, rule.endpoint)}
            elif rule.endpoint.startswith("model_pages."):
                path = rule.rule.replace("<model_id>", "{model_id}").replace("<name>", "{name}")
                paths[path] = {"get": _model_page(rule.endpoint)}
        endpoints = {rule.endpoint for rule in url_map.iter_rules()}
        if "fhir.metadata" in endpoints:
            paths |= fhir_openapi.fhir_paths(schemas)
            security_schemes["fhirBearer"] = fhir_openapi.SECURITY_SCHEME
        if "review.calls" in endpoints:
            paths |= review_openapi.review_paths(schemas)
            security_schemes["reviewerSession"] = review_openapi.SECURITY_SCHEME

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Wardround CDS Hooks service",
            "version": _version(),
            "description": "CDS Hooks 2.0 endpoints. Every call except /openapi.json and "
            "/metrics carries `Authorization: Bearer <JWT>` signed by a trusted EHR, whose "
            "`aud` is the URL of the endpoint called and whose `jti` is used once. The FHIR "
            "API (/fhir) takes API access tokens instead (fhirBearer); the review page "
            "(/review) a reviewer's session cookie.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.schemas.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "CDS Hooks 2.0 client JWT (ES384/RS384, kid, iss, sub, "
                    "aud = endpoint URL, exp, iat, jti)",
                },
                **security_schemes,
            },
        },
        "security": [{"bearerAuth": []}],
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document


def _metrics(schemas: _Schemas, endpoint: str) -> dict[str, Any]:
    authenticated = endpoint.startswith(AUTHENTICATED_BLUEPRINT + ".")
    operation: dict[str, Any] = {
        "operationId": "metrics",
        "tags": ["Meta"],
        "summary": "Prometheus metrics",
        "responses": {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
    if authenticated:
        operation["responses"] |= _errors(schemas, AUTH_ERRORS)
    else:
        operation["security"] = []
    return operation


def _model_page(endpoint: str) -> dict[str, Any]:
    figure = endpoint.endswith("model_figure")
    parameters = [
        {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    if figure:
        parameters.append(
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    media = "image/png" if figure else "text/html"
    return {
        "operationId": endpoint.rsplit(".", 1)[-1],
        "tags": ["Meta"],
        "summary": "A figure of a model card"
        if figure
        else "A model's card (the link on its cards)",
        "security": [],
        "parameters": parameters,
        "responses": {
            "200": {"description": media, "content": {media: {"schema": {"type": "string"}}}},
            "404": {"description": "no such model, or it has no card or figure"},
        },
    }


def _version() -> str:
    try:
        return metadata.version("wardround")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


# --------------------------------------------------------------------------- endpoint
bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    document = current_app.extensions.get("wardround.openapi")
    if document is None:
        document = build_openapi(
            service_registry(),
            url_map=current_app.url_map,
            base_url=settings().public_base_url,
        )
        current_app.extensions["wardround.openapi"] = document
    return jsonify(document)
