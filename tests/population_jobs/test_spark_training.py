"""The training data set on Spark equals the single-machine one; ``cds population train``.

On every shared Synthea patient (bulk NDJSON), :func:`population.training_set.training_set`
gives, for each learned risk model, the same (patient, index date) rows, labels and
feature values as ``models.risk.training.dataset.build_dataset`` with ``label`` (what
``cds models train`` fits on); :func:`labelled_index` gives the same eligible, uncensored
index dates and labels for every surveyed outcome too (the ``requires`` and
exclude-prior rules). The command trains a model with xgboost.spark into an artifact that
``models.risk.learned.load`` loads, whose held-out AUROC is within :data:`AUROC_TOLERANCE`
of the single-machine trainer's on the same data.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fhir_adapters.bulk.ndjson import BulkFolder
from fhir_adapters.records import read_records
from models.risk.catalog import LEARNED_MODELS, SURVEYED_OUTCOMES
from models.risk.learned import load
from models.risk.training.dataset import Dataset, build_dataset, label
from models.risk.training.fit import is_test_patient
from models.risk.training.train import COMPARATORS, _comparator_functions
from tests.population_jobs.conftest import repo_env

#: |Spark held-out AUROC - single-machine held-out AUROC| allowed: the same rows, split,
#: hyper-parameters and calibration; the trees differ by the CV's rounds (fold means
#: vs ``xgb.cv``'s averaged curve) and xgboost.spark's row order (subsampling draws).
AUROC_TOLERANCE = 0.05
TRAINED = "acute-care-1y"


def _us(when: datetime) -> int:
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def _index_specs(spec: Any) -> list[Any]:
    return [*SURVEYED_OUTCOMES, *(s for s in LEARNED_MODELS.values() if s is not spec)]


@pytest.fixture(scope="module")
def single_machine(synthea_ndjson: BulkFolder) -> Dataset:
    """``cds models train``'s data set of both learned models (their survey included)."""
    return build_dataset(
        read_records(synthea_ndjson.root),
        list(LEARNED_MODELS.values()),
        workers=2,
        survey=SURVEYED_OUTCOMES,
        comparators=_comparator_functions(list(LEARNED_MODELS.values())),
    )


@pytest.fixture(scope="module")
def tables(spark: Any, synthea_ndjson: BulkFolder) -> dict[str, Any]:
    from population.features import record_tables

    return {name: frame.cache() for name, frame in record_tables(spark, synthea_ndjson).items()}


def _spark_rows(frame: Any, names: list[str]) -> dict[tuple[str, int], tuple[int, tuple]]:
    from pyspark.sql import functions as F

    rows = frame.select("patient_id", F.unix_micros("index_at").alias("us"), "label", *names)
    return {
        (r["patient_id"], r["us"]): (r["label"], tuple(r[n] for n in names)) for r in rows.collect()
    }


@pytest.mark.parametrize("model_id", sorted(LEARNED_MODELS))
def test_spark_training_set_equals_the_single_machine_one(
    tables: dict[str, Any], single_machine: Dataset, model_id: str
) -> None:
    from population.training_set import TrainingTarget, training_set

    spec = LEARNED_MODELS[model_id]
    found = training_set(tables, TrainingTarget.of(spec, _index_specs(spec)))
    assert found.data_end == single_machine.data_end
    names = list(spec.features.names)
    spark = _spark_rows(found.frame, names)

    expected = {}
    for sample in single_machine.samples:
        y = label(spec, sample, single_machine.data_end)
        if y is not None:
            expected[(sample.patient_id, _us(sample.index))] = (y, sample.features[spec.id])
    assert sorted(spark) == sorted(expected)
    for key, (y, values) in expected.items():
        got_y, got = spark[key]
        assert got_y == y, key
        for name, a, b in zip(names, got, values, strict=True):
            assert _same(a, b), (key, name, a, b)
    # not an empty comparison: thousands of index dates, tens of events, many patients
    labels = [y for y, _ in expected.values()]
    assert len(labels) > 1000 and sum(labels) >= 20, (len(labels), sum(labels))
    assert len({pid for pid, _ in expected}) > 150


@pytest.mark.parametrize("spec", SURVEYED_OUTCOMES, ids=lambda s: s.id)
def test_spark_labels_of_the_surveyed_outcomes_equal_the_single_machine_ones(
    tables: dict[str, Any], single_machine: Dataset, spec: Any
) -> None:
    """Eligibility with ``requires`` and exclude-prior outcomes, labels only."""
    from pyspark.sql import functions as F

    from population.training_set import TrainingTarget, labelled_index

    found = labelled_index(tables, TrainingTarget.of(spec, _index_specs(spec)))
    rows = found.frame.select("patient_id", F.unix_micros("index_at").alias("us"), "label")
    spark = {(r["patient_id"], r["us"]): r["label"] for r in rows.collect()}
    expected = {
        (s.patient_id, _us(s.index)): y
        for s in single_machine.samples
        if (y := label(spec, s, single_machine.data_end)) is not None
    }
    assert spark == expected
    if spec.requires:  # the required condition narrows the rows to some patients
        assert 0 < len(expected) < len(single_machine.samples) / 2


def test_a_validated_score_comparator_on_spark_equals_the_single_machine_one(
    spark: Any, synthea_ndjson: BulkFolder, single_machine: Dataset
) -> None:
    """The PCE beside cvd-event-3y, on every held-out row: the Spark trainer's comparator
    (the hook path on each patient's lines, on the executors) is the single-machine one."""
    from population.comparators import comparator_scores

    spec = LEARNED_MODELS["cvd-event-3y"]
    _, score = COMPARATORS[spec.id]
    assert callable(score)
    expected = {
        (s.patient_id, _us(s.index)): s.comparators[spec.id]
        for s in single_machine.samples
        if label(spec, s, single_machine.data_end) is not None and is_test_patient(s.patient_id)
    }
    found = comparator_scores(spark, synthea_ndjson, expected, score)
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        got = found[key]
        if value is None:
            assert got is None or math.isnan(got), key
        else:
            assert got is not None and math.isclose(got, value, rel_tol=1e-12), (key, got, value)
    # not an empty comparison: the PCE is defined on part of the rows only, not on none
    defined = sum(v is not None for v in expected.values())
    assert 20 < defined < len(expected), (defined, len(expected))


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def trained_by_cli(synthea_ndjson: BulkFolder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from cds.cli import main

    folder = tmp_path_factory.mktemp("train-cli")
    url = f"sqlite:///{folder / 'audit.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade"], env={"DATABASE_URL": url}).exit_code == 0
    out = folder / "out"
    command = [
        sys.executable, "-m", "cds.cli", "population", "train", str(synthea_ndjson.root),
        "--model", TRAINED, "--out", str(out), "--master", "local[2]",
        "--driver-memory", "1g", "--executor-memory", "1g", "--operator", "ci-train-test",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=repo_env(DATABASE_URL=url), capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "held-out AUROC" in done.stdout
    return out


def test_population_train_writes_a_loadable_artifact_close_to_the_single_machine_one(
    trained_by_cli: Path,
    tables: dict[str, Any],
    single_machine: Dataset,
    tmp_path: Path,
) -> None:
    from models.risk.training.train import _fit_one
    from population.training_set import TrainingTarget, training_set

    spec = LEARNED_MODELS[TRAINED]
    model = load(TRAINED, folder=trained_by_cli)
    metrics = json.loads((trained_by_cli / TRAINED / "metrics.json").read_text())
    held = metrics["held_out"]

    # the loaded model reproduces the job's held-out predictions (its AUROC)
    names = list(spec.features.names)
    frame = training_set(tables, TrainingTarget.of(spec, _index_specs(spec))).frame
    rows = frame.filter("test").orderBy("patient_id", "index_at").collect()
    X = np.array([[r[n] for n in names] for r in rows], dtype=float)
    y = np.array([r["label"] for r in rows], dtype=int)
    p = model.probabilities(X)
    assert held["samples"] == len(y) and held["events"] == int(y.sum())
    assert math.isclose(float(roc_auc_score(y, p)), held["auroc"], abs_tol=1e-9)
    assert ((p > 0) & (p < 1)).all()

    # the single-machine trainer on the same data set: the same held-out rows, close AUROC
    single = _fit_one(spec, single_machine, "ndjson", tmp_path, []).metrics["held_out"]
    assert single["samples"] == held["samples"] and single["events"] == held["events"]
    assert abs(held["auroc"] - single["auroc"]) <= AUROC_TOLERANCE, (held["auroc"], single)
    assert held["auroc"] > 0.7  # far from chance on these data

    run = json.loads((trained_by_cli / "run.json").read_text())
    assert run["status"] == 200 and run["service_id"] == "population:train"
    assert run["models"][0]["id"] == TRAINED
    assert run["models"][0]["hash"] == model.artifact.sha256
    print(
        f"\n{TRAINED}: held-out AUROC Spark {held['auroc']:.4f} vs single-machine "
        f"{single['auroc']:.4f}; rounds {metrics['rounds']}; rows {held['samples']}"
    )
