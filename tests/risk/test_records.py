"""Patient records from bundles and bulk NDJSON; moving a record in time (demos, tests)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from fhir_adapters.records import (
    RecordsInvalid,
    bucket_count,
    expected_records,
    ndjson_files,
    read_records,
)
from fhir_adapters.synthea import load_bundle, resources_by_type
from fhir_adapters.time_shift import days_between, shift_record, shift_value
from tests.conftest import SYNTHEA, synthea_bundles


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for source in synthea_bundles()[:3]:
        shutil.copy(source, folder / source.name)
    shutil.copy(next(SYNTHEA.glob("hospitalInformation*")), folder)
    return folder


def _as_ndjson(bundle_folder: Path, out: Path) -> Path:
    """Write the bundles' patients as a FHIR Bulk Data export (one file per type)."""
    out.mkdir()
    by_type: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(bundle_folder.glob("*.json.gz")):
        resources = resources_by_type(load_bundle(path))
        if "Patient" in resources:
            for kind, items in resources.items():
                by_type[kind] += items
    for kind, items in by_type.items():
        with gzip.open(out / f"{kind}.ndjson.gz", "wt") as handle:
            handle.writelines(json.dumps(item) + "\n" for item in items)
    return out


def test_bundles_and_ndjson_give_the_same_records(bundles: Path, tmp_path: Path):
    from_bundles = {r.patient_id: r for r in read_records(bundles)}
    assert len(from_bundles) == 3 and expected_records(bundles) == 4
    ndjson = _as_ndjson(bundles, tmp_path / "ndjson")
    from_ndjson = {r.patient_id: r for r in read_records(ndjson)}
    assert expected_records(ndjson) is None
    assert set(from_ndjson) == set(from_bundles)
    for patient_id, record in from_bundles.items():
        other = from_ndjson[patient_id]
        patient_owned = {k for k in record.resources if k not in ("Organization", "Practitioner")}
        for kind in patient_owned:
            ids = sorted(r["id"] for r in record.resources[kind])
            assert sorted(r["id"] for r in other.resources.get(kind, [])) == ids, kind


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.json", "{not json", "broken.json: not readable JSON"),
        ("patient.json", json.dumps({"resourceType": "Patient"}), "not a FHIR Bundle"),
        ("two.json", json.dumps({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Patient", "id": "a"}},
            {"resource": {"resourceType": "Patient", "id": "b"}}]}), "holds 2 Patients"),
        ("Observation.ndjson", '{"resourceType": "Observation"}\nnot json\n',
         "Observation.ndjson:2: not a JSON line"),
        ("Patient.ndjson", "[1, 2]\n", "Patient.ndjson:1: not a FHIR resource"),
    ],
)  # fmt: skip
def test_bad_files_are_named_in_the_error(tmp_path: Path, name: str, content: str, message: str):
    (tmp_path / name).write_text(content)
    with pytest.raises(RecordsInvalid, match=message.replace("(", r"\(")):
        list(read_records(tmp_path))


def test_an_empty_folder_a_file_and_a_patient_twice_are_refused(tmp_path: Path, bundles: Path):
    with pytest.raises(RecordsInvalid, match="no FHIR Bundles"):
        list(read_records(tmp_path))
    with pytest.raises(RecordsInvalid, match="not a folder"):
        list(read_records(tmp_path / "missing"))
    twice = tmp_path / "twice"
    shutil.copytree(bundles, twice)
    first = synthea_bundles()[0]
    shutil.copy(first, twice / f"copy-{first.name}")
    with pytest.raises(RecordsInvalid, match="appears in two places"):
        list(read_records(twice))


def test_time_shift_moves_full_dates_and_keeps_partial_ones():
    assert shift_value("2021-03-31", 2) == "2021-04-02"
    assert shift_value("2021-03-31T10:00:00Z", 1) == "2021-04-01T10:00:00Z"
    assert shift_value("2021-03-31T10:00:00+02:00", -1) == "2021-03-30T10:00:00+02:00"
    assert shift_value("2021-03", 40) == "2021-03"
    assert shift_value("not a date", 3) == "not a date"
    assert days_between(date(2021, 3, 31), date(2021, 4, 30)) == 30


def test_a_shifted_record_keeps_every_interval():
    resources = resources_by_type(load_bundle(synthea_bundles()[0]))
    shifted = shift_record(resources, 1000)
    patient, moved = resources["Patient"][0], shifted["Patient"][0]
    birth = date.fromisoformat(patient["birthDate"])
    assert date.fromisoformat(moved["birthDate"]) == birth + timedelta(days=1000)
    for before, after in zip(resources["Encounter"], shifted["Encounter"], strict=True):
        assert after["id"] == before["id"]
        start = datetime.fromisoformat(before["period"]["start"])
        assert datetime.fromisoformat(after["period"]["start"]) == start + timedelta(days=1000)
    assert resources["Patient"][0] == patient, "the input is not modified"


def _resource_ids(record) -> dict[str, list[str]]:
    return {kind: sorted(r["id"] for r in items) for kind, items in record.resources.items()}


def test_a_large_export_is_grouped_through_bucket_files_to_the_same_records(tmp_path: Path):
    """Forced to many buckets (a tiny in-memory share), the NDJSON reader spills lines to
    bucket files by patient and gives the very records it gives in memory; the bucket files
    are gone afterwards."""
    ndjson = _as_ndjson(SYNTHEA, tmp_path / "ndjson")
    in_memory = list(read_records(ndjson, group_bytes=2**40))
    assert bucket_count(ndjson_files(ndjson), group_bytes=2**40) == 1
    assert [r.patient_id for r in in_memory] == sorted(r.patient_id for r in in_memory)
    spill = tmp_path / "spill"
    spill.mkdir()
    buckets = bucket_count(ndjson_files(ndjson), group_bytes=2**20)
    assert buckets > 10
    seen_folders: set[str] = set()
    spilled = []
    for record in read_records(ndjson, group_bytes=2**20, spill_dir=spill):
        spilled.append(record)
        seen_folders.update(p.name for p in spill.iterdir())
        if len(spilled) == 1:
            (folder,) = spill.iterdir()
            assert len(list(folder.glob("bucket-*.ndjson.gz"))) == buckets
    assert len(seen_folders) == 1 and not list(spill.iterdir())
    assert len(spilled) == len(in_memory) > 250
    by_id = {r.patient_id: r for r in spilled}
    assert len(by_id) == len(spilled)
    for record in in_memory:
        assert _resource_ids(by_id[record.patient_id]) == _resource_ids(record)
        assert by_id[record.patient_id].resources == record.resources


def test_a_bad_line_in_a_large_export_stops_the_read_before_any_record(tmp_path: Path):
    ndjson = _as_ndjson(SYNTHEA, tmp_path / "ndjson")
    with gzip.open(ndjson / "Observation.ndjson.gz", "at") as handle:
        handle.write("{broken\n")
    records = read_records(ndjson, group_bytes=2**20, spill_dir=tmp_path)
    with pytest.raises(RecordsInvalid, match=r"Observation.ndjson.gz:\d+: not a JSON line"):
        next(records)
    assert [p.name for p in tmp_path.iterdir()] == ["ndjson"], "no bucket files left behind"
