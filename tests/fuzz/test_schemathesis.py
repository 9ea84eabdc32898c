"""schemathesis against the running server: the ``make fuzz`` harness, short (~200 cases).

A real gunicorn server on a free 127.0.0.1 port (SQLite audit log in a temporary folder)
answers cases generated from its own ``/openapi.json``, each signed with a fresh ES384
JWT for the exact endpoint URL. No case may get a 5xx, an undocumented status, content
type or header, or a body that breaks the documented schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_harness import LiveServer, fuzz, live_server, load_schema, plan

CASES = 200


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Any]]:
    with live_server(tmp_path_factory.mktemp("fuzz-server")) as server:
        yield server, load_schema(server)


def test_generated_cases_get_documented_answers_and_no_5xx(target: tuple[LiveServer, Any]):
    server, schema = target
    # Derandomized: the suite always runs the same cases (``make fuzz`` explores anew).
    # The short run spends its budget on the seeded service (patient-summary): its cards
    # and feedback are what the realism checks below look for; every other operation
    # still gets cases.
    budget = plan(schema, CASES, focus="patient-summary")
    totals = fuzz(server, schema, budget, derandomize=True)
    report = "\n\n".join(totals.failures[:5])
    assert not totals.failures, f"{totals.summary()}\n\n{report}"
    assert not server.error_lines(), "\n".join(server.error_lines()[:5])

    labels = {result.ok().label for result in schema.get_all_operations()}
    assert set(totals.by_operation) == labels, "every documented operation was fuzzed"
    # The plan gives the focus its weight and every other (operation, mode) its minimum, so
    # it holds fewer than CASES once many services are registered; nearly all of it ran (a
    # GET without parameters has one distinct case).
    assert totals.cases >= sum(budget.values()) * 0.9, (totals.cases, sum(budget.values()))
    # Realism: the cases reached the service (cards) and the feedback store, not only 400s.
    reached = {(label, status) for label, _, status in totals.outcomes}
    assert ("POST /cds-services/patient-summary", 200) in reached
    assert totals.with_cards > 0
    assert ("POST /cds-services/patient-summary", 400) in reached
    assert ("POST /cds-services/patient-summary/feedback", 200) in reached


def test_the_fuzzed_document_is_the_one_the_server_serves(target: tuple[LiveServer, Any]):
    server, schema = target
    paths = schema.raw_schema["paths"]
    assert "/cds-services/patient-summary" in paths
    assert schema.raw_schema["servers"] == [{"url": server.base_url}]
    assert server.cards, "the example request got a card while seeding"
