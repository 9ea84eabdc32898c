"""CDS Hooks 2.0 request models: the envelope, fhirAuthorization and each hook's context.

Validation errors name the offending field as a dotted path (``context.patientId``) and
never echo the submitted value back (it may be PHI).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fhir_adapters import find_unstorable_text, printable_path

NonEmpty = Annotated[str, Field(min_length=1, max_length=1024)]
FhirId = Annotated[str, Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
UserReference = Annotated[
    str,
    Field(pattern=r"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$"),
]
RelativeReference = Annotated[str, Field(pattern=r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")]


class FhirAuthorization(BaseModel):
    """OAuth 2.0 access token for the EHR's FHIR server: transient, never stored or logged."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    access_token: NonEmpty
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, Field(ge=0)]
    scope: NonEmpty
    subject: NonEmpty
    patient: FhirId | None = None

    def __repr__(self) -> str:  # keep the token out of any traceback or log line
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r})"


class _Context(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, frozen=True)

    userId: UserReference
    patientId: FhirId

    def cross_field_errors(self) -> list[FieldError]:
        return []


class PatientViewContext(_Context):
    encounterId: FhirId | None = None


class EncounterContext(_Context):
    """``encounter-start`` and ``encounter-discharge``."""

    encounterId: FhirId


class DraftOrdersContext(_Context):
    encounterId: FhirId | None = None
    draftOrders: dict[str, Any]

    @field_validator("draftOrders")
    @classmethod
    def _is_bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        return value


class OrderSignContext(DraftOrdersContext):
    pass


class OrderSelectContext(DraftOrdersContext):
    selections: Annotated[list[RelativeReference], Field(min_length=1)]

    def cross_field_errors(self) -> list[FieldError]:
        present = {
            f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
            for e in self.draftOrders.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        }
        return [
            FieldError(field=f"context.selections.{i}", message="not a resource in draftOrders")
            for i, ref in enumerate(self.selections)
            if ref not in present
        ]


#: The hooks this service understands, with the context model each one requires.
HOOK_CONTEXTS: dict[str, type[_Context]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
    "encounter-start": EncounterContext,
    "encounter-discharge": EncounterContext,
}


class HookRequest(BaseModel):
    """The request envelope (CDS Hooks 2.0 §HTTP Request)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    hook: NonEmpty
    hookInstance: uuid.UUID
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, dict[str, Any] | None] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("fhirServer must be an absolute http(s) URL")
        return value.rstrip("/")


class FieldError(BaseModel):
    field: str
    message: str


class RequestInvalid(ValueError):
    """The request body breaks the specification; ``errors`` name each field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors[0].message if errors else "invalid request")
        self.errors = errors

    @property
    def field(self) -> str:
        return self.errors[0].field if self.errors else ""


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    errors = []
    for err in exc.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "model_attributes_type":
            message = "must be a JSON object"
        errors.append(FieldError(field=path or "body", message=message))
    return errors


def unstorable_text_errors(value: Any) -> list[FieldError]:
    """The first NUL or unpaired surrogate in ``value``: no audit database can store them."""
    path = find_unstorable_text(value)
    if path is None:
        return []
    message = "must not contain NUL or unpaired surrogate characters"
    return [FieldError(field=printable_path(path) or "body", message=message)]


def parse_hook_request(body: Any, expected_hook: str) -> tuple[HookRequest, _Context]:
    """Validate the envelope and the hook's context; raise :class:`RequestInvalid`."""
    if not isinstance(body, dict):
        raise RequestInvalid([FieldError(field="body", message="must be a JSON object")])
    # Prefetched resources are FHIR: their parsing refuses such text per resource (so one
    # bad entry is skipped, not the request); the envelope and its prefetch keys are here.
    prefetch = body.get("prefetch")
    keys = dict.fromkeys(prefetch) if isinstance(prefetch, dict) else prefetch
    if errors := unstorable_text_errors(body | {"prefetch": keys}):
        raise RequestInvalid(errors)
    try:
        request = HookRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid(field_errors(exc)) from None
    if request.fhirAuthorization is not None and request.fhirServer is None:
        raise RequestInvalid(
            [FieldError(field="fhirServer", message="required when fhirAuthorization is present")]
        )
    if request.hook != expected_hook:
        raise RequestInvalid(
            [FieldError(field="hook", message=f"this service answers the {expected_hook} hook")]
        )
    context_model = HOOK_CONTEXTS[expected_hook]
    try:
        context = context_model.model_validate(request.context)
    except ValidationError as exc:
        raise RequestInvalid(field_errors(exc, prefix="context")) from None
    if errors := context.cross_field_errors():
        raise RequestInvalid(errors)
    return request, context
