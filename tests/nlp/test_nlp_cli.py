"""`cds nlp label`: CSV and JSON Lines in, one JSON line per document out (real model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from cds.cli import main


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["nlp", "label", *args], catch_exceptions=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_csv_with_a_text_column(tmp_path: Path) -> None:
    source = tmp_path / "reports.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerow(["r1", "IMPRESSION: Small right pneumothorax. No effusion."])
        writer.writerow(["r2", "Lungs are clear. No acute cardiopulmonary process."])
        writer.writerow(["r3", ""])
    out = tmp_path / "out.jsonl"
    result = _run(str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    first, second, third = _lines(out)
    assert first["id"] == "r1"
    by_label = {f["label"]: f for f in first["findings"]}
    assert by_label["pneumothorax"]["assertion"] == "present"
    assert by_label["pneumothorax"]["evidence"] == "Small right pneumothorax."
    assert by_label["pleural_effusion"]["assertion"] == "absent"
    assert set(by_label["pneumothorax"]) == {"label", "assertion", "probability", "evidence"}
    assert {f["label"] for f in second["findings"]} == {"no_acute_finding"}
    assert third == {"id": "r3", "findings": [], "error": "no text"}
    assert "3 documents" in result.stderr and "labelling" in result.stderr  # progress bar


def test_iu_columns_and_uid(tmp_path: Path) -> None:
    source = tmp_path / "iu.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "Problems", "findings", "impression"])
        writer.writerow(["7", "normal", "No pneumothorax.", "Stable 6 mm nodule, XXXX."])
    result = _run(str(source))
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["id"] == "7"
    labels = {f["label"]: f["assertion"] for f in record["findings"]}
    assert labels["pneumothorax"] == "absent" and labels["lung_nodule_mass"] == "present"


def test_jsonl_bad_lines_become_error_records_in_order(tmp_path: Path) -> None:
    source = tmp_path / "notes.jsonl"
    source.write_text(
        '{"id": "a", "note": "Possible left lower lobe pneumonia."}\n'
        "{not json\n"
        '["a list"]\n'
        '{"id": "d", "note": 42}\n'
        '{"note": "No fracture."}\n'
    )
    result = _run(str(source), "--text-column", "note")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["a", "line 2", "line 3", "d", "line 5"]
    assert records[0]["findings"][0]["assertion"] == "uncertain"
    assert records[1]["error"] == "line 2: not valid JSON"
    assert records[2]["error"] == "line 3: not a JSON object"
    assert "no text" in records[3]["error"]
    assert records[4]["findings"][0] | {"probability": 0} == {
        "label": "fracture", "assertion": "absent", "probability": 0, "evidence": "No fracture.",
    }  # fmt: skip


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "other.csv"
    source.write_text("id,body\n1,No pneumothorax.\n")
    result = _run(str(source))
    assert result.exit_code == 2 and "--text-column" in result.output
    result = _run(str(source), "--text-column", "body", "--id-column", "nope")
    assert result.exit_code == 2 and "no id column 'nope'" in result.output
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,text\n1,Épanchement pleural\xe9\n".encode("latin-1"))
    result = _run(str(latin1))
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert _run(str(tmp_path / "missing.csv")).exit_code == 2


def test_train_and_evaluate_say_what_data_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WARDROUND_SHARED_DATA", str(tmp_path))
    result = CliRunner().invoke(main, ["nlp", "train"])
    assert result.exit_code == 1 and "IU X-ray reports not found" in result.output
    other = tmp_path / "other.csv"
    other.write_text("uid,Problems,findings,impression\n1,normal,No effusion.,Normal.\n")
    result = CliRunner().invoke(main, ["nlp", "evaluate", "--data", str(other)])
    assert result.exit_code == 1 and "test reports are not in the data" in result.output
