"""The search parameters the FHIR API implements, and strict parsing of a query string.

:data:`PARAMETERS` is the one list: the parser, the queries and the CapabilityStatement
all read it, so ``/fhir/metadata`` lists exactly what is implemented. A parameter the
list does not name (or a modifier it does not allow) is a 400 OperationOutcome, unless
the request says ``Prefer: handling=lenient``: then it is ignored, the Bundle's ``self``
link leaves it out and an OperationOutcome entry (``search.mode = outcome``) names it.

Values follow FHIR search syntax: several occurrences of a parameter are ANDed, commas
inside one occurrence are ORed (``\\,`` escapes a comma); dates take the prefixes ``eq``
(default) ``ne gt lt ge le sa eb`` and are compared against the range their precision
implies (``ge2024-03`` = from 1 March 2024 00:00 UTC); a date or time without a zone is
read as UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from werkzeug.datastructures import MultiDict

from cds.fhir_api import codes
from cds.fhir_api.outcome import FhirError

ParamType = Literal["date", "reference", "token", "number", "string"]
DEFAULT_COUNT = 50
MAX_COUNT = 500
HL7_PARAMETER = "http://hl7.org/fhir/SearchParameter/"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType
    documentation: str
    #: The SearchParameter's canonical URL (HL7's where it is the standard one).
    definition: str | None = None
    modifiers: tuple[str, ...] = ()


def _ours(name: str) -> str:
    return f"{codes.SEARCH_PARAMETER}:{name}"


_PATIENT = "the patient the record is about: `Patient/<id>` or `<id>`"
_DATE_DOC = "prefixes eq, ne, gt, lt, ge, le, sa, eb; precision from a year to fractional seconds"
AUDIT_EVENT = (
    Parameter(
        "date", "date", f"AuditEvent.recorded; {_DATE_DOC}", HL7_PARAMETER + "AuditEvent-date"
    ),
    Parameter("patient", "reference", _PATIENT, HL7_PARAMETER + "AuditEvent-patient"),
    Parameter(
        "agent",
        "reference",
        "agent.who: the clinician (`Practitioner/<id>` from context.userId); with "
        ":identifier an EHR client (`urn:ietf:rfc:3986|<iss>`), an API client (`<iss>|<sub>`) "
        "or a reviewer (`urn:wardround:reviewer|<user name>`)",
        HL7_PARAMETER + "AuditEvent-agent",
        ("identifier",),
    ),
    Parameter(
        "entity",
        "reference",
        "entity.what: `Patient/<id>`, `GuidanceResponse/inv-<seq>`, `DetectedIssue/card-<uuid>` "
        "(RiskAssessment, Observation); with :identifier a hookInstance "
        "(`urn:ietf:rfc:3986|urn:uuid:<uuid>`), a card (`urn:wardround:card|<uuid>`) or a "
        "model (`urn:wardround:model|<id>`)",
        HL7_PARAMETER + "AuditEvent-entity",
        ("identifier",),
    ),
    Parameter(
        "outcome",
        "token",
        "0 success, 4 minor failure (4xx), 8 serious failure (5xx)",
        HL7_PARAMETER + "AuditEvent-outcome",
    ),
    Parameter(
        "subtype",
        "token",
        "a hook (`order-sign`), a service id, `cds-call`, `cds-feedback`, `audit-read`, "
        "`review-<action>`, a restful-interaction (`operation`, `create`, `read`, "
        "`search-type`) or DICOM 110122 / 110123 (log-in, log-out)",
        HL7_PARAMETER + "AuditEvent-subtype",
    ),
)
_RESULT_DATE = "the date of the CDS call that produced the result; " + _DATE_DOC
PARAMETERS: dict[str, tuple[Parameter, ...]] = {
    "AuditEvent": AUDIT_EVENT,
    "GuidanceResponse": (
        Parameter("patient", "reference", _PATIENT, HL7_PARAMETER + "GuidanceResponse-patient"),
        Parameter(
            "date",
            "date",
            "GuidanceResponse.occurrenceDateTime; " + _DATE_DOC,
            _ours("GuidanceResponse-date"),
        ),
    ),
    "DetectedIssue": (
        Parameter("patient", "reference", _PATIENT, HL7_PARAMETER + "clinical-patient"),
        Parameter(
            "identified",
            "date",
            "DetectedIssue.identified[x]; " + _DATE_DOC,
            HL7_PARAMETER + "DetectedIssue-identified",
        ),
        Parameter(
            "date", "date", "the same as identified; " + _DATE_DOC, _ours("DetectedIssue-date")
        ),
    ),
    "RiskAssessment": (
        Parameter("patient", "reference", _PATIENT, HL7_PARAMETER + "clinical-patient"),
        Parameter(
            "date",
            "date",
            "RiskAssessment.occurrenceDateTime; " + _DATE_DOC,
            HL7_PARAMETER + "clinical-date",
        ),
    ),
    "Observation": (
        Parameter("patient", "reference", _PATIENT, HL7_PARAMETER + "clinical-patient"),
        Parameter(
            "date",
            "date",
            "Observation.issued (when the service made the finding); " + _RESULT_DATE,
            _ours("Observation-date"),
        ),
    ),
}
#: Result parameters every search type takes.
CONTROL = (
    Parameter(
        "_count", "number", f"page size, 1 to {MAX_COUNT} (default {DEFAULT_COUNT}; more is capped)"
    ),
    Parameter("_sort", "string", "`-date` (newest first, the default) or `date`"),
    Parameter("_cursor", "string", "opaque page cursor, from a Bundle's `next` link"),
    Parameter("_format", "string", "`json`, `application/json` or `application/fhir+json`"),
)
JSON_FORMATS = ("json", "application/json", "application/fhir+json")


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class DateRange:
    """One date value: ``column`` must fall in [low, high) for ``eq``."""

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class Token:
    #: None: any system; "": no system.
    system: str | None
    code: str

    def matches(self, system: str) -> bool:
        return self.system is None or self.system == system


@dataclass(frozen=True)
class Reference:
    resource_type: str | None
    id: str


@dataclass
class Search:
    """A parsed search: per parameter, a list (AND) of lists (OR) of values."""

    resource_type: str
    dates: list[list[DateRange]] = field(default_factory=list)
    references: dict[str, list[list[Reference]]] = field(default_factory=dict)
    tokens: dict[str, list[list[Token]]] = field(default_factory=dict)
    count: int = DEFAULT_COUNT
    descending: bool = True
    cursor: int | None = None
    #: Parameters ignored under ``Prefer: handling=lenient``.
    ignored: list[str] = field(default_factory=list)
    #: The parameters applied, in order, for the Bundle's self and next links.
    applied: list[tuple[str, str]] = field(default_factory=list)

    def patient_ids(self) -> list[list[str]]:
        """``patient`` values (and ``entity=Patient/…``) as ids."""
        groups = [[r.id for r in group] for group in self.references.get("patient", [])]
        for group in self.references.get("entity", []):
            if all(r.resource_type == "Patient" for r in group):
                groups.append([r.id for r in group])
        return groups

    def single_patient(self) -> str | None:
        """The one patient the search is restricted to, if it names exactly one."""
        ids = {i for group in self.patient_ids() if len(group) == 1 for i in group}
        return next(iter(ids)) if len(ids) == 1 else None

    def filter_json(self) -> dict[str, list[str]]:
        """The filter as recorded in the access log: parameter → values as sent."""
        out: dict[str, list[str]] = {}
        for name, value in self.applied:
            if name != "_format":
                out.setdefault(name, []).append(value)
        return out


# --------------------------------------------------------------------------- parsing
def split_values(text: str) -> list[str]:
    """Split on unescaped commas; unescape ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


_DATE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(\.(?P<fraction>\d{1,6}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


def _add_month(value: datetime) -> datetime:
    return (
        value.replace(year=value.year + 1, month=1)
        if value.month == 12
        else value.replace(month=value.month + 1)
    )


def parse_date(name: str, text: str) -> DateRange:
    has_prefix = text[:2].isalpha() and text[2:3].isdigit()
    prefix, body = (text[:2], text[2:]) if has_prefix else ("eq", text)
    if prefix not in DATE_PREFIXES:
        raise FhirError(
            400, f"{name}: prefix {prefix!r} is not supported (use {', '.join(DATE_PREFIXES)})"
        )
    match = _DATE.match(body)
    if match is None:
        raise FhirError(400, f"{name}: not a FHIR date or dateTime")
    parts = match.groupdict()
    try:
        zone: timezone = UTC
        if parts["zone"] and parts["zone"] != "Z":
            sign = 1 if parts["zone"][0] == "+" else -1
            hours, minutes = int(parts["zone"][1:3]), int(parts["zone"][4:6])
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        low = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((parts["fraction"] or "0").ljust(6, "0")),
            tzinfo=zone,
        )
        if parts["fraction"]:
            high = low + timedelta(microseconds=10 ** (6 - len(parts["fraction"])))
        elif parts["second"]:
            high = low + timedelta(seconds=1)
        elif parts["minute"]:
            high = low + timedelta(minutes=1)
        elif parts["day"]:
            high = low + timedelta(days=1)
        elif parts["month"]:
            high = _add_month(low)
        else:
            high = low.replace(year=low.year + 1)
    except (ValueError, OverflowError):
        raise FhirError(400, f"{name}: not a valid date") from None
    return DateRange(prefix, low.astimezone(UTC), high.astimezone(UTC))


def parse_token(text: str) -> Token:
    if "|" in text:
        system, code = text.split("|", 1)
        return Token(system, code)
    return Token(None, text)


_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
#: Reference parameters whose target type is fixed.
REFERENCE_TARGETS = {"patient": ("Patient",)}


def parse_reference(name: str, text: str) -> Reference:
    """``Type/id``, ``id`` or a URL ending in ``Type/id``."""
    parts = text.split("/")
    if len(parts) == 1:
        return Reference(None, text)
    resource_type, resource_id = parts[-2], parts[-1]
    if not _TYPE.match(resource_type) or not resource_id:
        raise FhirError(400, f"{name}: not a reference (Type/id or id)")
    allowed = REFERENCE_TARGETS.get(name)
    if allowed and resource_type not in allowed:
        raise FhirError(400, f"{name}: must refer to {' or '.join(allowed)}")
    return Reference(resource_type, resource_id)


#: What a FHIR search parameter name (with a modifier) looks like; anything else a client
#: sends as a name is not echoed back (it might be data, not a name).
_PARAMETER_NAME = re.compile(r"^_?[a-z][a-z0-9-]{0,40}(:[a-z-]{1,20})?$")


def shown_name(key: str) -> str:
    return repr(key) if _PARAMETER_NAME.match(key) else "(not a parameter name)"


def wants_lenient(prefer: str | None) -> bool:
    for part in (prefer or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "handling" and value.strip().strip('"').lower() == "lenient":
            return True
    return False


def parse_search(resource_type: str, args: MultiDict[str, str], lenient: bool) -> Search:
    """``args`` (the query string) as a :class:`Search`; FhirError(400) if it is not one."""
    known = {p.name: p for p in PARAMETERS[resource_type] + CONTROL}
    search = Search(resource_type)
    seen_control: set[str] = set()
    for key, raw in args.items(multi=True):
        name, _, modifier = key.partition(":")
        parameter = known.get(name)
        if parameter is None or (modifier and modifier not in parameter.modifiers):
            if lenient:
                search.ignored.append(key)
                continue
            what = "modifier" if parameter is not None else "parameter"
            supported = ", ".join(sorted(known))
            raise FhirError(
                400,
                f"unknown search {what} {shown_name(key)} for {resource_type} (supported: "
                f"{supported})",
            )
        if parameter.type in ("number", "string"):
            if name in seen_control:
                raise FhirError(400, f"{name} may be given once")
            seen_control.add(name)
            _control(search, name, raw)
            if name != "_cursor":
                search.applied.append((key, raw))
            continue
        values = [v for v in split_values(raw) if v != ""]
        if not values:
            raise FhirError(400, f"{key}: empty value")
        if parameter.type == "date":
            search.dates.append([parse_date(key, v) for v in values])
        elif parameter.type == "reference" and not modifier:
            search.references.setdefault(name, []).append([parse_reference(key, v) for v in values])
        else:  # token, or reference:identifier (a token)
            search.tokens.setdefault(key, []).append([parse_token(v) for v in values])
        search.applied.append((key, raw))
    return search


def _control(search: Search, name: str, raw: str) -> None:
    if name == "_count":
        if not raw.isdigit() or int(raw) < 1:
            raise FhirError(400, "_count must be a whole number of at least 1")
        search.count = min(int(raw), MAX_COUNT)
    elif name == "_sort":
        allowed = {"date": False, "-date": True}
        if search.resource_type == "DetectedIssue":
            allowed |= {"identified": False, "-identified": True}
        if raw not in allowed:
            raise FhirError(400, f"_sort must be one of {', '.join(allowed)}")
        search.descending = allowed[raw]
    elif name == "_cursor":
        if not raw.isdigit() or len(raw) > 18:
            raise FhirError(400, "_cursor is not a cursor this server issued")
        search.cursor = int(raw)
    elif name == "_format" and raw not in JSON_FORMATS:
        raise FhirError(406, "only JSON is served (_format=json)")
