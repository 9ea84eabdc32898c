"""`make bench-fhir`: AuditEvent search latency on PostgreSQL with 100,000 CDS calls.

1. a database of its own on the PostgreSQL server (``WARDROUND_TEST_PG``'s), migrated and
   seeded by ``benchmarks/seed_audit.py`` (real hash-chained rows: calls, cards, feedback);
2. a real gunicorn (1 worker x 4 threads) serving it, with an API token issuer;
3. one keep-alive client, one search at a time, ``--repeat`` searches per kind with
   values drawn from the data (patients, days, users, cards, cursors); each search is
   answered only after its own access row is committed (the audit of the audit);
4. median and p95 of the client-side time per kind → BENCHMARKS.md; the database is
   dropped afterwards (``--keep`` keeps it and prints its URL).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ehr import trusted_key  # noqa: E402
from benchmarks.report import machine, percentile, when, write_block  # noqa: E402
from benchmarks.seed_audit import seed  # noqa: E402
from cds.api_clients import mint_api_token  # noqa: E402
from cds.migrate import upgrade  # noqa: E402
from tests.support.live_server import GunicornServer  # noqa: E402

PG_ADMIN_URL = os.environ.get("WARDROUND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MARK_START, MARK_END = "<!-- fhir-bench:start -->", "<!-- fhir-bench:end -->"
ISSUER, KID = "https://bench-auth.wardround.example", "bench-api-es384"


def _samples(url: str, count: int) -> dict[str, list[Any]]:
    """Values to search for, drawn from the seeded data."""
    rng = random.Random(11)  # noqa: S311 - sampling, not security
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        patients = [r[0] for r in conn.execute(
            "SELECT patient_id FROM audit_invocation GROUP BY patient_id ORDER BY random() LIMIT %s",
            (count,),
        )]  # fmt: skip
        users = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM audit_invocation")]
        cards = [r[0] for r in conn.execute(
            "SELECT uuid FROM audit_card ORDER BY random() LIMIT %s", (count,)
        )]  # fmt: skip
        low, high = conn.execute("SELECT min(seq), max(seq) FROM audit_invocation").fetchone()
        first, last = conn.execute(
            "SELECT min(received_at), max(received_at) FROM audit_invocation"
        ).fetchone()
    span = (last - first).days
    days = [(first + timedelta(days=rng.randrange(1, span))).date() for _ in range(count)]
    cursors = [rng.randrange(low + 1000, high) for _ in range(count)]
    return {"patient": patients, "user": users, "card": cards, "day": days, "cursor": cursors}


def _queries(samples: dict[str, list[Any]], repeat: int) -> dict[str, list[str]]:
    rng = random.Random(5)  # noqa: S311 - sampling, not security
    pick = lambda key: samples[key][rng.randrange(len(samples[key]))]  # noqa: E731
    kinds = {
        "newest 50 (no filter)": lambda: "/fhir/AuditEvent?_count=50",
        "patient=…": lambda: f"/fhir/AuditEvent?patient={pick('patient')}",
        "date=ge…&date=lt… (one day)": lambda: (
            f"/fhir/AuditEvent?date=ge{(d := pick('day'))}&date=lt{d + timedelta(days=1)}"
        ),
        "agent=Practitioner/…": lambda: f"/fhir/AuditEvent?agent={pick('user')}",
        "subtype=order-sign&outcome=0": lambda: "/fhir/AuditEvent?subtype=order-sign&outcome=0",
        "subtype=cds-feedback": lambda: "/fhir/AuditEvent?subtype=cds-feedback",
        "entity:identifier=card|…": lambda: (
            f"/fhir/AuditEvent?entity:identifier=urn:wardround:card|{pick('card')}"
        ),
        "a page deep in the log (_cursor)": lambda: (
            f"/fhir/AuditEvent?_count=50&_cursor={pick('cursor')}"
        ),
        "_count=500": lambda: "/fhir/AuditEvent?_count=500",
        "DetectedIssue?patient=…": lambda: f"/fhir/DetectedIssue?patient={pick('patient')}",
    }
    return {name: [make() for _ in range(repeat)] for name, make in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()

    name = f"wardround_bench_fhir_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        seeded = seed(url, args.calls)
        rows = seeded.calls + seeded.cards + seeded.feedback
        print(f"seeded {rows} chained rows ({seeded.calls} calls) in {seeded.seconds:.1f} s")
        with psycopg.connect(url) as conn:
            conn.execute("ANALYZE")
        samples = _samples(url, 200)
        queries = _queries(samples, args.repeat)
        timings = _measure(url, queries)
        verify = _verify(url)
        _report(args, seeded, rows, timings, verify)
    finally:
        if args.keep:
            print(f"kept: {url}")
        else:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _measure(url: str, queries: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pem, issuers = trusted_key(folder / "api", ISSUER, KID)
        server = GunicornServer(
            url, None, folder, workers=1, threads=4, log_level="WARNING", clean_env=True,
            extra_env={"WARDROUND_AUTH": "jwt", "WARDROUND_API_ISSUERS": str(issuers),
                       "WARDROUND_TRUSTED_ISSUERS": str(issuers)},
        )  # fmt: skip
        with server, requests.Session() as session:
            token = mint_api_token(
                server.base_url + "/fhir", pem, ISSUER, KID, "bench", roles=("auditor",),
                lifetime_s=3600,
            )  # fmt: skip
            session.headers["Authorization"] = f"Bearer {token}"
            for path in [q[0] for q in queries.values()]:  # warm-up: one of each kind
                session.get(server.base_url + path, timeout=60).raise_for_status()
            timings = {}
            for kind, paths in queries.items():
                times, entries = [], []
                for path in paths:
                    began = time.perf_counter()
                    answer = session.get(server.base_url + path, timeout=60)
                    times.append((time.perf_counter() - began) * 1000)
                    answer.raise_for_status()
                    entries.append(len(answer.json().get("entry", [])))
                timings[kind] = {
                    "median": statistics.median(times),
                    "p95": percentile(times, 0.95),
                    "entries": statistics.median(entries),
                    "n": len(times),
                }
                print(
                    f"{kind}: median {timings[kind]['median']:.1f} ms, p95 {timings[kind]['p95']:.1f} ms"
                )
    return timings


def _verify(url: str) -> tuple[str, float]:
    began = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cds"), "audit", "verify"],
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip(), time.perf_counter() - began


def _report(args: Any, seeded: Any, rows: int, timings: dict, verify: tuple[str, float]) -> None:
    load = os.getloadavg()
    lines = [
        MARK_START,
        "## FHIR API: AuditEvent search at 100k calls (`make bench-fhir`)",
        "",
        f"{when()}, {machine()}, PostgreSQL on 127.0.0.1 (shared with other "
        f"engineers' runs; load average {load[0]:.1f} at the end of the run). Command: "
        f"`python benchmarks/fhir_search.py --calls {args.calls} --repeat {args.repeat}` "
        "(seeding alone: `python benchmarks/seed_audit.py --url postgresql://… --calls 100000`).",
        "",
        f"Data: {seeded.calls:,} CDS calls, {seeded.cards:,} cards, {seeded.feedback:,} feedback "
        f"entries = {rows:,} hash-chained rows over 90 days and 5,000 patients, written by the "
        f"service's chain code in {seeded.seconds:.0f} s. Server: gunicorn 1 worker x 4 threads; "
        "one keep-alive client, one search at a time, token with the auditor role (every "
        "search also reads the access log). Times are client-side and include writing the "
        "search's own access row (a chained, committed insert) before the answer.",
        "",
        "| search | n | entries (median) | median ms | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, t in timings.items():
        label = kind.replace("|", "\\|")  # a pipe would end the Markdown table cell
        lines.append(
            f"| `{label}` | {t['n']} | {t['entries']:.0f} | {t['median']:.1f} | {t['p95']:.1f} |"
        )
    everything = [t["median"] for t in timings.values()]
    lines += [
        "",
        f"Median of the per-kind medians: {statistics.median(everything):.1f} ms. After the run, "
        f"`cds audit verify` walked the whole chain in {verify[1]:.1f} s: {verify[0]}",
        MARK_END,
    ]
    write_block(args.benchmarks, MARK_START, MARK_END, "\n".join(lines))


if __name__ == "__main__":
    main()
