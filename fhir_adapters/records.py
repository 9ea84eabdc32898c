"""Patient records from files: FHIR Bundles (one patient each) or FHIR Bulk Data NDJSON.

Training and population scoring read whole records, not a hook's prefetch:

* **Bundles** — ``*.json`` / ``*.json.gz`` (and the shared data's odd ``*.json".gz``): a
  transaction, collection or searchset Bundle per patient, as Synthea writes them;
  ``urn:uuid:`` references are rewritten to ``Type/id`` (:func:`synthea.resources_by_type`).
  Bundles without a Patient (Synthea's hospital and practitioner files) are passed over.
* **Bulk NDJSON** — ``<Type>.ndjson`` / ``.ndjson.gz`` as a FHIR Bulk Data export writes
  them: one resource per line, grouped here by the Patient they reference (``subject``,
  ``patient`` or ``beneficiary``); resources that name no Patient are passed over.

A file that is not what it claims raises :class:`RecordsInvalid` naming the file (and
line), never a bare JSON error. Bundles are read one at a time, in file-name order (memory
stays at one record); NDJSON files are grouped in memory, then yielded by Patient id.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any

from fhir_adapters.synthea import resources_by_type

Resources = Mapping[str, list[dict[str, Any]]]
PATIENT_REFERENCE_FIELDS = ("subject", "patient", "beneficiary")


class RecordsInvalid(ValueError):
    """A data file is unreadable or not FHIR of the expected shape."""


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    #: resource type → resources, references as ``Type/id``.
    resources: Resources
    #: Where it came from (file name), for messages.
    source: str


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def bundle_files(folder: Path) -> list[Path]:
    names = (".json", ".json.gz", '.json".gz')
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(names))


def ndjson_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz"))
    )


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        with _open(path) as handle:
            bundle = json.load(handle)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordsInvalid(f"{path.name}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise RecordsInvalid(f"{path.name}: not a FHIR Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RecordsInvalid(f"{path.name}: Bundle.entry must be an array of objects")
    return bundle


def _bundle_records(files: list[Path]) -> Iterator[PatientRecord]:
    for path in files:
        resources = resources_by_type(_read_bundle(path))
        patients = resources.get("Patient", [])
        if not patients:
            continue  # an information bundle (organizations, practitioners)
        if len(patients) > 1:
            raise RecordsInvalid(f"{path.name}: holds {len(patients)} Patients, expected one")
        yield PatientRecord(str(patients[0].get("id")), resources, path.name)


def _patient_id(resource: dict[str, Any]) -> str | None:
    for name in PATIENT_REFERENCE_FIELDS:
        reference = resource.get(name)
        text = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(text, str) and "Patient/" in text:
            return text.rsplit("Patient/", 1)[1].split("/", 1)[0] or None
    return None


def _ndjson_records(files: list[Path]) -> Iterator[PatientRecord]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in files:
        try:
            with _open(path) as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        resource = json.loads(line)
                    except json.JSONDecodeError:
                        raise RecordsInvalid(f"{path.name}:{number}: not a JSON line") from None
                    if not isinstance(resource, dict) or "resourceType" not in resource:
                        raise RecordsInvalid(f"{path.name}:{number}: not a FHIR resource")
                    kind = str(resource["resourceType"])
                    owner = resource.get("id") if kind == "Patient" else _patient_id(resource)
                    if owner:
                        grouped[str(owner)][kind].append(resource)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordsInvalid(f"{path.name}: not readable ({type(exc).__name__})") from None
    for patient_id in sorted(grouped):
        resources = dict(grouped[patient_id])
        if resources.get("Patient"):
            yield PatientRecord(patient_id, resources, "ndjson")


def _checked(folder: Path) -> tuple[list[Path], list[Path]]:
    if not folder.is_dir():
        raise RecordsInvalid(f"{folder}: not a folder")
    bundles, ndjson = bundle_files(folder), ndjson_files(folder)
    if not bundles and not ndjson:
        raise RecordsInvalid(f"{folder}: no FHIR Bundles (*.json[.gz]) or NDJSON (*.ndjson[.gz])")
    return bundles, ndjson


def expected_records(folder: Path) -> int | None:
    """How many records :func:`read_records` will yield at most, when knowable cheaply
    (bundle files; None as soon as there is NDJSON): a progress bar's total."""
    bundles, ndjson = _checked(folder)
    return None if ndjson else len(bundles)


def read_records(folder: Path) -> Iterator[PatientRecord]:
    """Every patient record in ``folder``: bundles first (file-name order), then NDJSON."""
    bundles, ndjson = _checked(folder)
    seen: set[str] = set()
    for record in chain(_bundle_records(bundles), _ndjson_records(ndjson)):
        if record.patient_id in seen:
            raise RecordsInvalid(f"Patient {record.patient_id} appears in two places")
        seen.add(record.patient_id)
        yield record
