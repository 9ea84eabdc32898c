"""`make bench-drug`: order-sign latency with full prefetch, and drug checks per second.

  * latency — one keep-alive client posting ``order-sign`` requests to a real gunicorn
    (1 worker, audit on SQLite in a temp dir), one per shared Synthea patient, each with
    a full prefetch (patient, medications, allergies, observations) and one draft order
    (rotating through naproxen, verapamil, amoxicillin, metformin, oxycodone/acetaminophen);
    ES384 JWT per call, signed beforehand. Median, p95, p99 of the client-side time.
  * checks/s — ``models.drug.check_orders`` alone on one core (PatientContexts built
    beforehand), every patient with every draft, sign mode.
Writes the figures into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ehr import HookBench  # noqa: E402
from benchmarks.report import publish, summary  # noqa: E402
from cds.demo import draft_medication_request, order_request  # noqa: E402
from fhir_adapters import build_patient_context  # noqa: E402
from models.drug import check_orders  # noqa: E402
from tests.conftest import synthea_bundles  # noqa: E402

MARK_START, MARK_END = "<!-- drug-bench:start -->", "<!-- drug-bench:end -->"
DRAFTS = (
    (("198014", "Naproxen 500 MG Oral Tablet"), (1, "TAB"), (2, 1, "d")),
    (("897718", "Verapamil Hydrochloride 40 MG"), (1, "TAB"), (3, 1, "d")),
    (("308192", "Amoxicillin 500 MG Oral Tablet"), (1, "TAB"), (3, 1, "d")),
    (("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
     (1, "TAB"), (1, 1, "d")),
    (("1049221", "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet"),
     (2, "TAB"), (1, 6, "h")),
)  # fmt: skip


def _bodies() -> list[dict]:
    bodies = []
    for i, bundle in enumerate(synthea_bundles()):
        patient_id = order_request(bundle, "order-sign", [{"id": "x"}])["context"]["patientId"]
        code, dose, per_day = DRAFTS[i % len(DRAFTS)]
        draft = draft_medication_request(patient_id, code, dose, per_day)
        bodies.append(order_request(bundle, "order-sign", [draft]))
    return bodies


def latency(bodies: list[dict], work: Path) -> dict[str, float]:
    with HookBench(work) as bench:
        samples, _ = bench.timed_calls("drug-safety-sign", bodies)
    return summary(samples)


def checks_per_second(bodies: list[dict]) -> dict[str, float]:
    contexts = []
    for body in bodies:
        context = body["context"]
        for code, dose, per_day in DRAFTS:
            draft = draft_medication_request(context["patientId"], code, dose, per_day)
            contexts.append(
                build_patient_context(
                    body["prefetch"],
                    context["patientId"],
                    draft_orders_bundle={"resourceType": "Bundle", "entry": [{"resource": draft}]},
                )
            )
    for patient in contexts[:50]:
        check_orders(patient, "sign")  # warm the knowledge caches
    started = time.process_time()
    findings = sum(len(check_orders(patient, "sign")) for patient in contexts)
    cpu = time.process_time() - started
    return {
        "orders": len(contexts),
        "findings": findings,
        "cpu_s": round(cpu, 2),
        "checks_per_s": round(len(contexts) / cpu),
    }


def markdown(result: dict) -> str:
    lat, rate = result["latency"], result["checks"]
    return f"""{MARK_START}
## Drug safety: order-sign (`make bench-drug`)

{result["when"]}, {result["machine"]}.

| measure | value |
| --- | --- |
| order-sign latency, full prefetch, 1 client → gunicorn (1 worker, SQLite audit), {lat["n"]} patients | median {lat["median_ms"]} ms, p95 {lat["p95_ms"]} ms, p99 {lat["p99_ms"]} ms |
| `check_orders` alone (sign mode, all checks), one core, {rate["orders"]} patient-draft pairs | {rate["checks_per_s"]} orders checked/s ({rate["cpu_s"]} s CPU, {rate["findings"]} findings) |

Latency is client-side per call: JWT check, JSON and FHIR R4B parsing of the prefetch
(median about 100 resources), the checks, card building, the audit write and the answer.
The checks themselves are a small part of it (the second row: table lookups over
identified ingredients), so the latency is mostly the PatientContext build measured in
"PatientContext build" above.
{MARK_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # the in-process figure is for one core
    bodies = _bodies()
    checks = checks_per_second(bodies)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as work:
        lat = latency(bodies, Path(work))
    publish(args.benchmarks, (MARK_START, MARK_END), {"latency": lat, "checks": checks}, markdown)


if __name__ == "__main__":
    main()
