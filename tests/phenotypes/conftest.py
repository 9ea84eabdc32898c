"""Fixtures of the phenotype tests: the cohort of every shared Synthea patient, built once
(about two minutes on two cores), and one fit of it."""

from __future__ import annotations

import warnings

import pytest

from tests.conftest import SYNTHEA, synthea_bundles
from tests.support.spark_cluster import spark_cluster  # noqa: F401  (a fixture)


@pytest.fixture(scope="session")
def cohort():  # type: ignore[no-untyped-def]
    from fhir_adapters.records import read_records
    from models.phenotypes.cohort import build_cohort

    synthea_bundles()  # skips (fails under CI) without the shared data
    return build_cohort(lambda: read_records(SYNTHEA), workers=2)


@pytest.fixture(scope="session")
def fitted(cohort):  # type: ignore[no-untyped-def]
    from models.phenotypes.fit import SEED, fit_phenotypes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn's HDBSCAN copy= default
        return fit_phenotypes(cohort, SEED)


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    """A ``local[2]`` SparkSession (the population tests' settings)."""
    from population.spark_session import SparkSettings, spark_session

    session = spark_session(SparkSettings(master="local[2]", driver_memory="1g"))
    yield session
    session.stop()
