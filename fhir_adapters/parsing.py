"""Parse FHIR R4 JSON with ``fhir.resources.R4B``.

``fhir.resources`` 8.x models R5 at its top level; EHRs and Synthea send R4, whose
resources the R4B models accept (R4B changed no resource used here in a breaking way),
so every parse in the project goes through this module and that package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError


class ResourceInvalid(ValueError):
    """The JSON is not a valid FHIR R4 resource of the expected type."""


def _summarise(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "resource"
    return f"{where}: {first['msg']}"


def _unstorable(text: str) -> bool:
    """NUL (PostgreSQL text and jsonb refuse it) or an unpaired surrogate (not UTF-8)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_unstorable_text(value: Any) -> tuple[str | int, ...] | None:
    """Path of the first member name or string in a JSON value that no database can store.

    JSON text may carry both as escapes (``\\u0000``, ``\\ud800``); FHIR strings may hold
    neither. Iterative, so any depth ``json.loads`` accepts is walked.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and _unstorable(key):
                    return (*path, key)
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))
    return None


def printable_path(path: tuple[str | int, ...]) -> str:
    """A dotted path safe to log and store: unprintable characters are escaped."""
    parts = (
        str(p) if str(p).isprintable() else str(p).encode("unicode_escape").decode() for p in path
    )
    return ".".join(parts)


def parse_resource(data: Any, expected_type: str | None = None) -> Resource:
    if not isinstance(data, dict):
        raise ResourceInvalid("not a JSON object")
    bad = find_unstorable_text(data)
    if bad is not None:
        where = printable_path(bad) or "resource"
        raise ResourceInvalid(f"{where}: NUL or unpaired surrogate in a FHIR string")
    resource_type = data.get("resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise ResourceInvalid(f"expected a {expected_type}, got {resource_type!r}")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (KeyError, ValueError):
        raise ResourceInvalid(f"unknown resourceType {resource_type!r}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ResourceInvalid(_summarise(exc)) from None
    except RecursionError:  # fhir.resources validates nested elements recursively
        raise ResourceInvalid("resource is nested too deeply") from None


@dataclass
class ParsedEntries:
    resources: list[Resource] = field(default_factory=list)
    #: One line per skipped entry: its index and why (no resource content).
    warnings: list[str] = field(default_factory=list)


class ParseCache:
    """Parsed resources by the identity of their JSON object, for callers that parse the
    very same (never modified) dicts again and again: training rebuilds a patient's context
    for each index date from one record. The cache holds each dict, so an id is never
    reused while it is in the cache; a failed parse is not cached."""

    def __init__(self) -> None:
        self._parsed: dict[int, tuple[Any, Resource]] = {}

    def parse(self, data: Any, expected_type: str | None) -> Resource:
        found = self._parsed.get(id(data))
        if found is not None and found[0] is data:
            return found[1]
        resource = parse_resource(data, expected_type)
        self._parsed[id(data)] = (data, resource)
        return resource


def parse_searchset(
    bundle: Any, resource_type: str, cache: ParseCache | None = None
) -> ParsedEntries:
    """Parse a search Bundle entry by entry: one bad resource is skipped, not fatal."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ResourceInvalid("expected a Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise ResourceInvalid("Bundle.entry must be an array")
    parsed = ParsedEntries()
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
            continue  # search warnings travel as OperationOutcome entries
        try:
            parsed.resources.append(
                cache.parse(resource, resource_type)
                if cache is not None
                else parse_resource(resource, resource_type)
            )
        except ResourceInvalid as exc:
            parsed.warnings.append(f"entry[{i}]: {exc}")
    return parsed


def fhir_datetime(value: datetime | date | str | None) -> datetime | None:
    """FHIR date/dateTime/instant as an aware UTC datetime; partial dates ("2020", "2020-03",
    which fhir.resources keeps as text) start their period; no timezone is taken as UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        year, _, month = value.partition("-")
        try:
            return datetime(int(year), int(month or 1), 1, tzinfo=UTC)
        except ValueError:
            return None
    return None
