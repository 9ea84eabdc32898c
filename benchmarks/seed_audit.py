"""Seed an audit database with real hash-chained rows, fast.

``python benchmarks/seed_audit.py --url postgresql://postgres@127.0.0.1:5432/<db> --calls 100000``

Writes ``--calls`` CDS calls (patient-summary, drug-safety-sign and drug-safety-select
shares as in a day of use), their cards (0-3 per call, drug-safety cards with a
``detected-issue`` result) and feedback on about a third of the drug-safety cards,
spread over ``--days`` days up to now, for ``--patients`` patients and ``--users``
clinicians. The rows go through the service's own chain code (``cds.audit.store``:
``seq``, ``prev_hash``, ``hash`` as the service writes them, the chain head locked), in
transactions of ``--batch`` calls instead of one per request, so 100,000 calls take a
minute, not an hour. ``cds audit verify`` passes afterwards. Deterministic per ``--seed``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cds.audit.jti import TokenMemory  # noqa: E402
from cds.audit.store import CardRecord, _Append, _write_appends  # noqa: E402
from cds.db import make_engine, make_sessionmaker  # noqa: E402
from cds.migrate import upgrade  # noqa: E402
from cds.services.drug_safety import FINDING_KIND_SYSTEM, OVERRIDE_REASONS  # noqa: E402

SERVICES = (  # (service, hook, share of calls)
    ("patient-summary", "patient-view", 0.5),
    ("drug-safety-sign", "order-sign", 0.35),
    ("drug-safety-select", "order-select", 0.15),
)
KINDS = (("interaction", "critical"), ("allergy", "critical"), ("duplicate", "warning"),
         ("renal", "warning"), ("opioid", "critical"), ("unidentified", "info"))  # fmt: skip
DETAIL = (
    "**Mechanism**: additive effect on haemostasis. **Management**: avoid the combination; "
    "prefer acetaminophen for pain, or monitor INR closely if the NSAID is essential. "
    "**Evidence**: established (ONC high-priority list). "
) * 2


@dataclass
class Seeded:
    calls: int
    cards: int
    feedback: int
    seconds: float


def _rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _card(rng: random.Random, service: str, patient: str) -> CardRecord:
    card_uuid = _rng_uuid(rng)
    if service == "patient-summary":
        summary = f"Female, {rng.randint(18, 95)} y: {rng.randint(0, 9)} active problems"
        body = {"uuid": card_uuid, "summary": summary, "indicator": "info",
                "source": {"label": "Wardround patient summary"},
                "detail": "**Active problems** (2):\n- Hypertension\n- Prediabetes"}  # fmt: skip
        return CardRecord(card_uuid, summary, "info", body)
    kind, indicator = rng.choice(KINDS)
    summary = f"Warfarin + naproxen: bleeding risk ({kind})"
    suggestion = {"uuid": _rng_uuid(rng), "label": "Remove the naproxen order",
                  "actions": [{"type": "delete", "description": "Remove the draft",
                               "resourceId": ["MedicationRequest/draft-1"]}]}  # fmt: skip
    body = {
        "uuid": card_uuid, "summary": summary, "indicator": indicator, "detail": DETAIL,
        "source": {"label": "ONC high-priority DDI", "url": "https://example.org/ddi"},
        "suggestions": [suggestion], "selectionBehavior": "at-most-one",
    }  # fmt: skip
    if indicator == "critical":
        body["overrideReasons"] = [r.model_dump(exclude_none=True) for r in OVERRIDE_REASONS]
    result = {
        "kind": "detected-issue",
        "code": {"system": FINDING_KIND_SYSTEM, "code": kind},
        "model": "drug-safety",
        "severity": {"critical": "high", "warning": "moderate", "info": "low"}[indicator],
        "implicated": ["MedicationRequest/draft-1"],
        "text": summary,
        "facts": {"rule": "warfarin-nsaid"},
    }
    return CardRecord(card_uuid, summary, indicator, body, result)


def seed(
    url: str,
    calls: int,
    *,
    patients: int = 5000,
    users: int = 200,
    days: int = 90,
    batch: int = 1000,
    seed_value: int = 7,
) -> Seeded:
    rng = random.Random(seed_value)  # noqa: S311 - synthetic data, not security
    patient_ids = [_rng_uuid(rng) for _ in range(patients)]
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    times = sorted(start + timedelta(seconds=rng.uniform(0, days * 86400)) for _ in range(calls))
    weights = [share for *_, share in SERVICES]
    kb = {"id": "drug-safety", "version": "1.0.0+kb.d5926b85772a", "hash": "d5" * 32}
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    tokens = TokenMemory()
    cards_written = feedback_written = 0
    began = time.perf_counter()
    try:
        for offset in range(0, calls, batch):
            appends: list[_Append] = []
            feedback: list[dict] = []
            for received in times[offset : offset + batch]:
                service, hook, _ = rng.choices(SERVICES, weights)[0]
                patient = rng.choice(patient_ids)
                count = 1 if service == "patient-summary" else rng.choice((0, 0, 1, 1, 2, 3))
                cards = [_card(rng, service, patient) for _ in range(count)]
                hook_instance = _rng_uuid(rng)
                appends.append(_Append(invocation={
                    "received_at": received, "service_id": service, "hook": hook,
                    "hook_instance": hook_instance, "client_iss": "https://ehr.example.org",
                    "client_sub": "ehr-client", "user_id": f"Practitioner/u{rng.randrange(users)}",
                    "patient_id": patient, "encounter_id": None, "fhir_server": None,
                    "request_digest": hashlib.sha256(hook_instance.encode()).hexdigest(),
                    "prefetch_used": ["patient", "medications"],
                    "prefetch_fetched": [{"key": "patient", "source": "supplied"}],
                    "model_versions": [kb] if service != "patient-summary"
                    else [{"id": "patient-summary", "version": "1.1.0"}],
                    "status_code": 200 if rng.random() > 0.02 else 412,
                    "latency_ms": round(rng.lognormvariate(3.2, 0.5), 3),
                    "error_code": None, "error_detail": None,
                }, cards=cards))  # fmt: skip
                cards_written += len(cards)
                for card in cards:
                    if card.result is None or rng.random() > 0.35:
                        continue
                    accepted = rng.random() < 0.45
                    suggestion = card.card_json["suggestions"][0]["uuid"]
                    reason = {"reason": OVERRIDE_REASONS[0].model_dump(exclude_none=True),
                              "userComment": "discussed"}  # fmt: skip
                    feedback.append({
                        "received_at": received + timedelta(seconds=rng.uniform(5, 120)),
                        "card_uuid": card.uuid, "service_id": service,
                        "client_iss": "https://ehr.example.org",
                        "outcome": "accepted" if accepted else "overridden",
                        "outcome_timestamp": received + timedelta(seconds=rng.uniform(2, 60)),
                        "accepted_suggestions": [suggestion] if accepted else [],
                        "override_reason": None if accepted else reason,
                    })  # fmt: skip
            if feedback:
                appends.append(_Append(invocation=None, feedback=feedback))
                feedback_written += len(feedback)
            with sessions.begin() as session:
                _write_appends(session, appends, tokens)
    finally:
        engine.dispose()
    return Seeded(calls, cards_written, feedback_written, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="audit database (migrated if it is not)")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    upgrade(args.url)
    done = seed(args.url, args.calls, patients=args.patients, days=args.days, seed_value=args.seed)
    rows = done.calls + done.cards + done.feedback
    print(f"{done.calls} calls, {done.cards} cards, {done.feedback} feedback entries: "
          f"{rows} chained rows in {done.seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
