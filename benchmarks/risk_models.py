"""`make bench-risk`: feature extraction and every risk model per patient-view.

Every shared Synthea patient, moved in time so that the record ends today (as the demo and
the tests do; unshifted, every input is stale and the scores refuse early), with the
prefetch of the ``risk-models`` service (a superset of ``cardiovascular-risk``'s):

  * in process, one core, per patient (PatientContexts built beforehand): feature
    extraction (both learned models' feature specs), and all risk models (PCE + statin
    rules, CHA2DS2-VASc + HAS-BLED + anticoagulation, both xgboost models with their
    explanations, which evaluate their own features);
  * through the service: one keep-alive client posting each patient to
    ``cardiovascular-risk`` and to ``risk-models`` on a real gunicorn (1 worker, SQLite
    audit), ES384 JWT per call; client-side time.
Writes the figures into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ehr import HookBench  # noqa: E402
from benchmarks.report import publish, summary  # noqa: E402
from fhir_adapters import build_patient_context  # noqa: E402
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type  # noqa: E402
from fhir_adapters.time_shift import days_between, shift_record  # noqa: E402
from models import registry  # noqa: E402
from models.risk.catalog import LEARNED_MODELS, PREFETCH_KEYS  # noqa: E402
from models.risk.features.evaluate import evaluate  # noqa: E402
from models.risk.learned import NotEligible  # noqa: E402
from models.risk.scores import anticoagulation, cha2ds2_vasc, has_bled, pce, statin  # noqa: E402
from tests.conftest import synthea_bundles  # noqa: E402

MARK_START, MARK_END = "<!-- risk-bench:start -->", "<!-- risk-bench:end -->"
SERVICES = ("cardiovascular-risk", "risk-models")


def _bodies() -> list[dict]:
    shift = days_between(date(2021, 3, 31), date.today())
    bodies = []
    for bundle in synthea_bundles():
        resources = shift_record(resources_by_type(load_bundle(bundle)), shift)
        prefetch = prefetch_for(resources)
        bodies.append(
            {
                "hook": "patient-view",
                "hookInstance": str(uuid.uuid4()),
                "context": {
                    "userId": "Practitioner/bench",
                    "patientId": resources["Patient"][0]["id"],
                },
                "prefetch": {key: prefetch[key] for key in PREFETCH_KEYS},
            }
        )
    return bodies


def _summary(samples: list[float]) -> dict[str, float]:
    return summary(samples, digits=2)


def all_models(patient) -> int:  # type: ignore[no-untyped-def]
    """Every risk model of both services on one PatientContext; returns the findings."""
    found = 0
    assessment = pce.assess(patient)
    found += statin.recommend(patient, assessment) is not None
    stroke = cha2ds2_vasc.assess(patient)
    if stroke.score is not None:
        has_bled.assess(patient)
        found += anticoagulation.advise(patient, stroke) is not None
    for model_id in LEARNED_MODELS:
        with contextlib.suppress(NotEligible):
            found += registry.get(model_id).predict(patient).band is not None
    return found


def in_process(bodies: list[dict]) -> dict[str, dict[str, float]]:
    contexts, build = [], []
    for body in bodies:
        started = time.perf_counter()
        contexts.append(build_patient_context(body["prefetch"], body["context"]["patientId"]))
        build.append((time.perf_counter() - started) * 1000)
    for patient in contexts[:20]:
        all_models(patient)  # warm: model loading, knowledge caches
    features, models = [], []
    for patient in contexts:
        started = time.perf_counter()
        for spec in LEARNED_MODELS.values():
            evaluate(spec.features, patient)
        features.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        all_models(patient)
        models.append((time.perf_counter() - started) * 1000)
    return {"context": _summary(build), "features": _summary(features), "models": _summary(models)}


def latency(bodies: list[dict], work: Path) -> dict[str, dict[str, float]]:
    results = {}
    with HookBench(work) as bench:
        for service in SERVICES:
            samples, answers = bench.timed_calls(service, bodies)
            cards = sum(len(answer["cards"]) for answer in answers)
            results[service] = _summary(samples) | {"cards": cards}
    return results


def markdown(result: dict) -> str:
    inp, lat = result["in_process"], result["latency"]

    def row(label: str, s: dict) -> str:
        return f"| {label} | {s['n']} | {s['median_ms']} | {s['p95_ms']} | {s['p99_ms']} |"

    return f"""{MARK_START}
## Risk models: features and models per patient-view (`make bench-risk`)

{result["when"]}, {result["machine"]}; load average {result["load"]} during the run (the
machine is shared: tails are noisy). Every shared Synthea patient ({inp["models"]["n"]}),
moved in time so that its record ends today, with the `risk-models` prefetch (patient,
condition and medication history, encounters, observations, smoking status).

| measure (per patient-view) | patients | median ms | p95 ms | p99 ms |
| --- | ---: | ---: | ---: | ---: |
{row("feature extraction: both learned models' feature specs (one core)", inp["features"])}
{row("all risk models: PCE + statin, CHA2DS2-VASc + HAS-BLED + anticoagulation, both xgboost models with explanations (one core)", inp["models"])}
{row("for reference: PatientContext build from this prefetch (one core)", inp["context"])}
{row(f"`cardiovascular-risk` hook, client → gunicorn (1 worker, SQLite audit); {lat['cardiovascular-risk']['cards']} cards", lat["cardiovascular-risk"])}
{row(f"`risk-models` hook, client → gunicorn (1 worker, SQLite audit); {lat['risk-models']['cards']} cards", lat["risk-models"])}

Reading it: feature extraction and all the models together take about a millisecond
per patient at the median, small beside the PatientContext build (FHIR R4B parsing of the
history prefetch: every condition, medication request, encounter and observation of the
record), which with the audit write makes up most of a hook's time. Command:
`make bench-risk` (`python benchmarks/risk_models.py`).
{MARK_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    bodies = _bodies()
    os.sched_setaffinity(0, {0})  # the in-process figures are for one core
    inp = in_process(bodies)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as work:
        lat = latency(bodies, Path(work))
    load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    result = {"load": load, "in_process": inp, "latency": lat}
    publish(args.benchmarks, (MARK_START, MARK_END), result, markdown)


if __name__ == "__main__":
    main()
