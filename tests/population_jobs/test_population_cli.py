"""``cds population records``: bad input, a busy output folder and a missing audit log are
refused clearly; every run that started is in the audit log, failed ones too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds.audit.population_runs import recent_runs
from cds.cli import main
from cds.db import make_engine, make_sessionmaker
from tests.population_jobs.conftest import repo_env


def _runs(database_url: str) -> list[tuple[str, int, str | None]]:
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        rows = [(r.service_id, r.status_code, r.error_code) for r in recent_runs(session)]
    engine.dispose()
    return rows


def _records(database_url: str, *args: str) -> object:
    return CliRunner().invoke(
        main,
        ["population", "records", *args, "--operator", "tester"],
        env={"DATABASE_URL": database_url},
    )


@pytest.mark.parametrize(
    ("make_input", "message", "code"),
    [
        (lambda d: d / "missing", "not a folder", "bulk_input_invalid"),
        (lambda d: d, "no .ndjson or .ndjson.gz files", "bulk_input_invalid"),
        (
            lambda d: (
                (d / "Claim.ndjson").write_text('{"resourceType": "Claim", "id": "c"}\n') and d
            ),
            "none of the record resource types",
            "no_record_types",
        ),
    ],
    ids=["missing", "empty", "no-record-types"],
)
def test_unreadable_input_is_refused_and_audited(
    database_url: str, tmp_path: Path, make_input, message: str, code: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    result = _records(database_url, str(make_input(source)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert message in result.output
    assert _runs(database_url) == [("population:records", 400, code)]
    assert not (tmp_path / "out").exists()


def test_an_existing_output_folder_is_refused_before_anything_runs(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    result = _records(database_url, str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "exists" in result.output
    assert _runs(database_url) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--conf", "spark.x"), "expected spark.KEY=VALUE"),
        (("--conf", "executor.memory=1g"), "expected spark.KEY=VALUE"),
        (("--master", "local[two]"), "expected local, local[N]"),
    ],
)
def test_a_bad_spark_setting_is_refused(
    tmp_path: Path, option: tuple[str, str], message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    result = _records(url, str(tmp_path), "--out", str(tmp_path / "o"), *option)
    assert result.exit_code == 2 and message in result.output


def test_without_an_audit_log_nothing_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    result = _records(url, str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "audit log" in result.output
    assert "cds db upgrade" in result.output or "unavailable" in result.output


def test_a_failed_spark_job_is_audited_and_publishes_nothing(small_ndjson, tmp_path: Path) -> None:
    """A real failure: Spark reads the input, then cannot write (the output's parent is a file)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "out"
    command = [sys.executable, "-m", "cds.cli", "population", "records", str(small_ndjson.root),
               "--out", str(out), "--master", "local[1]", "--no-progress"]  # fmt: skip
    done = subprocess.run(
        command, env=repo_env(DATABASE_URL=url), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1, done.stderr
    assert "records job failed" in done.stderr
    ((service, status, code),) = _runs(url)
    assert (service, status) == ("population:records", 500) and code
    assert code == "Py4JJavaError"  # raised by the write, after Spark has read the input
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "audit.db"]


def test_runs_lists_the_population_runs(database_url: str, tmp_path: Path) -> None:
    _records(database_url, str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    result = CliRunner().invoke(
        main, ["population", "runs", "--limit", "5"], env={"DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    assert "records" in result.output and "tester" in result.output and "400" in result.output
