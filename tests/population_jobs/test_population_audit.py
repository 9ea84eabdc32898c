"""A population run is one invocation row in the hash-chained audit log (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from cds.audit import AuditLog, verify_chain
from cds.audit.population_runs import recent_runs, record_run
from cds.audit.tables import Invocation
from cds.db import make_engine, make_sessionmaker
from population.run_record import Dataset, PopulationRun

FILES = ({"name": "Patient.ndjson", "type": "Patient", "bytes": 10, "sha256": "ab" * 32},)


def _run(**changes: object) -> PopulationRun:
    run = PopulationRun(
        "records",
        "os:alice",
        {"input": "/data/bulk", "output": "/data/out", "master": "local[2]"},
        inputs=[Dataset("Patient", "bulk-ndjson", 3, FILES, {"invalid": 1, "no_id": 0})],
        outputs=[Dataset("patients", "parquet", 3, location="patients")],
        duration_ms=1234.5,
    )
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def test_a_run_is_a_chained_invocation_without_a_hook(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    audit = AuditLog(sessions)
    hook_call = {
        "received_at": datetime.now(UTC), "service_id": "patient-summary", "hook": "patient-view",
        "hook_instance": "h1", "request_digest": "0" * 64, "prefetch_used": [],
        "prefetch_fetched": [], "model_versions": [], "status_code": 200, "latency_ms": 1.0,
    }  # fmt: skip
    audit.record_invocation(hook_call, cards=())
    run = _run()
    failed = _run(status=500, error_code="Py4JJavaError", error_detail="see its log")

    seq = record_run(audit, run)
    record_run(audit, failed)

    with sessions() as session:
        row = session.get(Invocation, seq)
        assert row is not None
        assert (row.service_id, row.hook, row.hook_instance, row.user_id) == (
            "population:records", None, run.run_id, "os:alice",
        )  # fmt: skip
        assert row.request_digest == run.manifest_digest()
        assert row.prefetch_fetched == [
            {"key": "Patient", "source": "bulk-ndjson", "entries": 3, "files": list(FILES),
             "problems": {"invalid": 1}},
            {"key": "patients", "source": "parquet", "entries": 3, "location": "patients"},
        ]  # fmt: skip
        assert (row.status_code, row.latency_ms, row.model_versions) == (200, 1234.5, [])
        listed = recent_runs(session)
        assert [(r.hook_instance, r.status_code, r.error_code) for r in listed] == [
            (failed.run_id, 500, "Py4JJavaError"),
            (run.run_id, 200, None),
        ]
        assert verify_chain(session).ok
    engine.dispose()


def test_the_manifest_digest_covers_the_input_files_not_the_counts() -> None:
    base = _run()
    recounted = _run(inputs=[Dataset("Patient", "bulk-ndjson", 99, FILES)])
    other_file = _run(
        inputs=[Dataset("Patient", "bulk-ndjson", 3, ({**FILES[0], "sha256": "cd" * 32},))]
    )
    assert recounted.manifest_digest() == base.manifest_digest()
    assert other_file.manifest_digest() != base.manifest_digest()
    assert base.to_json()["manifest_sha256"] == base.manifest_digest()
