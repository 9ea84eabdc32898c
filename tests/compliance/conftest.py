"""Fixtures for the FHIR API and the review page: API tokens from their own issuer, an app
with the review page on, real calls through the hooks and results written through the
real audit path."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds.audit import AuditLog, CardRecord
from cds.audit.store import utc_now
from cds.audit.tables import Invocation
from cds.results import CardResult
from tests.conftest import (
    BASE_URL,
    AppFactory,
    HookClient,
    SigningKey,
    _ec_key,
    sign,
    synthea_bundles,
)

API_ISSUER = "https://auth.test"
SECRET = "s" * 48
REVIEWER_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def api_key() -> SigningKey:
    return _ec_key("api-es384")


@pytest.fixture(scope="session")
def api_issuers_file(tmp_path_factory: pytest.TempPathFactory, api_key: SigningKey) -> Path:
    folder = tmp_path_factory.mktemp("api-issuers")
    (folder / "api-jwks.json").write_text(json.dumps({"keys": [api_key.public_jwk]}))
    path = folder / "api-issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": API_ISSUER, "jwks_file": "api-jwks.json"}]}))
    return path


ApiToken = Callable[..., str]


@pytest.fixture
def api_token(api_key: SigningKey) -> ApiToken:
    """An API access token: ``scope`` and ``roles`` as given, other claims overridable."""

    def _token(
        scope: str | None = None, roles: Sequence[str] | None = None, **overrides: Any
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": API_ISSUER,
            "sub": "integration-client",
            "aud": BASE_URL + "/fhir",
            "iat": now,
            "exp": now + 300,
        }
        if scope is not None:
            claims["scope"] = scope
        if roles is not None:
            claims["roles"] = list(roles)
        claims.update(overrides)
        return sign(api_key, {k: v for k, v in claims.items() if v is not None})

    return _token


@pytest.fixture
def app(make_app: AppFactory, api_issuers_file: Path) -> Flask:
    """The app with the FHIR API's issuers and the review page's session key."""
    return make_app(api_issuers_file=api_issuers_file, secret_key=SECRET)


class Fhir:
    """GETs on /fhir with a token (``auditor`` role unless told otherwise)."""

    def __init__(self, client: FlaskClient, token: ApiToken) -> None:
        self.client, self.token = client, token

    def get(self, path: str, token: str | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {token or self.token(roles=['auditor'])}")
        return self.client.get(path, headers=headers, **kwargs)

    def bundle(self, path: str, token: str | None = None) -> dict[str, Any]:
        response = self.get(path, token)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/fhir+json"
        return response.get_json()

    def everything(self, path: str, token: str | None = None) -> list[dict[str, Any]]:
        """Every resource of a search, following the next links."""
        resources: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            bundle = self.bundle(url.removeprefix(BASE_URL), token)
            resources += [
                e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
            ]
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        return resources


@pytest.fixture
def fhir(client: FlaskClient, api_token: ApiToken) -> Fhir:
    return Fhir(client, api_token)


def poster(hooks: HookClient) -> Callable[[str, dict[str, Any]], tuple[int, Any]]:
    """``cds.replay.Post`` over the Flask test client (each call with a fresh EHR token)."""

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path.endswith("/feedback"):
            response = hooks.feedback(path.split("/")[2], body)
        else:
            response = hooks.call(path.rsplit("/", 1)[1], body)
        return response.status_code, response.get_json()

    return post


@dataclass
class Written:
    seq: int
    card_uuids: list[str]
    patient_id: str
    hook_instance: str


def write_call(
    app: Flask,
    results: Sequence[CardResult | None],
    *,
    patient_id: str = "p-1",
    service_id: str = "risk-demo",
    hook: str = "patient-view",
    user_id: str = "Practitioner/dr-1",
    status_code: int = 200,
    models: list[dict[str, str]] | None = None,
    indicator: str = "warning",
    received_at: datetime | None = None,
) -> Written:
    """A call with one card per result, written through the real audit path (the way the
    model services of issues #5-#7 write theirs): AuditLog.record_invocation with
    CardRecord(result=CardResult(...).to_json())."""
    audit: AuditLog = app.extensions["wardround.audit"]
    hook_instance = str(uuid.uuid4())
    cards = []
    for i, result in enumerate(results):
        card_uuid = str(uuid.uuid4())
        summary = f"{result.code.display if result else 'info'} #{i}"
        card = {
            "uuid": card_uuid,
            "summary": summary,
            "indicator": indicator,
            "source": {"label": "Wardround test model", "url": "https://example.org/model"},
            "detail": "Some **markdown** detail.",
        }
        cards.append(
            CardRecord(
                uuid=card_uuid,
                summary=summary,
                indicator=indicator,
                card_json=card,
                result=result.to_json() if result else None,
            )
        )
    invocation = Invocation(
        received_at=received_at or utc_now(),
        service_id=service_id,
        hook=hook,
        hook_instance=hook_instance,
        client_iss="https://ehr.test",
        client_sub="ehr-client",
        user_id=user_id,
        patient_id=patient_id,
        request_digest=hashlib.sha256(hook_instance.encode()).hexdigest(),
        prefetch_used=["patient"],
        prefetch_fetched=[{"key": "patient", "source": "supplied"}],
        model_versions=models
        if models is not None
        else [{"id": "risk-demo", "version": "2.0.0", "hash": "ab" * 32}],
        status_code=status_code,
        latency_ms=12.5,
        error_code=None if status_code < 400 else "invalid_request",
        error_detail=None if status_code < 400 else "context.patientId: required",
    )
    seq = audit.record_invocation(invocation, cards if status_code < 400 else [])
    return Written(seq, [c.uuid for c in cards], patient_id, hook_instance)


@pytest.fixture
def reviewer(app: Flask) -> Any:
    """A logged-in reviewer with both roles (tests/compliance/review_client.py)."""
    from tests.compliance.review_client import Reviewer, add_reviewer

    add_reviewer(app, "alice", ("reviewer", "auditor"))
    reviewer = Reviewer(app.test_client())
    assert reviewer.login().status_code == 302
    return reviewer


@pytest.fixture
def replayed(hooks: HookClient) -> Any:
    """Three Synthea patients through the hooks, with feedback (cds.replay)."""
    from cds.replay import replay

    return replay(synthea_bundles()[:3], poster(hooks))
