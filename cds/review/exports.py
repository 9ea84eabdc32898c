"""Exports of the review page's current filter, streamed: CSV (one row per card), NDJSON of
AuditEvents (one per line) and a FHIR ``Bundle`` (type collection) of the same AuditEvents.

The AuditEvents are the FHIR API's (``cds.fhir_api.audit_events``): each call, then the
feedback on its cards. A text cell that a spreadsheet would run as a formula (starting
with ``= + - @``, a tab or a carriage return) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from cds.audit.read import CallRecord
from cds.fhir_api.audit_events import feedback_event, invocation_event
from cds.fhir_api.codes import instant

CSV_COLUMNS = (
    "call_seq", "received_at", "service", "hook", "hook_instance", "patient", "user",
    "ehr_client", "status", "error", "latency_ms", "models", "card_uuid", "indicator",
    "summary", "result_kind", "result_code", "feedback_outcome", "feedback_at",
    "accepted_suggestions", "override_reason", "override_display", "override_comment",
)  # fmt: skip
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _models(call: CallRecord) -> str:
    return "; ".join(
        f"{m.get('id')}@{m.get('version')}" + (f"#{m['hash']}" if m.get("hash") else "")
        for m in call.invocation.model_versions or []
    )


def csv_rows(call: CallRecord) -> Iterator[list[str]]:
    inv = call.invocation
    head = [
        inv.seq, instant(inv.received_at), inv.service_id, inv.hook, inv.hook_instance,
        inv.patient_id, inv.user_id, inv.client_iss, inv.status_code, inv.error_code,
        inv.latency_ms, _models(call),
    ]  # fmt: skip
    if not call.cards:
        yield [_cell(v) for v in head] + [""] * (len(CSV_COLUMNS) - len(head))
        return
    for card in call.cards:
        result = card.result or {}
        feedback = call.feedback_on(card)
        last = feedback[-1] if feedback else None
        reason = (last.override_reason or {}) if last else {}
        coded = reason.get("reason") or {}
        row = [
            *head, card.uuid, card.indicator, card.summary, result.get("kind"),
            (result.get("code") or {}).get("code"),
            last.outcome if last else None,
            instant(last.outcome_timestamp) if last else None,
            " ".join(last.accepted_suggestions or []) if last else None,
            coded.get("code"), coded.get("display"), reason.get("userComment"),
        ]  # fmt: skip
        yield [_cell(v) for v in row]


def csv_stream(calls: Iterable[CallRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for call in calls:
        for row in csv_rows(call):
            writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def audit_events(call: CallRecord, base_url: str) -> Iterator[dict[str, Any]]:
    """The call's AuditEvent, then one per feedback entry on its cards (in seq order)."""
    yield invocation_event(call.invocation, call.cards, base_url)
    entries = sorted(
        ((fb, card) for card in call.cards for fb in call.feedback_on(card)),
        key=lambda pair: pair[0].seq,
    )
    for fb, card in entries:
        yield feedback_event(fb, card, call.invocation, base_url)


def _json(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def ndjson_stream(calls: Iterable[CallRecord], base_url: str) -> Iterator[str]:
    for call in calls:
        yield "".join(_json(event) + "\n" for event in audit_events(call, base_url))


def bundle_stream(calls: Iterable[CallRecord], base_url: str) -> Iterator[str]:
    """A Bundle (type collection) written piece by piece: never held whole in memory.
    ``entry`` is left out when there is none (FHIR JSON has no empty arrays)."""
    timestamp = json.dumps(instant(datetime.now(UTC)))
    yield '{"resourceType":"Bundle","type":"collection","timestamp":' + timestamp
    first = True
    for call in calls:
        parts = []
        for event in audit_events(call, base_url):
            entry = {"fullUrl": f"{base_url}/fhir/AuditEvent/{event['id']}", "resource": event}
            parts.append((',"entry":[' if first else ",") + _json(entry))
            first = False
        yield "".join(parts)
    yield "}" if first else "]}"
