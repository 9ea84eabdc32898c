"""The scale generator: N patients, new ids, consistent references and dates, marked synthetic."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds.cli import main
from fhir_adapters.bulk.ndjson import BulkFolder, read_folder, scan_folder
from fhir_adapters.bulk.references import patient_of
from fhir_adapters.bulk.synthetic_clones import (
    CLONE_IDENTIFIER_SYSTEM,
    SYNTHETIC_TAG,
    clone_folder,
    clone_id,
    copies,
    is_synthetic_clone,
    shift_date,
    shift_days,
)
from fhir_adapters.record_rows import iter_record_rows

CLINICAL = frozenset({"Patient", "Condition", "Observation", "MedicationRequest", "Encounter"})
REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/(.+)$")


@pytest.mark.parametrize(
    ("value", "days", "moved"),
    [
        ("2020-03-01", 1, "2020-02-29"),
        ("2020-03-01T09:38:05.903+02:00", 366, "2019-03-01T09:38:05.903+02:00"),
        ("2020-03-01T00:00:00Z", 1, "2020-02-29T00:00:00Z"),
        ("2020-03", 40, "2020-01"),
        ("2020", 400, "2018"),
        ("2020-13-01", 5, "2020-13-01"),
        ("Moderna", 5, "Moderna"),
    ],
)
def test_dates_move_back_whole_days_keeping_precision_and_offset(
    value: str, days: int, moved: str
) -> None:
    assert shift_date(value, days) == moved


@pytest.mark.parametrize(
    ("sources", "target"), [(299, 600), (299, 10_000), (8, 3), (8, 8), (7, 23)]
)
def test_copies_add_up_to_exactly_the_target(sources: int, target: int) -> None:
    assert sum(len(copies(i, sources, target)) for i in range(sources)) == target
    assert all(copies(i, sources, target)[:1] in (range(0, 1), range(0)) for i in range(sources))


def test_clones_are_consistent_copies_marked_synthetic(
    small_ndjson: BulkFolder, tmp_path: Path
) -> None:
    sources = list(read_folder(small_ndjson, tuple(CLINICAL)))
    source_patients = sorted(r["id"] for r in sources if r["resourceType"] == "Patient")
    target = 3 * len(source_patients) - 2

    summary = clone_folder(small_ndjson, tmp_path / "out", target, types=CLINICAL, max_lines=500)

    out = scan_folder(tmp_path / "out")
    assert set(out.resource_types) == CLINICAL
    resources = list(read_folder(out))
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == summary.patients == target
    keys = [(r["resourceType"], r["id"]) for r in resources]
    assert len(keys) == len(set(keys))

    # copy 0 is the source itself; every clone is tagged and identified as one
    originals = {(r["resourceType"], r["id"]): r for r in sources}
    clones = [r for r in resources if (r["resourceType"], r["id"]) not in originals]
    kept = [r for r in resources if (r["resourceType"], r["id"]) in originals]
    assert kept and all(originals[(r["resourceType"], r["id"])] == r for r in kept)
    assert clones and all(is_synthetic_clone(r) for r in clones)
    assert all(SYNTHETIC_TAG in r["meta"]["tag"] for r in clones)
    clone_patients = [r for r in clones if r["resourceType"] == "Patient"]
    assert all(
        [i["system"] for i in p["identifier"]] == [CLONE_IDENTIFIER_SYSTEM] for p in clone_patients
    )

    # references to cloned resources resolve in the output; shared ones are the source's
    present = set(keys)
    shared = {(r["resourceType"], r["id"]) for r in read_folder(small_ndjson)}
    for resource in clones:
        for reference in _references(resource):
            found = REFERENCE.match(reference)
            assert found, reference
            key = (found.group(1), found.group(2))
            assert key in (present if key[0] in CLINICAL else shared), reference

    # a clone's record rows are its source's, under the clone's ids and moved dates
    rows_by_patient: dict[str, Counter[object]] = defaultdict(Counter)
    for _, row in iter_record_rows(iter(resources)):
        rows_by_patient[row.patient_id][row] += 1
    for index, source_id in enumerate(source_patients):
        for copy in copies(index, len(source_patients), target)[1:]:
            days = shift_days(source_id, copy)
            expected = Counter(
                {_as_clone(row, copy, days): n for row, n in rows_by_patient[source_id].items()}
            )
            assert rows_by_patient[clone_id(source_id, copy)] == expected


def _references(value: object) -> list[str]:
    if isinstance(value, dict):
        return [
            ref
            for key, item in value.items()
            for ref in (
                [item] if key == "reference" and isinstance(item, str) else _references(item)
            )
            if not ref.startswith("#")
        ]
    if isinstance(value, list):
        return [ref for item in value for ref in _references(item)]
    return []


def _as_clone(row: object, copy: int, days: int) -> object:
    """What ``row`` of a source patient becomes in copy ``copy`` (ids mapped, dates moved)."""
    changes: dict[str, object] = {}
    for field in fields(row):  # type: ignore[arg-type]
        value = getattr(row, field.name)
        if field.name.endswith("_id") and isinstance(value, str):
            changes[field.name] = clone_id(value, copy)
        elif field.name == "synthetic_clone":
            changes[field.name] = True
        elif hasattr(value, "year") and value is not None:
            changes[field.name] = value - timedelta(days=days)
    return replace(row, **changes)  # type: ignore[type-var]


def test_the_clone_command_refuses_a_folder_without_bulk_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["population", "clone", str(tmp_path), str(tmp_path / "out"), "-n", "10"]
    )
    assert result.exit_code == 1
    assert "no .ndjson or .ndjson.gz files" in result.output


def test_the_clone_command_says_what_it_wrote(small_ndjson: BulkFolder, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["population", "clone", str(small_ndjson.root), str(tmp_path / "out"), "-n", "20",
         "--types", "Patient,Condition", "--gzip"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "20 patients from 8" in result.output
    assert "throughput tests only" in result.output
    patients = [r for r in read_folder(scan_folder(tmp_path / "out")) if patient_of(r) == r["id"]]
    assert len(patients) == 20
