"""``/fhir``: read and search of the CDS results and the audit log (FHIR R4, JSON).

Every answer that carries audit data is recorded first (``audit_access``, in the hash
chain): if that write fails the answer is a 503 and no data leaves. Refusals for lack of
a grant (403) are recorded too; a missing or bad token (401) is only logged, so that
anonymous traffic cannot fill the chain.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from cds.access import RESOURCE_TYPES, Principal
from cds.app_state import public_base_url, record_access, snapshot_session
from cds.audit import AuditUnavailable
from cds.fhir_api import queries
from cds.fhir_api.auth import ApiAuthenticator
from cds.fhir_api.capability import capability_statement
from cds.fhir_api.codes import instant
from cds.fhir_api.outcome import FhirError, error_response, fhir_response, operation_outcome
from cds.fhir_api.search_params import (
    JSON_FORMATS,
    Search,
    parse_search,
    shown_name,
    wants_lenient,
)
from cds.security import AuthError

log = logging.getLogger("cds.fhir_api")
bp = Blueprint("fhir", __name__, url_prefix="/fhir")
RETRY = {"Retry-After": "5"}
REALM = 'Bearer realm="wardround-fhir"'


def _authenticator() -> ApiAuthenticator:
    return current_app.extensions["wardround.api_auth"]


def _check_accept() -> None:
    fmt = request.args.get("_format")
    if fmt is not None and fmt not in JSON_FORMATS:
        raise FhirError(406, "only JSON is served (_format=json)")
    accept = request.accept_mimetypes
    if request.headers.get("Accept") and not accept.best_match(
        ["application/fhir+json", "application/json"]
    ):
        raise FhirError(406, "only application/fhir+json is served")


@bp.before_request
def authenticate() -> Response | None:
    g.principal = None
    try:
        _check_accept()
    except FhirError as exc:
        return error_response(exc)
    if request.endpoint == "fhir.metadata":
        return None  # the capability statement is public (as SMART requires)
    try:
        g.principal = _authenticator().principal(request.headers.get("Authorization"))
    except AuthError as exc:
        log.info("fhir api authentication refused", extra={"reason": exc.reason})
        header = f'{REALM}, error="invalid_token", error_description="{exc.reason}"'
        return error_response(
            FhirError(
                401, f"authentication failed: {exc.reason}", headers={"WWW-Authenticate": header}
            )
        )
    return None


@bp.errorhandler(FhirError)
def _fhir_error(exc: FhirError) -> Response:
    return error_response(exc)


def _record(principal: Principal, action: str, status: int, **fields: Any) -> None:
    """Write the access row before the answer leaves; 503 if it cannot be written."""
    try:
        record_access(principal, action, status, **fields)
    except AuditUnavailable:
        log.error("access log write failed; answering 503")
        raise FhirError(
            503, "the audit log is unavailable, so no audit data is released", headers=RETRY
        ) from None


def _forbidden(principal: Principal, action: str, target: str, interaction: str) -> FhirError:
    _record(principal, action, 403, target=target, query=request.args.to_dict(flat=False))
    scope = f"system/{target.split('/')[0]}.read"
    header = f'{REALM}, error="insufficient_scope", scope="{scope}"'
    return FhirError(
        403,
        f"this token grants no {interaction} of {target.split('/')[0]}",
        headers={"WWW-Authenticate": header},
    )


@bp.get("/metadata")
def metadata() -> Response:
    return fhir_response(capability_statement(public_base_url()))


def _link(resource_type: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{public_base_url()}/fhir/{resource_type}" + (f"?{query}" if query else "")


def _bundle(search: Search, page: queries.Page) -> dict[str, Any]:
    resource_type = search.resource_type
    own = list(search.applied)
    if search.cursor is not None:
        own.append(("_cursor", str(search.cursor)))
    links = [{"relation": "self", "url": _link(resource_type, own)}]
    if page.next_cursor is not None:
        params = [(k, v) for k, v in search.applied if k != "_count"]
        params += [("_count", str(search.count)), ("_cursor", str(page.next_cursor))]
        links.append({"relation": "next", "url": _link(resource_type, params)})
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{public_base_url()}/fhir/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": "match"},
        }
        for resource in page.resources
    ]
    if search.ignored:
        names = ", ".join(sorted({shown_name(name) for name in search.ignored}))
        outcome = operation_outcome(
            f"ignored unknown search parameters (Prefer: handling=lenient): {names}",
            code="not-supported",
            severity="warning",
        )
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(datetime.now(UTC)),
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _run_search(search: Search, principal: Principal) -> queries.Page:
    try:
        with snapshot_session() as session:
            if search.resource_type == "AuditEvent":
                return queries.search_audit_events(session, search, principal, public_base_url())
            if search.resource_type == "GuidanceResponse":
                return queries.search_guidance(session, search, public_base_url())
            return queries.search_results(session, search)
    except SQLAlchemyError as exc:
        log.error("fhir search failed", extra={"error": type(exc).__name__})
        raise FhirError(503, "the audit database is unavailable", headers=RETRY) from None


def search(resource_type: str) -> Response:
    principal: Principal = g.principal
    if not principal.may(resource_type, "search"):
        raise _forbidden(principal, "search", resource_type, "search")
    parsed = parse_search(resource_type, request.args, wants_lenient(request.headers.get("Prefer")))
    page = _run_search(parsed, principal)
    _record(
        principal,
        "search",
        200,
        target=resource_type,
        query=parsed.filter_json(),
        patient_id=parsed.single_patient(),
        count=len(page.resources),
    )
    return fhir_response(_bundle(parsed, page))


def read(resource_type: str, resource_id: str) -> Response:
    principal: Principal = g.principal
    target = f"{resource_type}/{resource_id}"
    if not principal.may(resource_type, "read"):
        raise _forbidden(principal, "read", target, "read")
    if request.args and set(request.args) - {"_format"}:
        raise FhirError(400, "a read takes no parameters but _format")
    try:
        with snapshot_session() as session:
            found = queries.read_resource(
                session, resource_type, resource_id, principal, public_base_url()
            )
    except FhirError as exc:
        if exc.status == 403:
            raise _forbidden(principal, "read", target, "read") from None
        raise
    except SQLAlchemyError as exc:
        log.error("fhir read failed", extra={"error": type(exc).__name__})
        raise FhirError(503, "the audit database is unavailable", headers=RETRY) from None
    _record(principal, "read", 200, target=target, patient_id=found.patient_id, count=1)
    return fhir_response(found.resource)


def unknown_type(resource_type: str, resource_id: str | None = None) -> Response:
    raise FhirError(
        404, f"this server serves {', '.join(RESOURCE_TYPES)} only", code="not-supported"
    )


for _type in RESOURCE_TYPES:
    bp.add_url_rule(f"/{_type}", f"search_{_type}", search, defaults={"resource_type": _type})
    bp.add_url_rule(
        f"/{_type}/<resource_id>", f"read_{_type}", read, defaults={"resource_type": _type}
    )
bp.add_url_rule("/<resource_type>", "unknown_type", unknown_type)
bp.add_url_rule("/<resource_type>/<resource_id>", "unknown_type_read", unknown_type)
