"""Replay Synthea patients through the hooks, as an EHR would: the review page's demo data
and the end-to-end tests' (``cds demo replay``; tests/review).

Per patient: a ``patient-view`` call (patient-summary), an ``order-sign`` call
(drug-safety-sign) with two draft orders (naproxen, and oxycodone/acetaminophen every
4 hours: NSAID interactions, renal dosing, opioid MME), and feedback on the drug-safety
cards as clinicians might give it, the same way every run: by the card's position, a
suggestion accepted, an override with a reason (and a comment), or no feedback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds.demo import draft_medication_request, order_request, patient_view_request

NAPROXEN = ("198014", "Naproxen 500 MG Oral Tablet")
OXYCODONE = ("1049221", "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet")
FALLBACK_REASON = {
    "system": "urn:wardround:cds:override-reason",
    "code": "benefit-outweighs-risk",
    "display": "Benefit outweighs the risk for this patient",
}
#: POST path, JSON body → (HTTP status, JSON answer).
Post = Callable[[str, dict[str, Any]], tuple[int, Any]]


@dataclass
class ReplayStats:
    patients: int = 0
    calls: int = 0
    cards: int = 0
    feedback: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    #: card uuid → what feedback it got ("accepted", "overridden" or None)
    outcomes: dict[str, str | None] = field(default_factory=dict)


def feedback_for(card: dict[str, Any], turn: int) -> dict[str, Any] | None:
    """Feedback for one card: turn 0 accept (or override without suggestions), 1 override
    with a reason and a comment, 2 nothing."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    choice = turn % 3
    if choice == 2:
        return None
    suggestions = [s for s in card.get("suggestions", []) if "uuid" in s]
    if choice == 0 and suggestions:
        return {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": suggestions[0]["uuid"]}],
            "outcomeTimestamp": now,
        }
    reason = (card.get("overrideReasons") or [FALLBACK_REASON])[0]
    return {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": reason, "userComment": "replayed: reviewed with the patient"},
        "outcomeTimestamp": now,
    }


def demo_drafts(patient_id: str) -> list[dict[str, Any]]:
    """The two draft orders every replayed order hook carries (see the module docstring)."""
    return [
        draft_medication_request(patient_id, NAPROXEN, dose=(1, "TAB"), per_day=(2, 1, "d")),
        draft_medication_request(patient_id, OXYCODONE, dose=(2, "TAB"), per_day=(1, 4, "h")),
    ]


def request_for(hook: str, prefetch_keys: Iterable[str], bundle: Path) -> dict[str, Any]:
    """The request an EHR sends a service of ``hook`` for a Synthea patient, with every one
    of the service's prefetch keys filled from the record (order hooks: the demo drafts)."""
    keys = tuple(prefetch_keys)
    if hook == "patient-view":
        return patient_view_request(bundle, keys=keys)
    if hook in ("order-select", "order-sign"):
        patient_id = patient_view_request(bundle, keys=())["context"]["patientId"]
        return order_request(bundle, hook, demo_drafts(patient_id), keys=keys)
    raise ValueError(f"no replay request for hook {hook!r}")


def replay(bundles: Iterable[Path], post: Post) -> ReplayStats:
    stats = ReplayStats()
    for index, bundle in enumerate(bundles):
        view = patient_view_request(bundle)
        patient_id = view["context"]["patientId"]
        stats.patients += 1
        status, answer = post("/cds-services/patient-summary", view)
        stats.calls += 1
        stats.statuses[status] += 1
        stats.cards += len(answer.get("cards", [])) if status == 200 else 0
        status, answer = post(
            "/cds-services/drug-safety-sign",
            order_request(bundle, "order-sign", demo_drafts(patient_id)),
        )
        stats.calls += 1
        stats.statuses[status] += 1
        cards = answer.get("cards", []) if status == 200 else []
        stats.cards += len(cards)
        entries = []
        for turn, card in enumerate(cards, start=index):
            entry = feedback_for(card, turn)
            stats.outcomes[card["uuid"]] = entry["outcome"] if entry else None
            if entry:
                entries.append(entry)
        if entries:
            status, _ = post("/cds-services/drug-safety-sign/feedback", {"feedback": entries})
            stats.statuses[status] += 1
            stats.feedback += len(entries) if status == 200 else 0
    return stats
