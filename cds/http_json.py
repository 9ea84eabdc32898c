"""Reading JSON request bodies and writing JSON error bodies."""

from __future__ import annotations

import json
from typing import Any

from flask import Request, Response, jsonify
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

JSON_TYPES = frozenset({"application/json", "application/fhir+json"})


class BodyError(Exception):
    """The body cannot be read as JSON: ``status`` and ``code`` say why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_large() -> BodyError:
    return BodyError(413, "payload_too_large", "request body exceeds the size limit")


def read_json_body(request: Request) -> tuple[bytes, Any]:
    if request.mimetype not in JSON_TYPES:
        raise BodyError(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _too_large() from None
    except ClientDisconnected:
        raise BodyError(400, "incomplete_body", "the request body was not received") from None
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit by Werkzeug, not refused: refuse it here.
        raise _too_large()
    try:
        return raw, json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise BodyError(400, "malformed_json", "request body is not valid JSON") from None


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response
