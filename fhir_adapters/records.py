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
stays at one record). NDJSON is grouped by Patient in buckets: a small export (under
:data:`GROUP_BYTES` inflated) is one bucket grouped in memory; a larger one is first spilled,
line by line, to gzip bucket files chosen by a hash of the Patient id, then each bucket is
grouped and yielded in turn, so memory follows one bucket, not the export. Every line is
read and checked before the first NDJSON record is yielded. Within a bucket, records come
in Patient id order.
"""

from __future__ import annotations

import gzip
import json
import math
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any

from fhir_adapters.bulk.references import patient_of
from fhir_adapters.synthea import resources_by_type

Resources = Mapping[str, list[dict[str, Any]]]


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


#: About how many bytes of NDJSON (inflated) are grouped in memory at once.
GROUP_BYTES = 64 * 2**20
#: How much gzip NDJSON of FHIR resources inflates (Synthea exports: about 16x): only an
#: estimate, to choose the number of buckets.
GZIP_INFLATION = 16


def bucket_count(files: list[Path], group_bytes: int = GROUP_BYTES) -> int:
    """Buckets for ``files``: their estimated inflated size over ``group_bytes``."""
    size = sum(p.stat().st_size * (GZIP_INFLATION if p.name.endswith(".gz") else 1) for p in files)
    return max(1, math.ceil(size / group_bytes))


def _ndjson_lines(files: list[Path]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(owner Patient id, type, resource, line) for every line that names a Patient."""
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
                    owner = patient_of(resource)
                    if owner:
                        yield str(owner), kind, resource, line
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordsInvalid(f"{path.name}: not readable ({type(exc).__name__})") from None


Grouped = dict[str, dict[str, list[dict[str, Any]]]]


def _group(items: Iterator[tuple[str, str, dict[str, Any]]]) -> Iterator[PatientRecord]:
    grouped: Grouped = defaultdict(lambda: defaultdict(list))
    for owner, kind, resource in items:
        grouped[owner][kind].append(resource)
    for patient_id in sorted(grouped):
        resources = dict(grouped.pop(patient_id))
        if resources.get("Patient"):
            yield PatientRecord(patient_id, resources, "ndjson")


def _bucket(owner: str, buckets: int) -> int:
    return zlib.crc32(owner.encode()) % buckets


def _spilled(folder: Path, files: list[Path], buckets: int) -> list[Path]:
    paths = [folder / f"bucket-{i:05d}.ndjson.gz" for i in range(buckets)]
    with ExitStack() as stack:
        handles = [
            stack.enter_context(gzip.open(p, "wt", encoding="utf-8", compresslevel=1))
            for p in paths
        ]
        for owner, _, _, line in _ndjson_lines(files):
            handles[_bucket(owner, buckets)].write(line if line.endswith("\n") else line + "\n")
    return paths


def _items(files: list[Path]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(owner, type, resource) of every line of ``files`` that names a Patient."""
    for owner, kind, resource, _ in _ndjson_lines(files):
        yield owner, kind, resource


def _ndjson_records(
    files: list[Path], group_bytes: int = GROUP_BYTES, spill_dir: Path | None = None
) -> Iterator[PatientRecord]:
    buckets = bucket_count(files, group_bytes)
    if buckets == 1:
        yield from _group(_items(files))
        return
    with tempfile.TemporaryDirectory(prefix="wardround-records-", dir=spill_dir) as folder:
        for path in _spilled(Path(folder), files, buckets):
            yield from _group(_items([path]))
            path.unlink()


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


def read_records(
    folder: Path, group_bytes: int = GROUP_BYTES, spill_dir: Path | None = None
) -> Iterator[PatientRecord]:
    """Every patient record in ``folder``: bundles first (file-name order), then NDJSON
    (grouped by bucket; ``spill_dir``: where large exports' bucket files go, by default the
    system's temporary folder)."""
    bundles, ndjson = _checked(folder)
    seen: set[str] = set()
    records = _ndjson_records(ndjson, group_bytes, spill_dir)
    for record in chain(_bundle_records(bundles), records):
        if record.patient_id in seen:
            raise RecordsInvalid(f"Patient {record.patient_id} appears in two places")
        seen.add(record.patient_id)
        yield record
