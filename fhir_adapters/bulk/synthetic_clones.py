"""Scale generator: a bulk folder grown to N patients by cloning, for throughput tests ONLY.

Clones are synthetic copies of real (here: Synthea) patients, so their statistics are the
source's, repeated: never train or measure a model on them. Every cloned resource says so
in ``meta.tag`` (:data:`SYNTHETIC_TAG`), and a cloned Patient's only identifier names its
source (:data:`CLONE_IDENTIFIER_SYSTEM`, ``<source id>#<copy>``).

Copy 0 of each patient is the source itself, unchanged; copy ``k`` ≥ 1 gets

* new ids, ``uuid5(namespace, "<k>/<old id>")`` for the patient and every resource that
  belongs to a patient, with every reference to them rewritten the same way (references
  to shared resources — Organization, Practitioner, … — are kept);
* every date moved back by the same whole number of days (1 to 3,650, fixed per patient
  and copy), keeping each value's precision and time-zone offset, so intervals, ages at
  each event and the order of events are the source's;
* no business identifiers other than the clone identifier.

Patients are taken in id order, copy after copy, until N: patient ``i`` of ``S`` gets the
copies ``k`` with ``k·S + i < N``. The whole thing streams file by file; only the source
patients' ids are held in memory.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir_adapters.bulk.ndjson import (
    BulkFolder,
    NdjsonWriter,
    ReadStats,
    WrittenFile,
    read_resources,
)
from fhir_adapters.bulk.references import patient_of

SYNTHETIC_SYSTEM = "urn:wardround:synthetic-data"
SYNTHETIC_TAG = {
    "system": SYNTHETIC_SYSTEM,
    "code": "synthetic-clone",
    "display": "Synthetic clone for throughput tests; not for model training or metrics",
}
CLONE_IDENTIFIER_SYSTEM = "urn:wardround:synthetic-clone"
CLONE_NAMESPACE = uuid.UUID("5d6f3a52-8c1e-4d0b-9a57-3e2f1c7b9a10")
MAX_SHIFT_DAYS = 3650

#: Element names that hold a FHIR date, dateTime or instant (with the suffix rule below).
DATE_ELEMENTS = frozenset(
    {"start", "end", "issued", "created", "authoredOn", "started", "date", "recorded", "sent"}
)
DATE_SUFFIXES = ("Date", "DateTime", "Instant")
_FHIR_DATE = re.compile(r"^(\d{4})(-(\d{2})(-(\d{2}))?)?(T.*)?$")
#: ``[...]Type/id`` at the end of a reference; group 1 is the type, group 2 the id.
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def is_synthetic_clone(resource: dict[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(
        isinstance(t, dict)
        and t.get("system") == SYNTHETIC_SYSTEM
        and t.get("code") == "synthetic-clone"
        for t in tags
    )


def clone_id(resource_id: str, copy: int) -> str:
    return str(uuid.uuid5(CLONE_NAMESPACE, f"{copy}/{resource_id}"))


def shift_days(patient_id: str, copy: int) -> int:
    """Days copy ``copy`` of ``patient_id`` is moved back in time (1 … MAX_SHIFT_DAYS)."""
    return 1 + uuid.uuid5(CLONE_NAMESPACE, f"shift/{copy}/{patient_id}").int % MAX_SHIFT_DAYS


def shift_date(value: str, days: int) -> str:
    """``value`` moved back ``days`` days, same precision and offset (unchanged if not a date)."""
    found = _FHIR_DATE.match(value)
    if found is None:
        return value
    year, month, day, rest = found.group(1), found.group(3), found.group(5), found.group(6)
    try:
        moved = date(int(year), int(month or 1), int(day or 1)) - timedelta(days=days)
    except ValueError:
        return value
    if month is None:
        return f"{moved.year:04d}"
    if day is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + (rest or "")


def _is_date_element(name: str) -> bool:
    return name in DATE_ELEMENTS or name.endswith(DATE_SUFFIXES)


class _Copier:
    """Builds copy ``copy`` of one patient's resources (see the module docstring)."""

    def __init__(self, copy: int, days: int, cloned_types: frozenset[str]) -> None:
        self.copy = copy
        self.days = days
        self.cloned_types = cloned_types

    def reference(self, value: str) -> str:
        found = _REFERENCE.search(value)
        if found is None or found.group(1) not in self.cloned_types:
            return value
        start = found.start(1)
        return f"{value[:start]}{found.group(1)}/{clone_id(found.group(2), self.copy)}"

    def walk(self, value: Any, name: str = "") -> Any:
        if isinstance(value, dict):
            return {key: self.walk(item, key) for key, item in value.items()}
        if isinstance(value, list):
            return [self.walk(item, name) for item in value]
        if isinstance(value, str):
            if name == "reference":
                return self.reference(value)
            if _is_date_element(name):
                return shift_date(value, self.days)
        return value

    def resource(self, resource: dict[str, Any], source_patient: str) -> dict[str, Any]:
        meta = resource.get("meta")
        body = {k: v for k, v in resource.items() if k not in ("meta", "identifier", "text")}
        copied = self.walk(body)
        copied["id"] = clone_id(str(resource["id"]), self.copy)
        kept = {k: v for k, v in (meta or {}).items() if k in ("profile", "security", "tag")}
        copied["meta"] = {**kept, "tag": [*kept.get("tag", []), SYNTHETIC_TAG]}
        if resource["resourceType"] == "Patient":
            copied["identifier"] = [
                {"system": CLONE_IDENTIFIER_SYSTEM, "value": f"{source_patient}#{self.copy}"}
            ]
        return copied


@dataclass
class CloneSummary:
    source_patients: int = 0
    patients: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    #: Resources of a patient not in the source's Patient files, or without an id (dropped).
    orphans: int = 0
    read: ReadStats = field(default_factory=ReadStats)
    files: list[WrittenFile] = field(default_factory=list)


def copies(index: int, sources: int, target: int) -> range:
    """Copy numbers of source patient ``index`` (of ``sources``) to reach ``target`` patients."""
    if index >= target:
        return range(0)
    return range(0, (target - index + sources - 1) // sources)


def _cloned_types(folder: BulkFolder, stats: ReadStats) -> frozenset[str]:
    """Types whose resources belong to a patient (judged by each file's first resource)."""
    kinds = {"Patient"}
    for file in folder.files:
        for resource in read_resources(file, stats):
            if patient_of(resource) is not None:
                kinds.add(str(file.resource_type))
            break
    return frozenset(kinds)


def clone_folder(
    source: BulkFolder,
    out: Path,
    patients: int,
    *,
    types: frozenset[str] | None = None,
    compress: bool = False,
    max_lines: int | None = None,
    on_resources: Callable[[int], None] | None = None,
) -> CloneSummary:
    """Write ``patients`` patients (sources and their clones) into ``out`` as NDJSON."""
    if patients < 1:
        raise ValueError("patients must be at least 1")
    summary = CloneSummary()
    source_ids = sorted(
        {str(r["id"]) for f in source.files_of("Patient") for r in read_resources(f) if "id" in r}
    )
    if not source_ids:
        raise ValueError("the source folder has no Patient resources")
    summary.source_patients = len(source_ids)
    index = {patient_id: i for i, patient_id in enumerate(source_ids)}
    cloned_types = _cloned_types(source, ReadStats())
    with NdjsonWriter(out, compress=compress, max_lines=max_lines) as writer:
        for file in source.files:
            kind = file.resource_type
            if kind is None or (types is not None and kind not in types and kind != "Patient"):
                continue
            done = 0
            for resource in read_resources(file, summary.read):
                done += _write_copies(resource, index, patients, cloned_types, writer, summary)
                if on_resources is not None and done >= 1000:
                    on_resources(done)
                    done = 0
            if on_resources is not None and done:
                on_resources(done)
        summary.files = writer.close()
    summary.patients = summary.resources["Patient"]
    return summary


def _write_copies(
    resource: dict[str, Any],
    index: dict[str, int],
    target: int,
    cloned_types: frozenset[str],
    writer: NdjsonWriter,
    summary: CloneSummary,
) -> int:
    kind = resource["resourceType"]
    patient = patient_of(resource) if kind in cloned_types else None
    if patient is None:  # shared (Organization, Practitioner, …): once
        writer.write(resource)
        summary.resources[kind] += 1
        return 1
    position = index.get(patient)
    if position is None or not isinstance(resource.get("id"), str):
        summary.orphans += 1
        return 0
    written = 0
    for copy in copies(position, len(index), target):
        if copy == 0:
            writer.write(resource)
        else:
            copier = _Copier(copy, shift_days(patient, copy), cloned_types)
            writer.write(copier.resource(resource, patient))
        written += 1
    summary.resources[kind] += written
    return written
