"""FHIR searches and reads over the audit tables (keyset pages on seq; see cds.audit.read).

An AuditEvent search runs one query per source table (calls, feedback, and, for a
principal who may see it, the access log) for at most ``_count + 1`` seqs each, merges
them by seq and loads only the rows of the page. Each parameter is a condition per table,
or "this table cannot match", which leaves the table out.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, select, true
from sqlalchemy.orm import Session

from cds.access import Principal
from cds.audit import read
from cds.audit.read import any_of, keyset, ordered
from cds.audit.tables import Access, Card, Feedback, Invocation
from cds.fhir_api import codes
from cds.fhir_api.audit_events import (
    LOGIN_ACTIONS,
    RESULT_RESOURCE,
    access_event,
    feedback_event,
    invocation_event,
)
from cds.fhir_api.guidance import guidance_response
from cds.fhir_api.outcome import FhirError
from cds.fhir_api.result_resources import result_resource
from cds.fhir_api.search_params import DateRange, Reference, Search, Token

KIND_OF = {resource_type: kind for kind, resource_type in RESULT_RESOURCE.items()}
_ID = re.compile(r"^(inv|fb|acc)-(\d{1,18})$")
_CARD_ID = re.compile(r"^card-([0-9a-fA-F-]{36})$")
Condition = ColumnElement[bool] | None  # None: the table cannot match


@dataclass
class Page:
    resources: list[dict[str, Any]]
    #: Cursor of the next page (the last seq served), or None on the last page.
    next_cursor: int | None


def _date_condition(column: Any, ranges: Sequence[DateRange]) -> ColumnElement[bool]:
    parts = []
    for r in ranges:
        inside = and_(column >= r.low, column < r.high)
        parts.append({
            "eq": inside, "ne": not_(inside), "gt": column >= r.high, "sa": column >= r.high,
            "lt": column < r.low, "eb": column < r.low, "ge": column >= r.low,
            "le": column < r.high,
        }[r.prefix])  # fmt: skip
    return any_of(parts)


def _status_condition(column: Any, outcome: str) -> Condition:
    """AuditEvent.outcome from the HTTP status; None for 12 (never recorded) or unknown."""
    return {
        "0": column < 400,
        "4": and_(column >= 400, column < 500),
        "8": column >= 500,
    }.get(outcome)


def _or(conditions: Sequence[Condition]) -> Condition:
    """OR of the conditions that can match; None if none can."""
    kept = [c for c in conditions if c is not None]
    return any_of(kept) if kept else None


def _seq_from(reference: str, prefix: str) -> int | None:
    match = _ID.match(reference)
    return int(match.group(2)) if match and match.group(1) == prefix else None


# --------------------------------------------------------------------------- AuditEvent
class _Source:
    """One source table of AuditEvents: its seq and date columns, a condition per parameter."""

    def __init__(self, table: type, seq: Any, date: Any) -> None:
        # Instance attributes: ORM columns as class attributes of a non-mapped class would
        # act as descriptors on the instance.
        self.table, self.seq, self.date = table, seq, date


class _Calls(_Source):
    def __init__(self, dialect: str) -> None:
        super().__init__(Invocation, Invocation.seq, Invocation.received_at)
        self.dialect = dialect

    def patient(self, ids: Sequence[str]) -> Condition:
        return Invocation.patient_id.in_(ids)

    def agent(self, ref: Reference) -> Condition:
        if ref.resource_type:
            return Invocation.user_id == f"{ref.resource_type}/{ref.id}"
        return Invocation.user_id.endswith(f"/{ref.id}", autoescape=True)  # any type

    def agent_identifier(self, token: Token) -> Condition:
        options = []
        if token.matches(codes.URI):
            options.append(Invocation.client_iss == token.code)
        if token.system in (None, ""):  # a userId that is not a reference: no system
            options.append(Invocation.user_id == token.code)
        return _or(options)

    def entity(self, ref: Reference) -> Condition:
        if ref.resource_type == "Patient":
            return Invocation.patient_id == ref.id
        if ref.resource_type == "GuidanceResponse" and (seq := _seq_from(ref.id, "inv")):
            return Invocation.seq == seq
        match = _CARD_ID.match(ref.id)
        if ref.resource_type in KIND_OF and match:
            return Invocation.seq.in_(select(Card.invocation_seq).where(Card.uuid == match[1]))
        return None

    def entity_identifier(self, token: Token) -> Condition:
        options = []
        if token.matches(codes.URI) and token.code.startswith("urn:uuid:"):
            options.append(Invocation.hook_instance == token.code.removeprefix("urn:uuid:"))
        if token.matches(codes.CARD):
            options.append(
                Invocation.seq.in_(select(Card.invocation_seq).where(Card.uuid == token.code))
            )
        if token.matches(codes.MODEL):
            options.append(read.model_used(self.dialect, token.code))
        return _or(options)

    def outcome(self, code: str) -> Condition:
        return _status_condition(Invocation.status_code, code)

    def subtype(self, token: Token) -> Condition:
        options: list[ColumnElement[bool]] = []
        if token.matches(codes.RESTFUL_INTERACTION) and token.code == "operation":
            options.append(true())
        if token.matches(codes.EVENT) and token.code == codes.CDS_CALL:
            options.append(true())
        if token.matches(codes.SERVICE):
            options.append(Invocation.service_id == token.code)
        if token.matches(codes.CDS_HOOKS):
            options.append(Invocation.hook == token.code)
        return _or(options)


class _Feedback(_Source):
    def __init__(self) -> None:
        super().__init__(Feedback, Feedback.seq, Feedback.received_at)

    def patient(self, ids: Sequence[str]) -> Condition:
        return Feedback.card_uuid.in_(read.cards_of_patient(ids))

    def agent(self, ref: Reference) -> Condition:
        return None  # feedback carries the EHR client only (an identifier)

    def agent_identifier(self, token: Token) -> Condition:
        return Feedback.client_iss == token.code if token.matches(codes.URI) else None

    def entity(self, ref: Reference) -> Condition:
        if ref.resource_type == "Patient":
            return self.patient([ref.id])
        if ref.resource_type == "GuidanceResponse" and (seq := _seq_from(ref.id, "inv")):
            return Feedback.card_uuid.in_(select(Card.uuid).where(Card.invocation_seq == seq))
        match = _CARD_ID.match(ref.id)
        if ref.resource_type in KIND_OF and match:
            return Feedback.card_uuid == match[1]
        return None

    def entity_identifier(self, token: Token) -> Condition:
        options = []
        if token.matches(codes.URI) and token.code.startswith("urn:uuid:"):
            hook_instance = token.code.removeprefix("urn:uuid:")
            options.append(
                Feedback.card_uuid.in_(
                    select(Card.uuid)
                    .join(Invocation, Card.invocation_seq == Invocation.seq)
                    .where(Invocation.hook_instance == hook_instance)
                )
            )
        if token.matches(codes.CARD):
            options.append(Feedback.card_uuid == token.code)
        return _or(options)

    def outcome(self, code: str) -> Condition:
        return true() if code == "0" else None

    def subtype(self, token: Token) -> Condition:
        options: list[ColumnElement[bool]] = []
        if token.matches(codes.RESTFUL_INTERACTION) and token.code == "create":
            options.append(true())
        if token.matches(codes.EVENT) and token.code == codes.CDS_FEEDBACK:
            options.append(true())
        if token.matches(codes.SERVICE):
            options.append(Feedback.service_id == token.code)
        return _or(options)


class _Reads(_Source):
    def __init__(self) -> None:
        super().__init__(Access, Access.seq, Access.at)

    def patient(self, ids: Sequence[str]) -> Condition:
        return Access.patient_id.in_(ids)

    def agent(self, ref: Reference) -> Condition:
        return None  # readers are identified by identifier (a reviewer, an API client)

    def agent_identifier(self, token: Token) -> Condition:
        if token.system == "":
            return None
        condition = Access.principal_id == token.code
        return (
            condition
            if token.system is None
            else and_(condition, Access.principal_system == token.system)
        )

    def entity(self, ref: Reference) -> Condition:
        if ref.resource_type == "Patient":
            return Access.patient_id == ref.id
        if ref.resource_type:
            return Access.target == f"{ref.resource_type}/{ref.id}"
        return None

    def entity_identifier(self, token: Token) -> Condition:
        return None

    def outcome(self, code: str) -> Condition:
        return _status_condition(Access.status_code, code)

    def subtype(self, token: Token) -> Condition:
        logins = tuple(LOGIN_ACTIONS)
        options: list[ColumnElement[bool]] = []
        if token.matches(codes.RESTFUL_INTERACTION) and token.code in ("read", "search-type"):
            action = "read" if token.code == "read" else "search"
            options.append(and_(Access.channel == "fhir-api", Access.action == action))
        if token.matches(codes.EVENT):
            if token.code == codes.AUDIT_READ:
                options.append(Access.action.not_in(logins))
            elif token.code.startswith("review-"):
                action = token.code.removeprefix("review-")
                options.append(and_(Access.channel == "review", Access.action == action))
        if token.matches(codes.DCM):
            if token.code == "110122":
                options.append(Access.action.in_(("login", "login-failed")))
            elif token.code == "110123":
                options.append(Access.action == "logout")
            elif token.code == "110114":
                options.append(Access.action.in_(logins))
        return _or(options)


def _conditions(
    source: _Calls | _Feedback | _Reads, search: Search
) -> list[ColumnElement[bool]] | None:
    """The WHERE clause of ``search`` on one source table; None if the table cannot match."""
    where: list[ColumnElement[bool]] = []

    def add(group: Sequence[Any], build: Callable[[Any], Condition]) -> bool:
        condition = _or([c for value in group if (c := build(value)) is not None])
        if condition is None:
            return False
        where.append(condition)
        return True

    for ranges in search.dates:
        where.append(_date_condition(source.date, ranges))
    for group in search.references.get("patient", []):
        if not add([[r.id for r in group]], source.patient):
            return None
    for name, builder in (("agent", source.agent), ("entity", source.entity)):
        for group in search.references.get(name, []):
            if not add(group, builder):
                return None
    tokens = {
        "agent:identifier": source.agent_identifier,
        "entity:identifier": source.entity_identifier,
        "subtype": source.subtype,
    }
    for name, builder in tokens.items():
        for group in search.tokens.get(name, []):
            if not add(group, builder):
                return None
    for group in search.tokens.get("outcome", []):
        if not add([t.code for t in group], source.outcome):
            return None
    return where


def search_audit_events(
    session: Session, search: Search, principal: Principal, base_url: str
) -> Page:
    dialect = session.get_bind().dialect.name
    sources: list[_Calls | _Feedback | _Reads] = [_Calls(dialect), _Feedback()]
    if principal.may_read_access_log():
        sources.append(_Reads())
    streams = []
    for source in sources:
        where = _conditions(source, search)
        if where is None:
            continue
        query = (
            select(source.seq)
            .where(*where, *keyset(source.seq, search.cursor, search.descending))
            .order_by(ordered(source.seq, search.descending))
            .limit(search.count + 1)
        )
        streams.append([(seq, source.table) for seq in session.scalars(query)])
    merged = list(heapq.merge(*streams, key=lambda item: item[0], reverse=search.descending))[
        : search.count + 1
    ]
    page, more = merged[: search.count], len(merged) > search.count
    by_table: dict[type, list[int]] = {}
    for seq, table in page:
        by_table.setdefault(table, []).append(seq)
    calls = read.load_calls(session, by_table.get(Invocation, []))
    feedback = read.load_feedback(session, by_table.get(Feedback, []))
    access = read.load_access(session, by_table.get(Access, []))
    resources = []
    for seq, table in page:
        if table is Invocation:
            call = calls[seq]
            resources.append(invocation_event(call.invocation, call.cards, base_url))
        elif table is Feedback:
            resources.append(feedback_event(*feedback[seq], base_url))
        else:
            resources.append(access_event(access[seq], base_url))
    return Page(resources, page[-1][0] if more and page else None)


# --------------------------------------------------------------------------- results
def _call_conditions(search: Search) -> list[ColumnElement[bool]]:
    where = [_date_condition(Invocation.received_at, ranges) for ranges in search.dates]
    where += [Invocation.patient_id.in_(group) for group in search.patient_ids()]
    return where


def search_guidance(session: Session, search: Search, base_url: str) -> Page:
    query = (
        select(Invocation.seq)
        .where(*_call_conditions(search), *keyset(Invocation.seq, search.cursor, search.descending))
        .order_by(ordered(Invocation.seq, search.descending))
        .limit(search.count + 1)
    )
    seqs = list(session.scalars(query))
    page, more = seqs[: search.count], len(seqs) > search.count
    calls = read.load_calls(session, page)
    resources = [guidance_response(calls[s].invocation, calls[s].cards, base_url) for s in page]
    return Page(resources, page[-1] if more else None)


def result_kind(card_column: Any, kind: str) -> ColumnElement[bool]:
    return card_column["kind"].as_string() == kind


def search_results(session: Session, search: Search) -> Page:
    kind = KIND_OF[search.resource_type]
    query = (
        select(Card.seq)
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .where(
            result_kind(Card.result, kind),
            *_call_conditions(search),
            *keyset(Card.seq, search.cursor, search.descending),
        )
        .order_by(ordered(Card.seq, search.descending))
        .limit(search.count + 1)
    )
    seqs = list(session.scalars(query))
    page, more = seqs[: search.count], len(seqs) > search.count
    resources = _result_resources(session, page)
    return Page(resources, page[-1] if more else None)


def _result_resources(session: Session, card_seqs: Sequence[int]) -> list[dict[str, Any]]:
    if not card_seqs:
        return []
    rows = session.execute(
        select(Card, Invocation)
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .where(Card.seq.in_(card_seqs))
    ).all()
    by_seq = {card.seq: (card, invocation) for card, invocation in rows}
    feedback = read.feedback_on(session, [card.uuid for card, _ in rows])
    out = []
    for seq in card_seqs:
        card, invocation = by_seq[seq]
        resource = result_resource(card, invocation, feedback.get(card.uuid, []))
        if resource is not None:
            out.append(resource)
    return out


# --------------------------------------------------------------------------- reads
@dataclass
class ReadResult:
    resource: dict[str, Any]
    patient_id: str | None


def _not_found(resource_type: str) -> FhirError:
    return FhirError(404, f"no {resource_type} with this id")


def read_resource(
    session: Session, resource_type: str, resource_id: str, principal: Principal, base_url: str
) -> ReadResult:
    if resource_type in ("AuditEvent", "GuidanceResponse"):
        match = _ID.match(resource_id)
        if match is None or (resource_type == "GuidanceResponse" and match[1] != "inv"):
            raise _not_found(resource_type)
        kind, seq = match[1], int(match[2])
        if kind == "inv":
            call = read.load_calls(session, [seq]).get(seq)
            if call is None:
                raise _not_found(resource_type)
            build = invocation_event if resource_type == "AuditEvent" else guidance_response
            resource = build(call.invocation, call.cards, base_url)
            return ReadResult(resource, call.invocation.patient_id)
        if kind == "fb":
            found = read.load_feedback(session, [seq]).get(seq)
            if found is None:
                raise _not_found(resource_type)
            patient = found[2].patient_id if found[2] is not None else None
            return ReadResult(feedback_event(*found, base_url), patient)
        if not principal.may_read_access_log("read"):
            raise FhirError(403, "reading the access log needs the auditor role or an "
                            "AuditEvent scope")  # fmt: skip
        row = read.load_access(session, [seq]).get(seq)
        if row is None:
            raise _not_found(resource_type)
        return ReadResult(access_event(row, base_url), row.patient_id)
    match = _CARD_ID.match(resource_id)
    if match is None:
        raise _not_found(resource_type)
    found_row = session.execute(
        select(Card, Invocation)
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .where(Card.uuid == match[1], result_kind(Card.result, KIND_OF[resource_type]))
    ).first()
    if found_row is None:
        raise _not_found(resource_type)
    card, invocation = found_row
    feedback = read.feedback_on(session, [card.uuid]).get(card.uuid, [])
    resource = result_resource(card, invocation, feedback)
    if resource is None:
        raise _not_found(resource_type)
    return ReadResult(resource, invocation.patient_id)
