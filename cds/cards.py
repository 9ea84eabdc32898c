"""CDS Hooks 2.0 response models: cards, suggestions, actions, links.

Every constraint of the specification and of the HL7 CDS Hooks IG logical model
(``CDSHooksResponse`` invariants cds-resp-1…7) is enforced when a card is built, so a
service cannot return a card the EHR would reject. Optional attributes without a value
are omitted from the JSON, never sent as ``null`` or empty.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NonEmpty = Annotated[str, Field(min_length=1)]
UUID_FORMAT: dict[str, Any] = {"format": "uuid"}  # the JSON Schema of the uuid members


def _absolute_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Coding(_Model):
    """A FHIR Coding as CDS Hooks uses it; ``display`` is required (cds-resp-4)."""

    system: NonEmpty
    code: NonEmpty
    display: NonEmpty


class Source(_Model):
    label: NonEmpty
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None

    _urls = field_validator("url", "icon")(lambda v: v if v is None else _absolute_url(v))


class Action(_Model):
    type: Literal["create", "update", "delete"]
    description: NonEmpty  # required by cds-resp-5
    resource: dict[str, Any] | None = None
    resourceId: list[NonEmpty] | None = None

    @model_validator(mode="after")
    def _check(self) -> Action:
        if self.type == "delete":
            if not self.resourceId or self.resource is not None:
                raise ValueError("a delete action carries resourceId and no resource (cds-resp-2)")
            for ref in self.resourceId:
                if ref.count("/") != 1 or not all(ref.split("/")):
                    raise ValueError(f"resourceId entries are relative references: {ref!r}")
        else:
            if self.resource is None or self.resourceId is not None:
                raise ValueError(f"a {self.type} action carries a resource and no resourceId")
            validate_fhir_resource(self.resource)
        return self


def validate_fhir_resource(resource: dict[str, Any]) -> None:
    """Raise ValueError unless ``resource`` is a valid FHIR R4 resource."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise ValueError("resource needs a resourceType")
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown FHIR resourceType {resource_type!r}") from exc
    model.model_validate(resource)


class Suggestion(_Model):
    label: NonEmpty
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()), json_schema_extra=UUID_FORMAT)
    isRecommended: bool | None = None
    actions: list[Action] | None = None

    _uuid = field_validator("uuid")(lambda v: str(uuid.UUID(v)))
    _actions = field_validator("actions")(lambda v: v or None)


class Link(_Model):
    label: NonEmpty
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None

    _url = field_validator("url")(lambda v: _absolute_url(v))

    @model_validator(mode="after")
    def _app_context_only_for_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links (cds-resp-3)")
        return self


class Card(_Model):
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()), json_schema_extra=UUID_FORMAT)
    # The specification: "One-sentence, <140-character summary message".
    summary: Annotated[str, Field(min_length=1, max_length=139)]
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None

    _uuid = field_validator("uuid")(lambda v: str(uuid.UUID(v)))
    _lists = field_validator("suggestions", "overrideReasons", "links")(lambda v: v or None)
    _detail = field_validator("detail")(lambda v: v or None)

    @model_validator(mode="after")
    def _check(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        if self.selectionBehavior is not None and not self.suggestions:
            raise ValueError("selectionBehavior is only meaningful with suggestions")
        if self.selectionBehavior == "at-most-one" and self.suggestions:  # noqa: SIM102
            if sum(bool(s.isRecommended) for s in self.suggestions) > 1:
                raise ValueError(
                    "at most one suggestion isRecommended with at-most-one (cds-resp-1)"
                )
        if self.suggestions:
            ids = [s.uuid for s in self.suggestions]
            if len(set(ids)) != len(ids):
                raise ValueError("suggestion uuids must be unique within a card")
        return self


class CdsResponse(_Model):
    cards: list[Card] = Field(default_factory=list)
    systemActions: list[Action] | None = None

    _actions = field_validator("systemActions")(lambda v: v or None)

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["cards"] = [card.to_json() for card in self.cards]  # always present, maybe empty
        return body
