"""`make bench-context`: time to build a PatientContext for every shared Synthea patient.

Two paths, same loader (``fhir_adapters.PatientLoader``), every standard prefetch key of
``PATIENT_CONTEXT_PREFETCH``:
  * prefetch — the EHR sent everything: R4B parsing + extraction only;
  * server   — the EHR sent nothing: the keys are fetched in parallel from the real FHIR
               server (sekmet-fhir over HTTP on 127.0.0.1, started from the test cache),
               then parsed.
Writes the median / p95 / max per path into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish, summary  # noqa: E402
from fhir_adapters import (  # noqa: E402  # noqa: E402
    PATIENT_CONTEXT_PREFETCH,
    ClientSettings,
    FhirSource,
    PatientLoader,
    PatientRequest,
    PrefetchFetcher,
    SessionPool,
    context_builder,
    parsing,
)
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type  # noqa: E402
from tests.conftest import SYNTHEA, synthea_bundles  # noqa: E402
from tests.support.fhir_server import loaded_database, running_copy  # noqa: E402

MARK_START, MARK_END = "<!-- context-bench:start -->", "<!-- context-bench:end -->"
COMMAND = "make bench-context"


def _request(patient_id: str, source: FhirSource, supplied: dict | None) -> PatientRequest:
    return PatientRequest(
        templates=PATIENT_CONTEXT_PREFETCH,
        required=frozenset({"patient"}),
        supplied=supplied,
        context={"patientId": patient_id, "userId": "Practitioner/bench"},
        source=source,
    )


@contextlib.contextmanager
def _timing_parses() -> Iterator[list[float]]:
    """Seconds spent in ``parsing.parse_resource`` (fhir.resources validation) meanwhile."""
    spent = [0.0]
    original = parsing.parse_resource

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    modules = (parsing, context_builder)
    for module in modules:
        module.parse_resource = timed  # type: ignore[attr-defined]
    try:
        yield spent
    finally:
        for module in modules:
            module.parse_resource = original  # type: ignore[attr-defined]


def run() -> dict:
    bundles = synthea_bundles()
    prefetches = []
    for path in bundles:
        resources = resources_by_type(load_bundle(path))
        prefetches.append((resources["Patient"][0]["id"], prefetch_for(resources)))
    resources_per_patient = [
        sum(len(v["entry"]) for k, v in p.items() if k != "patient") + 1 for _, p in prefetches
    ]
    pool = SessionPool(ClientSettings())
    results: dict[str, list[float]] = {"prefetch": [], "server": []}
    fetch_ms: list[float] = []
    with ThreadPoolExecutor(16) as executor:
        loader = PatientLoader(pool, PrefetchFetcher(executor, deadline_s=10.0))
        no_server = FhirSource(None)
        for patient_id, prefetch in prefetches:  # warm-up: imports, model classes
            loader.load(_request(patient_id, no_server, prefetch))
            break
        with _timing_parses() as parse_seconds:
            for patient_id, prefetch in prefetches:
                started = time.perf_counter()
                loader.load(_request(patient_id, no_server, prefetch))
                results["prefetch"].append((time.perf_counter() - started) * 1000)
        parse_share = parse_seconds[0] * 1000 / sum(results["prefetch"])
        database = loaded_database(SYNTHEA)
        with running_copy(database) as server:
            source = FhirSource(server.base_url, server.token)
            loader.load(_request(prefetches[0][0], source, None))  # warm connections
            for patient_id, _ in prefetches:
                started = time.perf_counter()
                loaded = loader.load(_request(patient_id, source, None))
                results["server"].append((time.perf_counter() - started) * 1000)
                fetch_ms.append(max(o.ms or 0.0 for o in loaded.prefetch.outcomes))
    pool.close()
    return {
        "load": f"{os.getloadavg()[0]:.1f}",
        "patients": len(prefetches),
        "keys": len(PATIENT_CONTEXT_PREFETCH),
        "resources_per_patient_median": statistics.median(resources_per_patient),
        "resources_per_patient_max": max(resources_per_patient),
        "prefetch": summary(results["prefetch"]),
        "prefetch_parse_share": round(parse_share * 100, 1),
        "server": summary(results["server"]),
        "server_slowest_key": summary(fetch_ms),
    }


def markdown(result: dict) -> str:
    rows = [
        ("from prefetch (parse + extract)", result["prefetch"]),
        (
            f"from the FHIR server (fetch {result['keys']} keys in parallel + parse + extract)",
            result["server"],
        ),
        ("… of which the slowest key's fetch", result["server_slowest_key"]),
    ]
    table = "\n".join(
        f"| {label} | {r['n']} | {r['median_ms']} | {r['p95_ms']} | {r['max_ms']} |"
        for label, r in rows
    )
    return f"""{MARK_START}
## PatientContext build (`{COMMAND}`)

{result["when"]}, {result["machine"]}; load average {result["load"]} at the end of the run (the
machine is shared). {result["patients"]} shared Synthea patients, all
{result["keys"]} standard prefetch keys (`PATIENT_CONTEXT_PREFETCH`); resources per patient: median
{result["resources_per_patient_median"]}, max {result["resources_per_patient_max"]}. The FHIR
server is sekmet-fhir 0.1.1 (FastAPI + SQLite, one process) on 127.0.0.1, searched with
`_count=200` pages; each patient is loaded one after another (no concurrent load).

| path | patients | median ms | p95 ms | max ms |
| --- | ---: | ---: | ---: | ---: |
{table}

Reading it: building from the EHR's prefetch is dominated by `fhir.resources` (pydantic)
validation of every resource ({result["prefetch_parse_share"]} % of the prefetch path's time
is spent in `parse_resource`); fetching adds the server's own search time, which for this
single-process test server is most of the total. The 2-s prefetch deadline
(`WARDROUND_PREFETCH_DEADLINE_S`) sits above the p95 of the slowest key's fetch.
{MARK_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    publish(args.benchmarks, (MARK_START, MARK_END), run(), markdown)


if __name__ == "__main__":
    main()
