"""Population runs in the audit log: one ``audit_invocation`` row per run, in the same chain.

A run is an invocation of a job rather than of a hook, so it takes the invocation row
with these meanings (no new table, no migration; ``cds audit verify`` covers it):

==================== =====================================================================
column               for a population run
==================== =====================================================================
``service_id``       ``population:<job>`` (``population:records``, ``population:export``)
``hook``             NULL (what tells a run from a hook call)
``hook_instance``    the run id (also in the run's ``run.json``)
``user_id``          the operator who ran it (``--operator``, ``WARDROUND_OPERATOR`` or
                     ``os:<login>``)
``fhir_server``      the server the data was exported from, if any
``request_digest``   SHA-256 of the run manifest: job, parameters, every input file's
                     name, size and SHA-256 (``PopulationRun.manifest``)
``prefetch_fetched`` the datasets read (``source`` ``bulk-ndjson``/``bulk-export``, per
                     resource type: files with hashes, resources, problems by kind) and
                     written (``source`` ``parquet``: table, rows, location)
``model_versions``   the models used (id, version, artifact hash)
``status_code``      200 completed, 400 the input could not be read, 500 the job failed
``latency_ms``       the run's duration
==================== =====================================================================
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.audit.store import AuditLog
from cds.audit.tables import Invocation
from population.run_record import PopulationRun

SERVICE_PREFIX = "population:"


def invocation_values(run: PopulationRun) -> dict[str, Any]:
    return {
        "received_at": run.started_at,
        "service_id": run.service_id,
        "hook": None,
        "hook_instance": run.run_id,
        "fhir_server": run.fhir_server,
        "client_iss": None,
        "client_sub": None,
        "user_id": run.operator,
        "patient_id": None,
        "encounter_id": None,
        "request_digest": run.manifest_digest(),
        "prefetch_used": [],
        "prefetch_fetched": [d.to_json() for d in (*run.inputs, *run.outputs)],
        "model_versions": run.models,
        "status_code": run.status,
        "latency_ms": round(run.duration_ms, 3),
        "error_code": run.error_code,
        "error_detail": run.error_detail,
    }


def record_run(audit: AuditLog, run: PopulationRun) -> int:
    """Append the run to the audit chain; its sequence number once committed."""
    return audit.record_invocation(invocation_values(run), cards=())


def recent_runs(session: Session, limit: int = 20) -> list[Invocation]:
    """The latest population runs, newest first."""
    query = (
        select(Invocation)
        .where(Invocation.service_id.startswith(SERVICE_PREFIX), Invocation.hook.is_(None))
        .order_by(Invocation.seq.desc())
        .limit(limit)
    )
    return list(session.execute(query).scalars())
