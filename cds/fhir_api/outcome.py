"""FHIR answers: ``application/fhir+json`` bodies, and an OperationOutcome for every error.

Error texts name the parameter or the rule that failed, never a value that was sent
(a patient id in a query string is PHI) and never data from the audit log.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

FHIR_JSON = "application/fhir+json"

#: HTTP status → OperationOutcome.issue.code (FHIR issue-type).
ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    410: "deleted",
    413: "too-costly",
    415: "not-supported",
    503: "transient",
}


class FhirError(Exception):
    """An error the FHIR API answers with an OperationOutcome."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or ISSUE_CODE.get(status, "exception")
        self.headers = headers or {}


def operation_outcome(
    diagnostics: str, code: str = "invalid", severity: str = "error"
) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def fhir_response(body: dict[str, Any], status: int = 200) -> Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(
        text, status=status, mimetype=FHIR_JSON, content_type=f"{FHIR_JSON}; charset=utf-8"
    )


def error_response(error: FhirError) -> Response:
    response = fhir_response(operation_outcome(error.diagnostics, error.code), error.status)
    response.headers.update(error.headers)
    return response


def http_error(status: int, name: str, headers: dict[str, str] | None = None) -> Response:
    """An HTTP error raised outside the API's own code (routing: 404, 405; 413 …)."""
    return error_response(FhirError(status, name, headers=headers))
