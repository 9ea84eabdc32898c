"""Spark settings: bounded, quiet, UTC, and nothing listening beyond 127.0.0.1 on one machine."""

from __future__ import annotations

import pytest

from population.spark_session import SparkSettings, local_cores, spark_conf


def test_a_local_session_stays_on_the_loopback_and_is_bounded() -> None:
    conf = spark_conf(SparkSettings(master="local[2]"))
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false" and conf["spark.ui.showConsoleProgress"] == "false"
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert conf["spark.driver.memory"] == "2g"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "log4j2.properties" in conf["spark.driver.extraJavaOptions"]


@pytest.mark.parametrize(
    ("master", "here"),
    [
        ("spark://127.0.0.1:7077", True),
        ("spark://localhost:7077", True),
        ("spark://spark-master.example.org:7077", False),
        ("yarn", False),
    ],
)
def test_only_a_cluster_on_this_machine_gets_loopback_settings(master: str, here: bool) -> None:
    settings = SparkSettings(master=master, extra={"spark.sql.shuffle.partitions": "64"})
    conf = spark_conf(settings)
    assert ("spark.driver.host" in conf) is here
    assert ("spark.executor.extraJavaOptions" in conf) is here
    assert conf["spark.sql.shuffle.partitions"] == "64"  # extra settings come last


@pytest.mark.parametrize(
    ("master", "cores"), [("local", 1), ("local[3]", 3), ("local[2,4]", 2), ("local[*]", None)]
)
def test_local_cores(master: str, cores: int | None) -> None:
    assert local_cores(master) == (cores or local_cores("local[*]")) and local_cores(master) >= 1


@pytest.mark.parametrize("master", ["local[two]", "local[0]", "local[]", "locally"])
def test_a_malformed_local_master_is_refused(master: str) -> None:
    with pytest.raises(ValueError, match="expected local"):
        SparkSettings(master=master)
