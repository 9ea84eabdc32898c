"""The records and score jobs on a real Spark standalone cluster (a master and two workers
on 127.0.0.1, started from pyspark's launcher) give the same tables as on ``local[2]``.

The cluster run goes through the ``cds population records`` command, in its own driver
process, so this also covers the command's success path: staging, audit row, run.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cds.audit import verify_chain
from cds.audit.tables import Invocation
from cds.cli import main
from cds.db import make_engine, make_sessionmaker
from fhir_adapters.bulk.ndjson import BulkFolder, digest_files
from population.records_job import input_files, planned_inputs, write_record_tables
from population.spark_rows import SPARK_BUILDERS
from tests.population_jobs.conftest import repo_env, score_command
from tests.support.spark_cluster import StandaloneCluster

TABLES = [table for table, _ in SPARK_BUILDERS.values()]


def _same_rows(spark: Any, one: Path, other: Path) -> bool:
    """The two Parquet tables hold the same rows, duplicates counted (compared in Spark)."""
    a, b = spark.read.parquet(str(one)), spark.read.parquet(str(other))
    return a.schema == b.schema and a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()


def test_the_cluster_writes_the_same_tables_as_local(
    spark: Any, spark_cluster: StandaloneCluster, synthea_ndjson: BulkFolder, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    inputs = planned_inputs(digest_files(input_files(synthea_ndjson)))
    _, written = write_record_tables(spark, synthea_ndjson, local, inputs)

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    out = tmp_path / "cluster"
    before = {a["id"] for a in spark_cluster.status()["completedapps"]}
    command = [
        sys.executable, "-m", "cds.cli", "population", "records", str(synthea_ndjson.root),
        "--out", str(out), "--master", spark_cluster.master_url, "--driver-memory", "1g",
        "--executor-memory", "1g", "--no-progress", "--operator", "ci-cluster-test",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=repo_env(DATABASE_URL=url), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]

    # the same rows, table by table
    assert sorted(p.name for p in out.iterdir()) == sorted([*TABLES, "run.json"])
    for table in TABLES:
        assert _same_rows(spark, out / table, local / table), table
    assert {d.key: d.entries for d in written}["patients"] == 299

    # it really ran on the cluster: the master lists the finished application (other
    # tests of the session may have run theirs before)
    apps = [a for a in spark_cluster.status()["completedapps"] if a["id"] not in before]
    assert [a["name"] for a in apps] == ["wardround-population"]
    assert apps[0]["cores"] == 2 or apps[0].get("coresgranted", 2) == 2

    # run.json and the audit row describe the same run, down to the input files' hashes
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == 200 and run["operator"] == "ci-cluster-test"
    for dataset in run["manifest"]["inputs"]:
        for file in dataset["files"]:
            stored = (synthea_ndjson.root / file["name"]).read_bytes()
            assert file["sha256"] == hashlib.sha256(stored).hexdigest()
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        row = session.get(Invocation, run["audit_seq"])
        assert row is not None and row.hook is None
        assert (row.service_id, row.user_id, row.hook_instance) == (
            "population:records", "ci-cluster-test", run["run_id"],
        )  # fmt: skip
        assert row.request_digest == run["manifest_sha256"]
        outputs = {d["key"]: d["entries"] for d in row.prefetch_fetched if d["source"] == "parquet"}
        assert outputs == {d.key: d.entries for d in written}
        assert verify_chain(session).ok
    engine.dispose()


def _ndjson_lines(folder: Path) -> list[str]:
    return sorted(
        line
        for path in folder.glob("RiskAssessment.*.ndjson")
        for line in path.read_text().splitlines()
    )


def test_the_cluster_scores_the_same_as_local(
    spark: Any,
    spark_cluster: StandaloneCluster,
    synthea_ndjson: BulkFolder,
    scored_by_cli: tuple[Path, str, str],
    tmp_path: Path,
) -> None:
    """``cds population score`` on the two-worker cluster: the same score table and the
    same RiskAssessments, byte for byte, as the same command on ``local[2]``."""
    local, _, _ = scored_by_cli
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    before = len(spark_cluster.status()["completedapps"])
    out = tmp_path / "cluster"
    command = score_command(synthea_ndjson.root, out, spark_cluster.master_url, "ci-cluster-test")
    done = subprocess.run(
        command, env=repo_env(DATABASE_URL=url), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(spark_cluster.status()["completedapps"]) == before + 1

    assert _same_rows(spark, out / "scores", local / "scores")
    assert spark.read.parquet(str(out / "scores")).count() == 299 * 2
    cluster_lines = _ndjson_lines(out / "fhir")
    assert cluster_lines and cluster_lines == _ndjson_lines(local / "fhir")

    run = json.loads((out / "run.json").read_text())
    local_run = json.loads((local / "run.json").read_text())
    assert run["models"] == local_run["models"] and run["scores"] == local_run["scores"]
    assert run["manifest"]["parameters"]["master"] == spark_cluster.master_url
