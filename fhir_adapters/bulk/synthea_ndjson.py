"""Synthea transaction bundles → Bulk Data NDJSON, for development and tests.

Each bundle's ``urn:uuid:`` references become ``Type/id`` (:mod:`fhir_adapters.synthea`),
and every resource goes to its type's NDJSON file, as a server's ``$export`` would give
it. Resources that several bundles share (Synthea repeats its Organization and
Practitioner resources in every patient's bundle) are written once; a repeat whose
content differs is counted as a conflict (the first one is kept). Only resources that
belong to no patient are checked for repeats, so memory stays small however many
patients are converted.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fhir_adapters.bulk.ndjson import NdjsonWriter, WrittenFile
from fhir_adapters.bulk.references import patient_of
from fhir_adapters.synthea import load_bundle, resources_by_type

#: Synthea's bundles of shared resources, loaded first (as a FHIR server would need).
INFORMATION_BUNDLES = ("hospitalInformation", "practitionerInformation")


@dataclass
class ConversionSummary:
    bundles: int = 0
    patients: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    repeats: int = 0
    conflicts: int = 0
    #: (bundle file name, error kind) for each bundle that could not be read.
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: list[WrittenFile] = field(default_factory=list)


def bundle_files(folder: Path) -> list[Path]:
    """Synthea bundles (``*.json``, ``*.gz``), shared-resource bundles first."""
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith((".json", ".gz"))]
    return sorted(files, key=lambda p: (not p.name.startswith(INFORMATION_BUNDLES), p.name))


def _fingerprint(resource: dict) -> str:
    text = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def convert_bundles(
    bundles: Iterable[Path],
    out: Path,
    *,
    types: frozenset[str] | None = None,
    compress: bool = False,
    max_lines: int | None = None,
    on_bundle: Callable[[Path], None] | None = None,
) -> ConversionSummary:
    """Write the resources of ``bundles`` (only ``types``, if given) as NDJSON into ``out``."""
    summary = ConversionSummary()
    shared: dict[tuple[str, str], str] = {}
    with NdjsonWriter(out, compress=compress, max_lines=max_lines) as writer:
        for path in bundles:
            try:
                grouped = resources_by_type(load_bundle(path))
            except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as exc:
                summary.failed.append((path.name, type(exc).__name__))
                continue
            summary.bundles += 1
            for resource_type, resources in grouped.items():
                if types is not None and resource_type not in types:
                    continue
                for resource in resources:
                    if patient_of(resource) is None and not _first(resource, shared, summary):
                        continue
                    summary.patients += resource_type == "Patient"
                    summary.resources[resource_type] += 1
                    writer.write(resource)
            if on_bundle is not None:
                on_bundle(path)
        summary.files = writer.close()
    return summary


def _first(resource: dict, shared: dict[tuple[str, str], str], summary: ConversionSummary) -> bool:
    """True the first time a shared resource is seen; repeats (and conflicts) are counted."""
    key = (resource["resourceType"], str(resource.get("id")))
    fingerprint = _fingerprint(resource)
    seen = shared.get(key)
    if seen is None:
        shared[key] = fingerprint
        return True
    summary.repeats += 1
    summary.conflicts += seen != fingerprint
    return False
