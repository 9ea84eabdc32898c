"""The OpenAPI 3.1 description is generated from the code and describes every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from werkzeug.routing import Map, Rule

from cds.cards import CdsResponse
from cds.hook_request import HOOK_CONTEXTS
from cds.openapi import build_openapi
from cds.services import default_registry

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one component schema, resolving the document's ``$ref``s."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return Draft202012Validator(root)


@pytest.fixture
def document(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get("/openapi.json")  # no Authorization header: the document is public
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_served_document_is_valid_openapi_3_1(document: dict[str, Any]):
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/openapi.json"]["get"]["security"] == []


def test_every_flask_route_is_described(app: Flask, document: dict[str, Any]):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in document["paths"], f"{rule.rule} is not described"
        for method in (rule.methods or set()) - IGNORED_METHODS:
            assert method.lower() in document["paths"][path], f"{method} {rule.rule}"


def test_each_service_has_its_own_path_with_its_hook_context(document: dict[str, Any]):
    for service in default_registry():
        operation = document["paths"][f"/cds-services/{service.id}"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        request = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        context_model = HOOK_CONTEXTS[service.hook].__name__
        assert request["properties"]["context"] == {"$ref": f"#/components/schemas/{context_model}"}
        assert request["properties"]["hook"]["const"] == service.hook
        prefetch = request["properties"]["prefetch"]["anyOf"][0]["properties"]
        assert set(prefetch) == set(service.prefetch)
        statuses = set(operation["responses"])
        assert {"200", "400", "401", "412", "413", "415", "503"} <= statuses
        for status in statuses - {"200"}:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
        feedback = document["paths"][f"/cds-services/{service.id}/feedback"]["post"]
        assert {"200", "400", "401", "404", "413", "415", "503"} <= set(feedback["responses"])


def test_unknown_service_ids_are_described_as_404(document: dict[str, Any]):
    for path in ("/cds-services/{service_id}", "/cds-services/{service_id}/feedback"):
        operation = document["paths"][path]["post"]
        assert "404" in operation["responses"]
        (parameter,) = operation["parameters"]
        assert parameter["schema"]["not"] == {"enum": [s.id for s in default_registry()]}


def test_the_example_request_is_valid_against_its_schema(document: dict[str, Any]):
    media = document["paths"]["/cds-services/patient-summary"]["post"]["requestBody"]["content"]
    example = media["application/json"]["examples"]["synthea"]["value"]
    ref = media["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    _validator(document, ref).validate(example)
    assert not _validator(document, ref).is_valid(example | {"hook": "order-sign"})


def test_real_answers_match_the_documented_schemas(
    hooks, document: dict[str, Any], patient_view_request: dict[str, Any]
):  # type: ignore[no-untyped-def]
    answer = hooks.call("patient-summary", patient_view_request)
    assert answer.status_code == 200
    _validator(document, "CdsResponse").validate(answer.get_json())
    bad = hooks.call("patient-summary", patient_view_request | {"hookInstance": "nope"})
    assert bad.status_code == 400
    _validator(document, "ErrorBody").validate(bad.get_json())
    card = answer.get_json()["cards"][0]
    stored = hooks.feedback(
        "patient-summary",
        {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                       "outcomeTimestamp": "2024-05-01T10:00:00Z"}]},
    )  # fmt: skip
    assert stored.status_code == 200
    _validator(document, "FeedbackAccepted").validate(stored.get_json())


def test_response_schemas_say_omitted_never_null():
    document = build_openapi(default_registry())
    card = document["components"]["schemas"]["Card"]
    assert card["properties"]["detail"] == {"type": "string", "title": "Detail"}
    assert set(card["required"]) == {"uuid", "summary", "indicator", "source"}
    assert card["properties"]["uuid"]["format"] == "uuid"
    assert document["components"]["schemas"]["CdsResponse"]["required"] == ["cards"]
    empty = CdsResponse(cards=[]).to_json()
    assert Draft202012Validator(
        {"$ref": "#/components/schemas/CdsResponse", "components": document["components"]}
    ).is_valid(empty)


def test_metrics_is_described_only_when_registered():
    registry = default_registry()
    assert "/metrics" not in build_openapi(registry)["paths"]
    assert "/metrics" not in build_openapi(registry, url_map=Map([]))["paths"]
    document = build_openapi(registry, url_map=Map([Rule("/metrics", endpoint="metrics.metrics")]))
    operation = document["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert operation["security"] == []
    validate(document)
