"""A CDS service call → FHIR R4 GuidanceResponse, its cards as a contained RequestGroup.

R4 has RequestGroup (R5 renamed it RequestOrchestration); the API serves R4. The card →
action mapping follows the CDS Hooks / Clinical Reasoning one (``cdshooksrequestgroup``):

==========================  =====================================================
card                        RequestGroup.action
==========================  =====================================================
uuid                        action.id
summary / detail            title / description
indicator                   priority (info → routine, warning → urgent, critical → stat)
source, links               documentation (RelatedArtifact: display, url)
selectionBehavior           selectionBehavior
suggestion (uuid, label)    a sub-action (id, title); its actions are sub-sub-actions:
                            type create / update / remove (delete), ``resource`` →
                            a contained copy (create, update; local id) or the
                            ``resourceId`` references (delete)
==========================  =====================================================

The card exactly as sent is in the call's AuditEvent (entity ``card-json``). The models
that ran are the ``version`` entries of a contained Device (the service), which is the
GuidanceResponse's performer and the RequestGroup's author.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from cds.audit.tables import Card, Invocation
from cds.fhir_api import codes
from cds.fhir_api.codes import coding, instant

SERVICE_DEVICE = "service"
CARDS = "cards"
OUTCOME = "outcome"
ACTION_TYPES = {"create": "create", "update": "update", "delete": "remove"}


def module_uri(base_url: str, service_id: str) -> str:
    return f"{base_url}/cds-services/{service_id}" if base_url else f"{codes.SERVICE}:{service_id}"


def _status(invocation: Invocation) -> str:
    if invocation.status_code < 400:
        return "success"
    if invocation.status_code == 412:
        return "data-required"
    return "failure"


def _service_device(invocation: Invocation) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": SERVICE_DEVICE,
        "deviceName": [{"name": invocation.service_id, "type": "user-friendly-name"}],
        "type": {"coding": [coding(codes.SERVICE, invocation.service_id)], "text": "CDS service"},
    }
    versions = []
    for model in invocation.model_versions or []:
        version: dict[str, Any] = {
            "type": {"coding": [coding(codes.MODEL, str(model.get("id", "")))]},
            "value": str(model.get("version", "")),
        }
        if model.get("hash"):
            version["component"] = {"system": codes.MODEL_SHA256, "value": str(model["hash"])}
        versions.append(version)
    if versions:
        device["version"] = versions
    return device


def _documentation(card_json: dict[str, Any]) -> list[dict[str, Any]]:
    source = card_json.get("source") or {}
    artifacts = []
    if source.get("label"):
        artifact = {"type": "documentation", "display": str(source["label"])}
        if source.get("url"):
            artifact["url"] = str(source["url"])
        artifacts.append(artifact)
    for link in card_json.get("links") or []:
        if isinstance(link, dict) and link.get("url"):
            artifacts.append(
                {"type": "documentation", "display": str(link.get("label", "")), "url": link["url"]}
            )
    return artifacts


def _suggestion_actions(
    suggestion: dict[str, Any], prefix: str, contained: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    actions = []
    for k, action in enumerate(suggestion.get("actions") or [], start=1):
        if not isinstance(action, dict):
            continue
        kind = ACTION_TYPES.get(str(action.get("type")))
        out: dict[str, Any] = {}
        if action.get("description"):
            out["description"] = str(action["description"])
        if kind:
            out["type"] = {"coding": [coding(codes.ACTION_TYPE, kind)]}
        resource = action.get("resource")
        if (
            isinstance(resource, dict)
            and resource.get("resourceType")
            and "contained" not in resource
        ):
            local = copy.deepcopy(resource)
            local["id"] = f"{prefix}-a{k}"
            contained.append(local)
            out["resource"] = {"reference": f"#{local['id']}"}
            actions.append(out)
        elif action.get("resourceId"):
            for target in action["resourceId"]:
                actions.append(out | {"resource": {"reference": str(target)}})
        else:
            actions.append(out)
    return actions


def _card_action(card: Card, index: int, contained: list[dict[str, Any]]) -> dict[str, Any]:
    card_json = card.card_json
    action: dict[str, Any] = {"id": card.uuid, "title": card.summary}
    if card_json.get("detail"):
        action["description"] = str(card_json["detail"])
    action["priority"] = codes.PRIORITY.get(card.indicator, "routine")
    if documentation := _documentation(card_json):
        action["documentation"] = documentation
    if card_json.get("selectionBehavior"):
        action["selectionBehavior"] = card_json["selectionBehavior"]
    sub_actions = []
    for j, suggestion in enumerate(card_json.get("suggestions") or [], start=1):
        if not isinstance(suggestion, dict):
            continue
        sub: dict[str, Any] = {"title": str(suggestion.get("label", ""))}
        if suggestion.get("uuid"):
            sub["id"] = str(suggestion["uuid"])
        if actions := _suggestion_actions(suggestion, f"card{index}-s{j}", contained):
            sub["action"] = actions
        sub_actions.append(sub)
    if sub_actions:
        action["action"] = sub_actions
    return action


def guidance_response(
    invocation: Invocation, cards: Sequence[Card], base_url: str
) -> dict[str, Any]:
    """The service's answer to one call: status, patient, cards, models, errors."""
    module = module_uri(base_url, invocation.service_id)
    contained: list[dict[str, Any]] = [_service_device(invocation)]
    response: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": f"inv-{invocation.seq}",
        "contained": contained,
        "identifier": [{"system": codes.AUDIT_SEQ, "value": str(invocation.seq)}],
        "moduleUri": module,
        "status": _status(invocation),
    }
    request_identifier = None
    if invocation.hook_instance:
        request_identifier = {"system": codes.URI, "value": f"urn:uuid:{invocation.hook_instance}"}
        response["requestIdentifier"] = request_identifier
    if invocation.patient_id:
        response["subject"] = {"reference": f"Patient/{invocation.patient_id}"}
    response["occurrenceDateTime"] = instant(invocation.received_at)
    response["performer"] = {"reference": f"#{SERVICE_DEVICE}"}
    if invocation.hook:
        response["reasonCode"] = [{"coding": [coding(codes.CDS_HOOKS, invocation.hook)]}]
    if invocation.status_code >= 400:
        error = invocation.error_code or "error"
        issue = {
            "severity": "error",
            "code": "processing",
            "details": {"coding": [coding(codes.ERROR, error)]},
            "diagnostics": f"HTTP {invocation.status_code}: {invocation.error_detail or error}",
        }
        contained.append({"resourceType": "OperationOutcome", "id": OUTCOME, "issue": [issue]})
        response["evaluationMessage"] = [{"reference": f"#{OUTCOME}"}]
        return response
    group: dict[str, Any] = {
        "resourceType": "RequestGroup",
        "id": CARDS,
        "status": "active",
        "intent": "proposal",
        "instantiatesUri": [module],
    }
    if request_identifier:
        group["identifier"] = [request_identifier]
    if invocation.patient_id:
        group["subject"] = {"reference": f"Patient/{invocation.patient_id}"}
    group["authoredOn"] = instant(invocation.received_at)
    group["author"] = {"reference": f"#{SERVICE_DEVICE}"}
    actions = [_card_action(card, i, contained) for i, card in enumerate(cards, start=1)]
    if actions:
        group["action"] = actions
    contained.insert(1, group)
    response["result"] = {"reference": f"#{CARDS}"}
    return response
