"""Fixtures of the population tests: the shared Synthea patients as bulk NDJSON, Spark.

One Spark session (``local[2]``) serves the whole test session: a JVM start costs
seconds. Code that starts its own Spark (the ``cds population records`` command) runs in
a subprocess, since a process can hold only one SparkContext.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_adapters.bulk.ndjson import BulkFolder, scan_folder
from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles
from tests.conftest import synthea_bundles
from tests.support.spark_cluster import spark_cluster  # noqa: F401  (a fixture)


@pytest.fixture(scope="session")
def small_ndjson(tmp_path_factory: pytest.TempPathFactory) -> BulkFolder:
    """The first eight shared patients (and the shared hospital bundle) as bulk NDJSON."""
    from tests.conftest import SYNTHEA

    bundles = bundle_files(SYNTHEA)
    if not bundles:
        synthea_bundles()
    out = tmp_path_factory.mktemp("small-ndjson") / "bulk"
    convert_bundles(bundles[:9], out)
    return scan_folder(out)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A ``local[2]`` SparkSession for the test session."""
    try:
        from population.spark_session import SparkSettings, spark_session
    except ImportError as exc:  # pragma: no cover - pyspark is a dependency
        if os.environ.get("CI"):
            pytest.fail(f"pyspark missing: {exc}")
        pytest.skip(f"pyspark missing: {exc}")
    session = spark_session(SparkSettings(master="local[2]", driver_memory="1g"))
    yield session
    session.stop()


def repo_env(**extra: str) -> dict[str, str]:
    """The environment for a ``cds`` subprocess: this checkout's code first."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def python_rows(synthea_ndjson: BulkFolder) -> dict[str, list[object]]:
    """Record rows of every shared patient, built by the Python reference builders."""
    from fhir_adapters.bulk.ndjson import read_folder
    from fhir_adapters.record_rows import RESOURCE_TYPES, iter_record_rows

    rows: dict[str, list[object]] = {}
    invalid: list[str] = []
    resources = read_folder(synthea_ndjson, tuple(sorted(RESOURCE_TYPES)))
    for table, row in iter_record_rows(resources, invalid.append):
        rows.setdefault(table, []).append(row)
    assert invalid == []
    return rows


#: The population jobs' as-of day in tests: inside the shared records (most end 2020-21).
AS_OF = date(2020, 6, 30)


@pytest.fixture(scope="session")
def synthea_records() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every shared patient's resources by type (from the bundles), by patient id."""
    from fhir_adapters.synthea import load_bundle, resources_by_type

    records = {}
    for bundle in synthea_bundles():
        resources = resources_by_type(load_bundle(bundle))
        if "Patient" in resources:
            records[resources["Patient"][0]["id"]] = resources
    return records


@pytest.fixture(scope="session")
def contexts_as_of(
    synthea_records: dict[str, dict[str, list[dict[str, Any]]]],
) -> Callable[[date], dict[str, Any]]:
    """The hook path: each shared patient's PatientContext on a day (cached per day)."""
    from models.risk.evidence import as_of_datetime
    from models.risk.training.dataset import context_as_of

    cache: dict[date, dict[str, Any]] = {}

    def contexts(day: date) -> dict[str, Any]:
        if day not in cache:
            at = as_of_datetime(day)
            cache[day] = {
                pid: context_as_of(resources, pid, at) for pid, resources in synthea_records.items()
            }
        return cache[day]

    return contexts


def score_command(source: Path, out: Path, master: str, operator: str) -> list[str]:
    import sys

    return [
        sys.executable, "-m", "cds.cli", "population", "score", str(source), "--out", str(out),
        "--master", master, "--as-of", AS_OF.isoformat(), "--driver-memory", "1g",
        "--executor-memory", "1g", "--no-progress", "--operator", operator,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def scored_by_cli(
    synthea_ndjson: BulkFolder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """``cds population score`` run once on ``local[2]`` over every shared patient:
    (output folder, audit database URL, the command's stdout)."""
    import subprocess

    from click.testing import CliRunner

    from cds.cli import main

    folder = tmp_path_factory.mktemp("score-cli")
    url = f"sqlite:///{folder / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    out = folder / "out"
    done = subprocess.run(
        score_command(synthea_ndjson.root, out, "local[2]", "ci-score-test"),
        env=repo_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, url, done.stdout
