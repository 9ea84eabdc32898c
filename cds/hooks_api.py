"""CDS Hooks 2.0 HTTP endpoints: discovery, service invocation and feedback."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from cds import metrics
from cds.app_state import audit_log, service_registry, settings
from cds.audit import AuditUnavailable, CardRecord
from cds.audit.jti import SeenToken
from cds.audit.store import TokenReplayed, utc_now
from cds.audit.tables import Feedback, Invocation
from cds.cards import CdsResponse
from cds.feedback import parse_feedback
from cds.hook_request import DraftOrdersContext, RequestInvalid, parse_hook_request
from cds.http_json import BodyError, error_response, read_json_body
from cds.security import AuthError, ClientIdentity, JwtVerifier
from cds.services.registry import (
    CdsService,
    HookCall,
    PrefetchInvalid,
    model_json,
)
from fhir_adapters import (
    FetchedDataInvalid,
    FhirSource,
    KeyOutcome,
    NoPatientData,
    PatientLoader,
    PatientRequest,
    PrefetchDataInvalid,
    PrefetchUnavailable,
    invalid_draft_orders,
)
from fhir_adapters.prefetch import FAILED, FETCHED, SUPPLIED, SUPPLIED_NULL, TIMED_OUT

log = logging.getLogger("cds.hooks")
bp = Blueprint("cds_hooks", __name__)

SUPPLIED_SOURCES = (SUPPLIED, SUPPLIED_NULL)
MAX_AUDITED_WARNINGS = 20
AUDIT_DOWN = "The audit log is unavailable, so no decision support was released. Retry shortly."


def _observe_fetch(outcome: KeyOutcome) -> None:
    resource_type = outcome.resource_type or "unknown"
    if outcome.source == FETCHED and outcome.ms is not None:
        metrics.FHIR_FETCH_SECONDS.labels(resource_type).observe(outcome.ms / 1000)
    elif outcome.source in (FAILED, TIMED_OUT):
        metrics.FHIR_FETCH_ERRORS.labels(resource_type, outcome.error or outcome.source).inc()


def _loader() -> PatientLoader:
    return current_app.extensions["wardround.patient_loader"]


def _patient_request(service: CdsService, hook_request: Any, context: Any) -> PatientRequest:
    authorization = hook_request.fhirAuthorization
    lookback = timedelta(days=settings().imaging_lookback_days)
    return PatientRequest(
        templates=service.prefetch,
        required=service.required_prefetch,
        supplied=hook_request.prefetch,
        context=context.model_dump(exclude={"draftOrders"}),
        source=FhirSource(
            server=hook_request.fhirServer,
            access_token=authorization.access_token if authorization else None,
        ),
        draft_orders=getattr(context, "draftOrders", None),
        selections=tuple(getattr(context, "selections", ()) or ()),
        with_images=service.with_images,
        images_since=datetime.now(UTC) - lookback if service.with_images else None,
        started=g.started,
    )


def _audit_unavailable() -> Response:
    metrics.AUDIT_UNAVAILABLE.inc()
    response = error_response(503, "audit_unavailable", AUDIT_DOWN)
    response.headers["Retry-After"] = "5"
    return response


def _unauthorized(reason: str) -> Response:
    metrics.AUTH_FAILURES.labels(reason).inc()
    log.info("authentication refused", extra={"reason": reason, "path": request.path})
    response = error_response(401, "unauthorized", "authentication failed", reason=reason)
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _replayed() -> Response:
    return _unauthorized("replayed")


def _token() -> SeenToken | None:
    client: ClientIdentity | None = g.client
    return client.token if client else None


@bp.before_request
def authenticate() -> Response | None:
    g.client = None
    if request.method == "OPTIONS":
        return None  # CORS preflight carries no credentials
    verifier: JwtVerifier | None = current_app.extensions["wardround.verifier"]
    if verifier is None:  # WARDROUND_AUTH=off, development only (warned at start-up)
        return None
    audience = (settings().public_base_url or "") + request.path
    # Service calls and feedback record the jti with their audit rows (one transaction);
    # discovery writes nothing else, so its jti is recorded here.
    remember = request.endpoint == "cds_hooks.discovery"
    try:
        g.client = verifier.verify(request.headers.get("Authorization"), audience, remember)
    except AuthError as exc:
        return _unauthorized(exc.reason)
    except AuditUnavailable:
        return _audit_unavailable()
    return None


@bp.get("/cds-services")
def discovery() -> Response:
    return jsonify(service_registry().discovery())


@dataclass
class _Outcome:
    """What one invocation produced, gathered for the audit row and the response."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    cards: list[CardRecord] = field(default_factory=list)
    error_code: str | None = None
    error_detail: str | None = None
    models: list[dict[str, str]] = field(default_factory=list)
    prefetch_used: list[str] = field(default_factory=list)
    #: Per prefetch key: where it came from, how long a fetch took, what was skipped.
    prefetch_record: list[dict[str, Any]] = field(default_factory=list)

    def record_prefetch(self, outcomes: Sequence[KeyOutcome], warnings: Sequence[str]) -> None:
        self.prefetch_used = [o.key for o in outcomes if o.source in SUPPLIED_SOURCES]
        self.prefetch_record = []
        for key_outcome in outcomes:
            _observe_fetch(key_outcome)
            entry = key_outcome.to_json()
            prefixes = (f"{key_outcome.key}.", f"{key_outcome.key}:")
            skipped = [w for w in warnings if w.startswith(prefixes)]
            if skipped:
                entry["skipped"] = len(skipped)
                entry["warnings"] = skipped[:MAX_AUDITED_WARNINGS]
            self.prefetch_record.append(entry)

    def record_skipped(self, skipped: Mapping[str, Sequence[str]]) -> None:
        """Add what the service passed over to its prefetch key's record (same cap)."""
        for key, lines in skipped.items():
            if not lines:
                continue
            entry = next((e for e in self.prefetch_record if e.get("key") == key), None)
            if entry is None:
                entry = {"key": key}
                self.prefetch_record.append(entry)
            entry["skipped"] = entry.get("skipped", 0) + len(lines)
            warnings = entry.setdefault("warnings", [])
            warnings.extend(list(lines)[: max(0, MAX_AUDITED_WARNINGS - len(warnings))])

    def fail(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.error_code, self.error_detail = status, code, message
        self.body = {"error": code, "message": message, **extra}


def _invalid_prefetch(outcome: _Outcome, key: str, message: str) -> None:
    field_name = f"prefetch.{key}"
    outcome.fail(400, "invalid_prefetch", message, field=field_name)
    outcome.error_detail = f"{field_name}: {message}"


def _run_service(service: CdsService, body: Any, outcome: _Outcome, invocation: Invocation) -> None:
    try:
        hook_request, context = parse_hook_request(body, service.hook)
    except RequestInvalid as exc:
        errors = [e.model_dump() for e in exc.errors]
        outcome.fail(400, "invalid_request", exc.errors[0].message, field=exc.field, errors=errors)
        outcome.error_detail = f"{exc.field}: {exc.errors[0].message}"
        return
    invocation.hook = hook_request.hook
    invocation.hook_instance = str(hook_request.hookInstance)
    invocation.fhir_server = hook_request.fhirServer
    invocation.user_id = context.userId
    invocation.patient_id = context.patientId
    invocation.encounter_id = getattr(context, "encounterId", None)
    g.hook_instance = invocation.hook_instance

    bad_orders = (
        invalid_draft_orders(context.draftOrders) if isinstance(context, DraftOrdersContext) else []
    )
    if bad_orders:
        index, message = bad_orders[0]
        field_name = f"context.draftOrders.entry.{index}.resource"
        outcome.fail(400, "invalid_request", message, field=field_name)
        outcome.error_detail = f"{field_name}: {message}"
        return
    try:
        loaded = _loader().load(_patient_request(service, hook_request, context))
    except PrefetchUnavailable as exc:
        outcome.record_prefetch(exc.outcomes, ())
        outcome.fail(
            412,
            "prefetch_required",
            "required prefetch was not supplied and could not be fetched from fhirServer",
            missing=list(exc.missing),
            reasons=exc.reasons,
        )
        return
    except NoPatientData:
        outcome.body = {"cards": []}  # the EHR has no such patient: nothing to say
        return
    except PrefetchDataInvalid as exc:
        _invalid_prefetch(outcome, exc.key, str(exc))
        return
    except FetchedDataInvalid as exc:
        message = f"the FHIR server's {exc.key} is not usable FHIR R4: {exc}"
        outcome.fail(412, "prefetch_required", message, missing=[exc.key])
        return
    except Exception as exc:  # a defect in the adapters: audited, never a bare 500
        log.error(
            "patient data failed", extra={"service_id": service.id, "error": type(exc).__name__}
        )
        outcome.fail(500, "service_error", "the service failed to read the patient's data")
        return
    outcome.record_prefetch(loaded.prefetch.outcomes, loaded.patient.warnings)
    if loaded.patient.warnings:
        log.info(
            "resources skipped",
            extra={"service_id": service.id, "skipped": len(loaded.patient.warnings)},
        )
    call = HookCall(
        request=hook_request,
        context=context,
        patient=loaded.patient,
        prefetch=loaded.prefetch.data,
        settings=settings(),
    )
    try:
        with metrics.MODEL_SECONDS.labels(service.id).time():
            result = service.handler(call)
        response = CdsResponse(cards=result.cards, systemActions=result.system_actions)
    except PrefetchInvalid as exc:
        _invalid_prefetch(outcome, exc.key, str(exc))
        return
    except Exception as exc:  # a defect in a service: audited, never a bare 500
        # The exception text may quote patient data (pydantic does): log its type only.
        log.error("service failed", extra={"service_id": service.id, "error": type(exc).__name__})
        outcome.fail(500, "service_error", "the service failed to build a response")
        return
    outcome.models = [model_json(model) for model in result.models]
    outcome.record_skipped(result.skipped)
    outcome.body = response.to_json()
    outcome.cards = [
        CardRecord(
            uuid=c["uuid"],
            summary=c["summary"],
            indicator=c["indicator"],
            card_json=c,
            result=r.to_json() if (r := result.results.get(c["uuid"])) else None,
        )
        for c in outcome.body["cards"]
    ]


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    started = time.perf_counter()
    service = service_registry().get(service_id)
    if service is None:
        return error_response(404, "unknown_service", "no CDS service with this id")
    client: ClientIdentity | None = g.client
    invocation = Invocation(
        received_at=utc_now(),
        service_id=service.id,
        client_iss=client.iss if client else None,
        client_sub=client.sub if client else None,
        request_digest=hashlib.sha256(b"").hexdigest(),
        prefetch_fetched=[],
    )
    outcome = _Outcome()
    try:
        raw, body = read_json_body(request)
        invocation.request_digest = hashlib.sha256(raw).hexdigest()
        _run_service(service, body, outcome, invocation)
    except BodyError as exc:
        outcome.fail(exc.status, exc.code, exc.message)

    invocation.status_code = outcome.status
    invocation.error_code = outcome.error_code
    invocation.error_detail = outcome.error_detail
    invocation.prefetch_used = outcome.prefetch_used
    invocation.prefetch_fetched = outcome.prefetch_record
    invocation.model_versions = outcome.models
    invocation.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    try:
        audit_log().record_invocation(invocation, outcome.cards, token=_token())
    except TokenReplayed:
        return _replayed()
    except AuditUnavailable as exc:
        log.error("audit write failed; answering 503", extra={"error": str(exc)})
        return _audit_unavailable()
    g.patient_id = invocation.patient_id
    response = jsonify(outcome.body)
    response.status_code = outcome.status
    return response


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    if service_registry().get(service_id) is None:
        return error_response(404, "unknown_service", "no CDS service with this id")
    try:
        _, body = read_json_body(request)
        parsed = parse_feedback(body)
    except BodyError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except RequestInvalid as exc:
        errors = [e.model_dump() for e in exc.errors]
        return error_response(
            400, "invalid_request", exc.errors[0].message, field=exc.field, errors=errors
        )
    audit = audit_log()
    card_ids = sorted({str(entry.card) for entry in parsed.feedback})
    try:
        known = audit.card_service_ids(card_ids)
    except AuditUnavailable:
        return _audit_unavailable()
    unknown = [c for c in card_ids if c not in known or known[c][0] != service_id]
    if unknown:
        return error_response(
            404, "unknown_card", "feedback names cards this service never returned", cards=unknown
        )
    for i, entry in enumerate(parsed.feedback):
        offered = known[str(entry.card)][1]
        for j, accepted in enumerate(entry.acceptedSuggestions or []):
            if str(accepted.id) not in offered:
                return error_response(
                    400,
                    "invalid_request",
                    "accepted suggestion is not a suggestion of that card",
                    field=f"feedback.{i}.acceptedSuggestions.{j}.id",
                )
    client: ClientIdentity | None = g.client
    rows = [
        Feedback(
            received_at=utc_now(),
            card_uuid=str(entry.card),
            service_id=service_id,
            client_iss=client.iss if client else None,
            outcome=entry.outcome,
            outcome_timestamp=entry.outcomeTimestamp,
            accepted_suggestions=[str(s.id) for s in entry.acceptedSuggestions or []],
            override_reason=(
                entry.overrideReason.model_dump(mode="json", exclude_none=True)
                if entry.overrideReason
                else None
            ),
        )
        for entry in parsed.feedback
    ]
    try:
        audit.record_feedback(rows, token=_token())
    except TokenReplayed:
        return _replayed()
    except AuditUnavailable:
        return _audit_unavailable()
    return jsonify({})
