"""Synthea transaction bundles → bulk NDJSON: every resource once, every reference resolved."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from cds.cli import main
from fhir_adapters.bulk.ndjson import BulkFolder, read_folder, scan_folder
from fhir_adapters.bulk.references import patient_of
from fhir_adapters.bulk.synthea_ndjson import bundle_files
from fhir_adapters.synthea import load_bundle
from tests.conftest import SYNTHEA

REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]+)$")


#: Every reference value in a line of compact JSON (the converter writes no spaces).
REFERENCE_VALUE = re.compile(rb'"reference":"([^"]*)"')


def test_every_bundle_resource_is_written_once_with_references_resolved(
    synthea_ndjson: BulkFolder,
) -> None:
    expected: Counter[str] = Counter()
    shared: set[tuple[str, str]] = set()
    for path in bundle_files(SYNTHEA):
        for entry in load_bundle(path)["entry"]:
            resource = entry["resource"]
            key = (resource["resourceType"], resource["id"])
            if resource["resourceType"] in ("Organization", "Practitioner"):
                if key in shared:
                    continue
                shared.add(key)
            expected[resource["resourceType"]] += 1

    resources = list(read_folder(synthea_ndjson))
    lines = [line for f in synthea_ndjson.files for line in f.path.read_bytes().splitlines()]
    written = Counter(r["resourceType"] for r in resources)
    assert written == expected
    assert written["Patient"] == len([p for p in bundle_files(SYNTHEA) if "hospital" not in p.name])
    keys = {(r["resourceType"], r["id"]) for r in resources}
    assert len(keys) == len(resources)  # no resource twice

    references = [m.decode() for line in lines for m in REFERENCE_VALUE.findall(line)]
    assert len(references) > len(resources)
    assert not [ref for ref in references if ref.startswith("urn:uuid:")]
    relative = [REFERENCE.match(ref) for ref in references if not ref.startswith("#")]
    assert all(relative)
    dangling = [m.group(0) for m in relative if m and (m.group(1), m.group(2)) not in keys]
    assert dangling == []
    linked = [r for r in resources if r["resourceType"] not in ("Organization", "Practitioner")]
    assert all(patient_of(r) is not None for r in linked)


def test_the_convert_command_writes_gzip_parts_and_names_an_unreadable_bundle(
    tmp_path: Path,
) -> None:
    source = tmp_path / "bundles"
    source.mkdir()
    for path in bundle_files(SYNTHEA)[:3]:
        (source / path.name).write_bytes(path.read_bytes())
    (source / "broken.json.gz").write_bytes(gzip.compress(b'{"resourceType": "Bundle", "ent'))
    out = tmp_path / "bulk"

    result = CliRunner().invoke(
        main,
        ["population", "convert", str(source), str(out), "--gzip", "--max-lines", "40"],
    )

    assert result.exit_code == 1, result.output
    assert "broken.json.gz" in result.output and "JSONDecodeError" in result.output
    folder = scan_folder(out)
    assert all(f.name.endswith(".ndjson.gz") for f in folder.files)
    observation_files = folder.files_of("Observation")
    assert len(observation_files) >= 2
    first = observation_files[0]
    with gzip.open(first.path, "rt") as handle:
        assert sum(1 for _ in handle) == 40
    patients = [r for r in read_folder(folder) if r["resourceType"] == "Patient"]
    assert len(patients) == 2  # the hospital bundle and two patients were readable
