"""CDS Hooks 2.0 feedback request models (``POST {base}/cds-services/{id}/feedback``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from cds.cards import Coding
from cds.hook_request import FieldError, RequestInvalid, field_errors, unstorable_text_errors


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    id: uuid.UUID


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    reason: Coding | None = None
    userComment: Annotated[str, Field(max_length=4000)] | None = None


#: :meth:`FeedbackEntry.rule_errors` as JSON Schema, for the OpenAPI description.
FEEDBACK_RULES_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "properties": {
                "outcome": {"const": "accepted"},
                "acceptedSuggestions": {"type": "array", "minItems": 1},
                "overrideReason": {"type": "null"},
            },
            "required": ["acceptedSuggestions"],
        },
        {
            "properties": {
                "outcome": {"const": "overridden"},
                "acceptedSuggestions": {"anyOf": [{"type": "null"}, {"maxItems": 0}]},
                "overrideReason": {
                    "anyOf": [
                        {"type": "null"},
                        {"required": ["reason"], "properties": {"reason": {"type": "object"}}},
                        {
                            "required": ["userComment"],
                            "properties": {"userComment": {"type": "string", "minLength": 1}},
                        },
                    ]
                },
            },
        },
    ]
}


class FeedbackEntry(BaseModel):
    model_config = ConfigDict(
        extra="allow", hide_input_in_errors=True, json_schema_extra=FEEDBACK_RULES_SCHEMA
    )

    card: uuid.UUID
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: AwareDatetime

    @field_validator("outcomeTimestamp")
    @classmethod
    def _in_utc_range(cls, value: datetime) -> datetime:
        # 9999-12-31T23:00-05:00 is valid ISO 8601 but past datetime.max in UTC, where the
        # audit log stores it: refuse it here (400), not when the row is written (503).
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("outside the range of UTC timestamps") from None
        return value

    def rule_errors(self, index: int) -> list[FieldError]:
        """The IG's feedback invariants (cds-fb-1…3), with the field they concern."""
        at = f"feedback.{index}"
        errors = []
        if self.outcome == "accepted":
            if not self.acceptedSuggestions:
                errors.append(FieldError(
                    field=f"{at}.acceptedSuggestions",
                    message="required when outcome is accepted (cds-fb-2)",
                ))  # fmt: skip
            if self.overrideReason is not None:
                errors.append(FieldError(
                    field=f"{at}.overrideReason", message="only allowed when outcome is overridden"
                ))  # fmt: skip
        else:
            if self.acceptedSuggestions:
                errors.append(FieldError(
                    field=f"{at}.acceptedSuggestions",
                    message="only allowed when outcome is accepted",
                ))  # fmt: skip
            reason = self.overrideReason
            if reason is not None and reason.reason is None and not reason.userComment:
                errors.append(FieldError(
                    field=f"{at}.overrideReason",
                    message="needs reason, userComment or both (cds-fb-3)",
                ))  # fmt: skip
        return errors


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    feedback: Annotated[list[FeedbackEntry], Field(min_length=1, max_length=1000)]


def parse_feedback(body: Any) -> FeedbackRequest:
    if not isinstance(body, dict):
        raise RequestInvalid([FieldError(field="body", message="must be a JSON object")])
    if errors := unstorable_text_errors(body):
        raise RequestInvalid(errors)
    try:
        request = FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid(field_errors(exc)) from None
    errors = [err for i, entry in enumerate(request.feedback) for err in entry.rule_errors(i)]
    if errors:
        raise RequestInvalid(errors)
    return request
