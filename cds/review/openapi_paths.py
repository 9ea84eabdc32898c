"""The review page's part of ``/openapi.json``: HTML pages behind a log-in, described so
that every route of the app is (tests/test_openapi.py) and the fuzzer reaches them."""

from __future__ import annotations

from typing import Any

from cds.review.filters import INDICATORS, OUTCOMES, PAGE_SIZES

SECURITY = [{"reviewerSession": []}]
SECURITY_SCHEME = {
    "type": "apiKey",
    "in": "cookie",
    "name": "__Host-wardround-review",
    "description": "Session cookie set by POST /review/login (Secure, HttpOnly, SameSite=Lax; "
    "without WARDROUND_SESSION_COOKIE_SECURE the name has no __Host- prefix). Forms carry a "
    "CSRF token.",
}
HTML = {"text/html": {"schema": {"type": "string"}}}
REDIRECT = {
    "description": "not logged in (or the session expired): to the log-in page",
    "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
}
COMMON = {
    "302": REDIRECT,
    "503": {
        "description": "no WARDROUND_SECRET_KEY, or the audit database / access log is unavailable",
        "content": HTML,
    },
}
FILTER = [
    ("date_from", {"type": "string", "format": "date"}),
    ("date_to", {"type": "string", "format": "date"}),
    ("patient", {"type": "string"}),
    ("service", {"type": "string"}),
    ("indicator", {"type": "string", "enum": ["", *INDICATORS]}),
    ("outcome", {"type": "string", "enum": ["", *OUTCOMES]}),
    ("model", {"type": "string"}),
]


def _query(params: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": s} for n, s in params]


def _page(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]] | None = None,
    content: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "content": content or HTML}}
    for status, description in (errors or {}).items():
        responses[status] = {"description": description, "content": HTML}
    return {
        "operationId": operation_id,
        "tags": ["Review page"],
        "summary": summary,
        "security": SECURITY,
        "parameters": parameters or [],
        "responses": responses | COMMON,
    }


def review_paths(schemas: Any) -> dict[str, Any]:
    """``paths`` entries for ``/review`` (``schemas``: cds.openapi's component registry)."""
    bad_filter = {"400": "a filter value is not valid"}
    export_params = _query(FILTER)
    login_form = {
        "type": "object",
        "required": ["username", "password", "csrf_token"],
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string"},
            "csrf_token": {"type": "string"},
        },
    }
    return {
        "/review/login": {
            "get": {
                "operationId": "review-login-form",
                "tags": ["Review page"],
                "summary": "Log-in form",
                "security": [],
                "responses": {"200": {"description": "the form", "content": HTML}}
                | {"503": COMMON["503"]},
            },
            "post": {
                "operationId": "review-login",
                "tags": ["Review page"],
                "summary": "Log in (sets the session cookie and redirects)",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": login_form}},
                },
                "responses": {
                    "200": {"description": "the form again, with an error", "content": HTML},
                    "302": {"description": "logged in", "headers": REDIRECT["headers"]},
                    "400": {"description": "missing or stale CSRF token", "content": HTML},
                    "503": COMMON["503"],
                },
            },
        },
        "/review/logout": {
            "post": {
                "operationId": "review-logout",
                "tags": ["Review page"],
                "summary": "Log out (ends every session of the account)",
                "security": SECURITY,
                "responses": {
                    "302": REDIRECT,
                    "400": {"description": "missing or stale CSRF token", "content": HTML},
                    "503": COMMON["503"],
                },
            }
        },
        "/review/": {
            "get": _page(
                "review-calls",
                "The calls, newest first, filtered and paged",
                _query(
                    [
                        *FILTER,
                        ("size", {"type": "string", "enum": [str(n) for n in PAGE_SIZES]}),
                        ("before", {"type": "integer", "minimum": 1}),
                    ]
                ),
                errors=bad_filter,
            )
        },
        "/review/calls/{seq}": {
            "get": _page(
                "review-call",
                "One call: request digest, prefetch, cards as shown, models, feedback",
                [{"name": "seq", "in": "path", "required": True, "schema": {"type": "integer"}}],
                errors={"404": "no such call"},
            )
        },
        "/review/cards/{card_uuid}": {
            "get": {
                **_page(
                    "review-card",
                    "Where a card is (redirect to its call, at the card)",
                    [
                        {
                            "name": "card_uuid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    errors={"404": "no such card"},
                ),
            }
        },
        "/review/summary": {
            "get": _page(
                "review-summary",
                "Cards per service per day; override rates per service and card type",
                _query(FILTER),
                errors=bad_filter,
            )
        },
        "/review/access": {
            "get": _page(
                "review-access-log",
                "Who read the audit log (auditors)",
                _query([("before", {"type": "integer", "minimum": 1})]),
                errors={"403": "not an auditor"},
            )
        },
        "/review/export.csv": {
            "get": _page(
                "review-export-csv",
                "The filter's calls as CSV (one row per card), streamed",
                export_params,
                {"text/csv": {"schema": {"type": "string"}}},
                bad_filter,
            )
        },
        "/review/export.ndjson": {
            "get": _page(
                "review-export-ndjson",
                "The filter's AuditEvents as NDJSON, streamed",
                export_params,
                {"application/fhir+ndjson": {"schema": {"type": "string"}}},
                bad_filter,
            )
        },
        "/review/export.json": {
            "get": _page(
                "review-export-bundle",
                "The filter's AuditEvents as a FHIR Bundle (collection), streamed",
                export_params,
                {"application/fhir+json": {"schema": {"type": "object"}}},
                bad_filter,
            )
        },
    }
