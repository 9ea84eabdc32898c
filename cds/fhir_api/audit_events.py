"""Audit rows → FHIR R4 AuditEvent, after the IHE Basic Audit Log Patterns (BALP).

One AuditEvent per row, built on each read from the hash-chained row itself (no second
copy): ``inv-<seq>`` for a CDS service call, ``fb-<seq>`` for a feedback entry,
``acc-<seq>`` for a read of the audit (or a reviewer log-in). As in BALP, the client
that calls is the *source* (DICOM 110153) and Wardround the *destination* (110152); the
human behind a call (``context.userId``) or a read is the requestor.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from cds.audit.tables import Access, Card, Feedback, Invocation
from cds.fhir_api import codes
from cds.fhir_api.codes import coding, concept, instant

#: ``context.userId`` that is a relative reference (CDS Hooks: ``Practitioner/123``).
USER_REFERENCE = re.compile(
    r"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$"
)
RESULT_RESOURCE = {
    "detected-issue": "DetectedIssue",
    "risk-assessment": "RiskAssessment",
    "observation": "Observation",
}
SOURCE_ROLE = concept(codes.DCM, "110153", "Source Role ID")
DESTINATION_ROLE = concept(codes.DCM, "110152", "Destination Role ID")
RECIPIENT = concept(codes.PARTICIPATION_TYPE, "IRCP", "information recipient")
LOGIN_ACTIONS = {
    "login": ("110122", "Login"),
    "login-failed": ("110122", "Login"),
    "logout": ("110123", "Logout"),
}


def card_id(uuid: str) -> str:
    return f"card-{uuid}"


def result_reference(card: Card) -> str | None:
    """``DetectedIssue/card-<uuid>`` (or RiskAssessment, Observation) for a card with a result."""
    kind = (card.result or {}).get("kind")
    resource_type = RESULT_RESOURCE.get(kind) if isinstance(kind, str) else None
    return f"{resource_type}/{card_id(card.uuid)}" if resource_type else None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _source(base_url: str) -> dict[str, Any]:
    source: dict[str, Any] = {
        "observer": {"display": "Wardround CDS service"},
        "type": [coding(codes.SOURCE_TYPE, "4", "Application Server")],
    }
    if base_url:
        source["site"] = base_url
    return source


def _wardround_agent(base_url: str, path: str) -> dict[str, Any]:
    who: dict[str, Any] = {"display": "Wardround CDS service"}
    if base_url:
        who["identifier"] = {"system": codes.URI, "value": base_url + path}
    return {"type": DESTINATION_ROLE, "who": who, "requestor": False}


def _ehr_agent(iss: str | None, sub: str | None, requestor: bool) -> dict[str, Any]:
    if iss is None:
        who: dict[str, Any] = {"display": "unauthenticated client (WARDROUND_AUTH=off)"}
    else:
        who = {"identifier": {"system": codes.URI, "value": iss}, "display": "EHR client"}
    agent: dict[str, Any] = {"type": SOURCE_ROLE, "who": who, "requestor": requestor}
    if sub:
        agent["altId"] = sub
    return agent


def _user_agent(user_id: str) -> dict[str, Any]:
    if USER_REFERENCE.match(user_id):
        who: dict[str, Any] = {"reference": user_id}
    else:
        who = {"identifier": {"value": user_id}, "display": user_id}
    return {"type": RECIPIENT, "who": who, "requestor": True}


def _patient_entity(patient_id: str) -> dict[str, Any]:
    return {
        "what": {"reference": f"Patient/{patient_id}"},
        "type": coding(codes.ENTITY_TYPE, "1", "Person"),
        "role": coding(codes.OBJECT_ROLE, "1", "Patient"),
    }


def _detail(kind: str, value: str) -> dict[str, str]:
    return {"type": kind, "valueString": value}


def card_entity(card: Card) -> dict[str, Any]:
    """A card as the clinician got it: its uuid, its result's resource, the exact JSON."""
    what: dict[str, Any] = {"identifier": {"system": codes.CARD, "value": card.uuid}}
    if reference := result_reference(card):
        what["reference"] = reference
    details = [_detail("indicator", card.indicator)]
    details.append({"type": "card-json", "valueBase64Binary": _b64(canonical_json(card.card_json))})
    return {
        "what": what,
        "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
        "role": coding(codes.OBJECT_ROLE, "3", "Report"),
        "name": card.summary,
        "detail": details,
    }


def _model_entity(model: dict[str, Any]) -> dict[str, Any]:
    details = [_detail("version", str(model.get("version", "")))]
    if model.get("hash"):
        details.append(_detail("artifact-sha256", str(model["hash"])))
    return {
        "what": {"identifier": {"system": codes.MODEL, "value": str(model.get("id", ""))}},
        "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
        "description": "model or rule set that produced the cards",
        "detail": details,
    }


def _prefetch_summary(invocation: Invocation) -> str:
    """Per prefetch key, where it came from: ``patient=supplied medications=fetched`` …"""
    parts = []
    for entry in invocation.prefetch_fetched or []:
        if isinstance(entry, dict) and "key" in entry:
            parts.append(f"{entry['key']}={entry.get('source', '?')}")
    return " ".join(parts)


def invocation_event(
    invocation: Invocation, cards: Sequence[Card], base_url: str
) -> dict[str, Any]:
    """A CDS service call: the EHR (source) asked Wardround (destination) for cards."""
    seq = invocation.seq
    subtype = [
        coding(codes.RESTFUL_INTERACTION, "operation", "operation"),
        coding(codes.EVENT, codes.CDS_CALL, "CDS Hooks service call"),
        coding(codes.SERVICE, invocation.service_id),
    ]
    if invocation.hook:
        subtype.append(coding(codes.CDS_HOOKS, invocation.hook))
    agents = [_ehr_agent(invocation.client_iss, invocation.client_sub, not invocation.user_id)]
    if invocation.user_id:
        agents.append(_user_agent(invocation.user_id))
    agents.append(_wardround_agent(base_url, f"/cds-services/{invocation.service_id}"))

    entities: list[dict[str, Any]] = []
    if invocation.patient_id:
        entities.append(_patient_entity(invocation.patient_id))
    request: dict[str, Any] = {
        "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
        "role": coding(codes.OBJECT_ROLE, "24", "Query"),
        "description": f"CDS Hooks request ({invocation.hook or 'unparsed'})",
        "detail": [_detail("request-sha256", invocation.request_digest)],
    }
    if invocation.hook_instance:
        request["what"] = {
            "identifier": {"system": codes.URI, "value": f"urn:uuid:{invocation.hook_instance}"}
        }
    if invocation.prefetch_used:
        request["detail"].append(_detail("prefetch-used", " ".join(invocation.prefetch_used)))
    if prefetch := _prefetch_summary(invocation):
        request["detail"].append(_detail("prefetch-sources", prefetch))
    if invocation.encounter_id:
        request["detail"].append(_detail("encounter", invocation.encounter_id))
    entities.append(request)
    if invocation.status_code < 400:
        entities.append({
            "what": {"reference": f"GuidanceResponse/inv-{seq}"},
            "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
            "role": coding(codes.OBJECT_ROLE, "3", "Report"),
            "description": f"the service's answer: {len(cards)} card(s)",
        })  # fmt: skip
    entities.extend(card_entity(card) for card in cards)
    entities.extend(_model_entity(model) for model in invocation.model_versions or [])

    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"inv-{seq}",
        "type": coding(codes.AUDIT_EVENT_TYPE, "rest", "RESTful Operation"),
        "subtype": subtype,
        "action": "E",
        "period": {
            "start": instant(invocation.received_at),
            "end": instant(invocation.received_at + timedelta(milliseconds=invocation.latency_ms)),
        },
        "recorded": instant(invocation.received_at),
        "outcome": codes.outcome_code(invocation.status_code),
        "agent": agents,
        "source": _source(base_url),
        "entity": entities,
    }
    if invocation.error_code:
        detail = f": {invocation.error_detail}" if invocation.error_detail else ""
        event["outcomeDesc"] = f"HTTP {invocation.status_code} {invocation.error_code}{detail}"
    return event


def feedback_event(
    feedback: Feedback, card: Card | None, invocation: Invocation | None, base_url: str
) -> dict[str, Any]:
    """A feedback entry: what the clinician did with a card (accepted, overridden, why)."""
    entities: list[dict[str, Any]] = []
    if invocation is not None and invocation.patient_id:
        entities.append(_patient_entity(invocation.patient_id))
    what: dict[str, Any] = {"identifier": {"system": codes.CARD, "value": feedback.card_uuid}}
    if card is not None and (reference := result_reference(card)):
        what["reference"] = reference
    details = [
        _detail("outcome", feedback.outcome),
        _detail("outcomeTimestamp", instant(feedback.outcome_timestamp)),
    ]
    details.extend(_detail("acceptedSuggestion", s) for s in feedback.accepted_suggestions or [])
    reason = feedback.override_reason or {}
    coded = reason.get("reason") if isinstance(reason.get("reason"), dict) else None
    if coded:
        code = f"{coded.get('system', '')}|{coded.get('code', '')}"
        details.append(_detail("overrideReason", code))
        if coded.get("display"):
            details.append(_detail("overrideReasonDisplay", str(coded["display"])))
    if reason.get("userComment"):
        details.append(_detail("overrideComment", str(reason["userComment"])))
    card_entity_: dict[str, Any] = {
        "what": what,
        "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
        "role": coding(codes.OBJECT_ROLE, "3", "Report"),
        "detail": details,
    }
    if card is not None:
        card_entity_["name"] = card.summary
    entities.append(card_entity_)
    if card is not None:
        entities.append({
            "what": {"reference": f"GuidanceResponse/inv-{card.invocation_seq}"},
            "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
            "role": coding(codes.OBJECT_ROLE, "3", "Report"),
            "description": "the service call that returned the card",
        })  # fmt: skip
    return {
        "resourceType": "AuditEvent",
        "id": f"fb-{feedback.seq}",
        "type": coding(codes.AUDIT_EVENT_TYPE, "rest", "RESTful Operation"),
        "subtype": [
            coding(codes.RESTFUL_INTERACTION, "create", "create"),
            coding(codes.EVENT, codes.CDS_FEEDBACK, "CDS Hooks feedback"),
            coding(codes.SERVICE, feedback.service_id),
        ],
        "action": "C",
        "recorded": instant(feedback.received_at),
        "outcome": "0",
        "agent": [
            _ehr_agent(feedback.client_iss, None, True),
            _wardround_agent(base_url, f"/cds-services/{feedback.service_id}/feedback"),
        ],
        "source": _source(base_url),
        "entity": entities,
    }


def _access_subtypes(access: Access) -> tuple[dict[str, Any], list[dict[str, str]], str]:
    """(type, subtypes, action) of an access row."""
    if access.action in LOGIN_ACTIONS:
        code, display = LOGIN_ACTIONS[access.action]
        return (
            coding(codes.DCM, "110114", "User Authentication"),
            [coding(codes.DCM, code, display)],
            "E",
        )
    subtypes = [coding(codes.EVENT, codes.AUDIT_READ, "read of the audit log")]
    if access.channel == "fhir-api":
        interaction = "read" if access.action == "read" else "search-type"
        subtypes.insert(0, coding(codes.RESTFUL_INTERACTION, interaction, interaction))
        event_type = coding(codes.AUDIT_EVENT_TYPE, "rest", "RESTful Operation")
        return event_type, subtypes, "R" if interaction == "read" else "E"
    subtypes.append(coding(codes.EVENT, f"review-{access.action}", f"review page: {access.action}"))
    if access.action.startswith("export"):
        return coding(codes.DCM, "110106", "Export"), subtypes, "R"
    return coding(codes.DCM, "110112", "Query"), subtypes, "E"


def access_event(access: Access, base_url: str) -> dict[str, Any]:
    """A read of the audit (who, with which grants, what filter, how many records), or a
    reviewer's log-in / log-out."""
    event_type, subtypes, action = _access_subtypes(access)
    principal: dict[str, Any] = {
        "type": RECIPIENT,
        "who": {
            "identifier": {"system": access.principal_system, "value": access.principal_id},
            "display": access.principal_id,
        },
        "requestor": True,
    }
    roles = []
    for grant in access.grants or []:
        if grant.startswith("role:"):
            roles.append(concept(codes.ROLE, grant.removeprefix("role:")))
        else:
            roles.append(concept(codes.SCOPE, grant))
    if roles:
        principal["role"] = roles
    if access.remote_addr:
        principal["network"] = {"address": access.remote_addr, "type": codes.NETWORK_TYPE_IP}
    path = "/fhir" if access.channel == "fhir-api" else "/review"
    entities: list[dict[str, Any]] = []
    if access.patient_id:
        entities.append(_patient_entity(access.patient_id))
    query: dict[str, Any] = {
        "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
        "role": coding(codes.OBJECT_ROLE, "24", "Query"),
        "description": f"{access.channel} {access.action} {access.target or ''}".strip(),
        "detail": [_detail("filter", canonical_json(access.query or {}))],
    }
    params = [(k, v) for k, values in (access.query or {}).items() for v in _as_list(values)]
    if params:
        query["query"] = base64.b64encode(urlencode(params).encode()).decode("ascii")
    if access.result_count is not None:
        query["detail"].append(_detail("result-count", str(access.result_count)))
    entities.append(query)
    if access.target and "/" in access.target:
        entities.append({
            "what": {"reference": access.target},
            "type": coding(codes.ENTITY_TYPE, "2", "System Object"),
            "role": coding(codes.OBJECT_ROLE, "3", "Report"),
        })  # fmt: skip
    return {
        "resourceType": "AuditEvent",
        "id": f"acc-{access.seq}",
        "type": event_type,
        "subtype": subtypes,
        "action": action,
        "recorded": instant(access.at),
        "outcome": codes.outcome_code(access.status_code),
        "agent": [principal, _wardround_agent(base_url, path)],
        "source": _source(base_url),
        "entity": entities,
    }


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]
