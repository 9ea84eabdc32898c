"""What a population run did, as data: the record the audit log keeps and ``run.json`` holds.

A run reads datasets (bulk NDJSON per resource type, with each file's size and SHA-256)
and writes datasets (tables), possibly with models (id, version, artifact hash; none yet
in phase 1). :meth:`PopulationRun.manifest` — job, parameters and input files — is what
the run was asked to do; its SHA-256 (:meth:`PopulationRun.manifest_digest`) ties the
audit row to the exact input files. Counts are results and stay out of it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Status codes of a run, on the HTTP scale the audit log uses for every invocation.
COMPLETED, BAD_INPUT, FAILED = 200, 400, 500


def operator_name(explicit: str | None = None) -> str:
    """Who runs the job: ``--operator``, else ``WARDROUND_OPERATOR``, else the OS login."""
    if explicit:
        return explicit
    from_env = os.environ.get("WARDROUND_OPERATOR")
    if from_env:
        return from_env
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:unknown"


@dataclass(frozen=True)
class Dataset:
    """One dataset read or written: a resource type's files, or an output table."""

    key: str
    #: ``bulk-ndjson`` (input files), ``bulk-export`` (downloaded), ``parquet`` (written).
    source: str
    entries: int
    files: tuple[dict[str, Any], ...] = ()
    #: Lines or resources not used, by kind (never their content).
    problems: dict[str, int] = field(default_factory=dict)
    location: str | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"key": self.key, "source": self.source, "entries": self.entries}
        if self.files:
            value["files"] = list(self.files)
        if any(self.problems.values()):
            value["problems"] = {k: v for k, v in sorted(self.problems.items()) if v}
        if self.location:
            value["location"] = self.location
        return value


@dataclass
class PopulationRun:
    job: str
    operator: str
    parameters: dict[str, Any]
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    inputs: list[Dataset] = field(default_factory=list)
    outputs: list[Dataset] = field(default_factory=list)
    models: list[dict[str, str]] = field(default_factory=list)
    #: The FHIR server the data came from, when it came from one.
    fhir_server: str | None = None
    status: int = COMPLETED
    error_code: str | None = None
    error_detail: str | None = None
    duration_ms: float = 0.0

    @property
    def service_id(self) -> str:
        return f"population:{self.job}"

    def fail(self, status: int, code: str, detail: str) -> None:
        self.status, self.error_code, self.error_detail = status, code, detail

    def manifest(self) -> dict[str, Any]:
        """What the run was asked to do: job, parameters and every input file (no counts:
        they are results)."""
        return {
            "job": self.job,
            "parameters": self.parameters,
            "inputs": [
                {"key": d.key, "source": d.source, "files": list(d.files)} for d in self.inputs
            ],
        }

    def manifest_digest(self) -> str:
        text = json.dumps(self.manifest(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "service_id": self.service_id,
            "operator": self.operator,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "error_code": self.error_code,
            "error_detail": self.error_detail,
            "fhir_server": self.fhir_server,
            "manifest": self.manifest(),
            "manifest_sha256": self.manifest_digest(),
            "outputs": [d.to_json() for d in self.outputs],
            "models": self.models,
        }
