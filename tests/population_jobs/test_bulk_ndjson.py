"""Bulk NDJSON folders: discovery, streamed reading with every kind of bad line, writing."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from fhir_adapters.bulk.ndjson import (
    BulkInputError,
    NdjsonWriter,
    ReadStats,
    digest_files,
    read_folder,
    read_resources,
    scan_folder,
)

SECRET = "Zebediah-Quux"  # stands for patient data: must never appear in a problem report


def _line(resource_type: str, rid: str, **extra: object) -> bytes:
    return json.dumps({"resourceType": resource_type, "id": rid, **extra}).encode() + b"\n"


def test_scan_takes_each_files_type_from_its_first_resource(tmp_path: Path) -> None:
    (tmp_path / "1.ndjson").write_bytes(_line("Observation", "o1") + _line("Observation", "o2"))
    with gzip.open(tmp_path / "Patient.000.ndjson.gz", "wb") as handle:
        handle.write(_line("Patient", "p1"))
    (tmp_path / "Patient.001.ndjson").write_bytes(b"not json\n" + _line("Patient", "p2"))
    (tmp_path / "empty.ndjson").write_bytes(b"\n\n")
    (tmp_path / "Condition.ndjson.part").write_bytes(_line("Condition", "c1"))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "_errors").mkdir()
    (tmp_path / "_errors" / "OperationOutcome.ndjson").write_bytes(_line("OperationOutcome", "e"))

    folder = scan_folder(tmp_path)

    assert [(f.name, f.resource_type) for f in folder.files] == [
        ("1.ndjson", "Observation"),
        ("Patient.000.ndjson.gz", "Patient"),
        ("Patient.001.ndjson", "Patient"),
        ("empty.ndjson", None),
    ]
    assert folder.resource_types == ("Observation", "Patient")
    assert [f.compressed for f in folder.files_of("Patient")] == [True, False]
    ids = [r["id"] for r in read_folder(folder, ("Patient",))]
    assert ids == ["p1", "p2"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no .ndjson or .ndjson.gz files"),
        ({"x.ndjson": b"[1, 2]\n{\n"}, "no FHIR resource in its first 100 lines"),
        ({"x.ndjson.gz": b"definitely not gzip"}, "unreadable (BadGzipFile)"),
    ],
)
def test_a_folder_that_is_not_bulk_data_is_refused_with_the_reason(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(BulkInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scan_folder(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BulkInputError, match="not a folder"):
        scan_folder(tmp_path / "nowhere")


def test_bad_lines_are_counted_by_kind_and_position_never_by_content(tmp_path: Path) -> None:
    lines = [
        _line("Condition", "c1"),
        b"\n",
        b'{"resourceType": "Condition", "id": "c2", "note": "' + SECRET.encode() + b'"\n',
        b'["' + SECRET.encode() + b'"]\n',
        b'{"id": "c3", "name": "' + SECRET.encode() + b'"}\n',
        _line("Observation", "o1", note=SECRET),
        b'{"resourceType": "Condition", "id": "c4", "x": "\xff\xfe' + SECRET.encode() + b'"}\n',
        _line("Condition", "c5"),
    ]
    (tmp_path / "Condition.ndjson").write_bytes(b"".join(lines))
    (file,) = scan_folder(tmp_path).files
    stats = ReadStats()

    ids = [r["id"] for r in read_resources(file, stats)]

    assert ids == ["c1", "c5"]
    assert (stats.lines, stats.resources, stats.blank) == (8, 2, 1)
    assert stats.problem_counts == {
        "invalid-json": 1,
        "not-an-object": 1,
        "no-resource-type": 1,
        "wrong-type": 1,
        "not-utf8": 1,
    }
    assert [(p.line, p.kind) for p in stats.problems] == [
        (3, "invalid-json"),
        (4, "not-an-object"),
        (5, "no-resource-type"),
        (6, "wrong-type"),
        (7, "not-utf8"),
    ]
    described = " ".join(p.describe() for p in stats.problems)
    assert SECRET not in described
    assert "Observation in a Condition file" in described
    assert stats.to_json()["problems"]["wrong-type"] == 1


def test_a_truncated_gzip_file_gives_its_complete_lines_and_says_it_was_cut(
    tmp_path: Path,
) -> None:
    whole = gzip.compress(b"".join(_line("Encounter", f"e{i}") for i in range(2000)))
    (tmp_path / "Encounter.ndjson.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (file,) = scan_folder(tmp_path).files
    stats = ReadStats()

    ids = [r["id"] for r in read_resources(file, stats)]

    assert 0 < len(ids) < 2000
    assert ids == [f"e{i}" for i in range(len(ids))]
    assert stats.problem_counts == {"truncated": 1}
    assert stats.problems[0].line == len(ids) + 1


def test_the_writer_rolls_files_and_never_leaves_a_partial_one(tmp_path: Path) -> None:
    with NdjsonWriter(tmp_path / "out", compress=True, max_lines=3) as writer:
        for i in range(7):
            writer.write({"resourceType": "Patient", "id": f"p{i}", "name": [{"text": "Åsa"}]})
        writer.write({"resourceType": "Condition", "id": "c0"})
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "Condition.000.ndjson.gz",
        "Patient.000.ndjson.gz",
        "Patient.001.ndjson.gz",
        "Patient.002.ndjson.gz",
    ]
    assert [(w.name, w.resources) for w in writer.written if w.resource_type == "Patient"] == [
        ("Patient.000.ndjson.gz", 3),
        ("Patient.001.ndjson.gz", 3),
        ("Patient.002.ndjson.gz", 1),
    ]
    folder = scan_folder(tmp_path / "out")
    patients = list(read_folder(folder, ("Patient",)))
    assert [p["id"] for p in patients] == [f"p{i}" for i in range(7)]
    assert patients[0]["name"][0]["text"] == "Åsa"

    with pytest.raises(RuntimeError), NdjsonWriter(tmp_path / "broken") as failing:
        failing.write({"resourceType": "Patient", "id": "p0"})
        raise RuntimeError("the producer failed")
    assert list((tmp_path / "broken").iterdir()) == []

    with pytest.raises(FileExistsError):
        NdjsonWriter(tmp_path / "out", compress=True, max_lines=3).write(
            {"resourceType": "Condition", "id": "c1"}
        )


def test_file_digests_are_the_sha256_of_the_stored_bytes(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(_line("Patient", "p1"))
    (tmp_path / "Patient.ndjson.gz").write_bytes(gzip.compress(_line("Patient", "p2")))
    digests = digest_files(scan_folder(tmp_path).files)
    for digest in digests:
        stored = (tmp_path / digest.name).read_bytes()
        assert digest.sha256 == hashlib.sha256(stored).hexdigest()
        assert digest.bytes == len(stored)
        assert digest.to_json()["type"] == "Patient"
