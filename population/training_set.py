"""The learned risk models' training data set on Spark: twin of ``models.risk.training.dataset``.

One row per (patient, index date) eligible for a model and not censored, with the label
and the model's features, by the same rules as the single-machine data set:

* index dates (landmarks): per landmark rule (encounter classes, gap), the start of the
  patient's first such encounter and then of each one at least ``gap_days`` after the
  last chosen (a fold over the sorted starts, in Spark SQL); the union over the rules of
  every model the single-machine run surveys (``TrainingTarget.of``);
* a date is kept when the patient's age on its UTC day is known and the patient had not
  died by then; it is eligible for the model when the age is in range and the
  ``requires`` condition has an onset on or before it;
* the outcome event (``first_event``): condition outcomes, the first matching onset in the
  whole record (one on or before the index date makes the row ineligible with
  ``exclude_prior``, otherwise the next one after it counts); encounter outcomes, the first
  such encounter starting after the index date;
* the label (``label``): 1 with an event in (T, T + horizon]; censored (left out) when the
  data set ends before T + horizon (data end: the latest encounter start or end or death
  of any record, ``record_end``) or the patient died before it without the event;
* the features are the record as it stood at the index date itself
  (:func:`population.features.feature_frame_at`, the twin of ``context_as_of``).

Executor-safe: nothing here imports ``models.risk.catalog`` (it reads data files at
import, which executors cannot do inside the shipped code zip); the caller builds the
:class:`TrainingTarget` from the catalog's spec on the driver. Everything runs as Spark SQL
expressions; no Python runs on the executors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType

from fhir_adapters.context_builder import NOT_TRUE
from models.risk.features.spec import FeatureSet
from models.risk.kb import CodeMatch
from models.risk.training.fit import SPLIT_SALT
from population.features import age_on, code_matches, feature_frame_at

#: The timestamp column of the index dates.
INDEX_AT = "index_at"
LABEL = "label"
#: True for the held-out (test) patients of the patient-level split (``fit.is_test_patient``).
TEST = "test"
#: Patient-grouped cross-validation fold of a training row (0..4).
FOLD = "fold"
FOLDS = 5
_US_PER_DAY = 86_400 * 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Landmarks:
    """Index dates: starts of ``classes`` encounters, at most one per ``gap_days``."""

    classes: tuple[str, ...]
    gap_days: int


@dataclass(frozen=True)
class TrainingTarget:
    """What the training data set of one model reads: plain values, no catalog."""

    model_id: str
    features: FeatureSet
    min_age: int
    max_age: int | None
    requires: tuple[CodeMatch, ...]
    outcome_codes: tuple[CodeMatch, ...]
    outcome_classes: tuple[str, ...]
    exclude_prior: bool
    horizon_days: int
    landmarks: tuple[Landmarks, ...]

    @classmethod
    def of(cls, spec: Any, index_specs: Iterable[Any] = ()) -> TrainingTarget:
        """From a ``RiskModelSpec``; ``index_specs``: the other specs whose landmarks the
        single-machine run adds to the index dates (``train.train``'s survey)."""
        rules = {
            Landmarks(tuple(s.landmark_classes), int(s.landmark_gap_days))
            for s in (spec, *index_specs)
        }
        outcome = spec.outcome
        return cls(
            model_id=spec.id,
            features=spec.features,
            min_age=int(spec.min_age),
            max_age=None if spec.max_age is None else int(spec.max_age),
            requires=tuple(spec.requires),
            outcome_codes=tuple(outcome.condition_codes),
            outcome_classes=tuple(outcome.encounter_classes),
            exclude_prior=bool(outcome.exclude_prior),
            horizon_days=int(outcome.horizon_days),
            landmarks=tuple(sorted(rules, key=lambda r: (r.classes, r.gap_days))),
        )


@dataclass(frozen=True)
class TrainingSet:
    #: patient_id, index_at, label, test, fold and one double column per feature.
    frame: DataFrame
    #: The data set's end (``record_end`` of the latest record).
    data_end: datetime
    #: Patient records read.
    records: int


def from_micros(us: int) -> datetime:
    """A Spark ``unix_micros`` value as an aware UTC datetime (exact to the microsecond)."""
    return EPOCH + timedelta(microseconds=us)


def record_ends(tables: Mapping[str, DataFrame]) -> DataFrame:
    """``patient_id``, ``record_end``: the latest encounter start or end, or death."""
    encounters = tables["encounters"].select(
        "patient_id", F.greatest(F.col("start"), F.col("end")).alias("t")
    )
    deaths = tables["patients"].select("patient_id", F.col("deceased_at").alias("t"))
    times = encounters.unionByName(deaths).groupBy("patient_id").agg(F.max("t").alias("t"))
    return (
        tables["patients"]
        .select("patient_id")
        .join(times, "patient_id", "left")
        .select("patient_id", F.coalesce(F.col("t"), F.current_timestamp()).alias("record_end"))
    )


def index_dates(encounters: DataFrame, rules: Iterable[Landmarks]) -> DataFrame:
    """``patient_id``, ``index_at``: the union of every rule's landmarks."""
    frames = []
    for rule in rules:
        starts = encounters.filter(
            F.col("start").isNotNull() & F.col("class_code").isin(*rule.classes)
        )
        per_patient = starts.groupBy("patient_id").agg(
            F.array_sort(F.collect_list(F.unix_micros(F.col("start")))).alias("starts")
        )
        empty = F.array().cast(ArrayType(LongType()))
        chosen = F.aggregate("starts", empty, _landmark_step(rule.gap_days * _US_PER_DAY))
        frames.append(per_patient.select("patient_id", F.explode(chosen).alias("us")))
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union.distinct().select("patient_id", F.timestamp_micros(F.col("us")).alias(INDEX_AT))


def _landmark_step(gap_us: int) -> Callable[[Column, Column], Column]:
    """One step of the landmark fold: keep ``start`` if it is the first, or at least
    ``gap_us`` after the last one chosen (``dataset.landmarks``)."""

    def step(chosen: Column, start: Column) -> Column:
        grown = F.concat(chosen, F.array(start))
        later = F.when(start - F.element_at(chosen, -1) >= gap_us, grown)
        return F.when(F.size(chosen) == 0, F.array(start)).otherwise(F.coalesce(later, chosen))

    return step


def _matching_onsets(
    conditions: DataFrame, ends: DataFrame, codes: tuple[CodeMatch, ...], name: str
) -> DataFrame:
    """``patient_id`` and ``name``: the onsets of the patient's conditions (whole record,
    not refuted or entered in error) that match ``codes`` (null: none)."""
    recorded = F.coalesce(F.col("recorded"), F.col("onset"))
    kept = (
        conditions.filter(
            ~F.coalesce(F.col("verification_status"), F.lit("")).isin(*sorted(NOT_TRUE))
        )
        .join(ends, "patient_id")
        .filter(recorded.isNotNull() & (recorded <= F.col("record_end")))
    )
    level = kept.groupBy("patient_id", "condition_id", "onset").agg(
        F.max(code_matches(F.col("system"), F.col("code"), codes)).alias("hit")
    )
    return (
        level.filter(F.col("hit") & F.col("onset").isNotNull())
        .groupBy("patient_id")
        .agg(F.collect_list("onset").alias(name))
    )


def split_column(patient_id: Column, test_fraction: float = 0.3) -> Column:
    """``fit.is_test_patient`` as a Spark expression."""
    digest = F.sha2(F.concat(F.lit(SPLIT_SALT), patient_id), 256)
    return F.conv(F.substring(digest, 1, 2), 16, 10).cast("int") < round(256 * test_fraction)


def fold_column(patient_id: Column) -> Column:
    """A patient-grouped CV fold (0..4) from a salted hash of the patient id."""
    digest = F.sha2(F.concat(F.lit("wardround-risk-fold:"), patient_id), 256)
    return (F.conv(F.substring(digest, 1, 8), 16, 10).cast("long") % FOLDS).cast("int")


def labelled_index(tables: Mapping[str, DataFrame], target: TrainingTarget) -> TrainingSet:
    """Every eligible, uncensored index date of ``target`` with its label (no features)."""
    ends = record_ends(tables).cache()
    data_end_us = ends.agg(F.max(F.unix_micros(F.col("record_end")))).first()[0]
    records = ends.count()
    data_end = from_micros(data_end_us)

    at = F.col(INDEX_AT)
    patients = tables["patients"].select("patient_id", "birth_date", "deceased_at")
    rows = index_dates(tables["encounters"], target.landmarks).join(patients, "patient_id")
    age = age_on(F.col("birth_date"), F.to_date(at))
    rows = rows.filter(
        age.isNotNull() & ~F.coalesce(F.col("deceased_at") <= at, F.lit(False))
    ).withColumn("age", age)

    eligible = (F.col("age") >= target.min_age) & (
        F.lit(True) if target.max_age is None else F.col("age") <= target.max_age
    )
    if target.requires:
        onsets = _matching_onsets(tables["conditions"], ends, target.requires, "required")
        rows = rows.join(onsets, "patient_id", "left")
        eligible = eligible & F.coalesce(F.exists("required", lambda o: o <= at), F.lit(False))

    if target.outcome_codes:
        onsets = _matching_onsets(tables["conditions"], ends, target.outcome_codes, "outcome")
        rows = rows.join(onsets, "patient_id", "left")
        first = F.array_min("outcome")
        later = F.array_min(F.filter("outcome", lambda o: o > at))
        # a prior onset makes the row ineligible (exclude_prior), or the next one counts
        event = first if target.exclude_prior else F.when(first <= at, later).otherwise(first)
    else:
        starts = (
            tables["encounters"]
            .filter(F.col("start").isNotNull() & F.col("class_code").isin(*target.outcome_classes))
            .groupBy("patient_id")
            .agg(F.collect_list("start").alias("outcome"))
        )
        rows = rows.join(starts, "patient_id", "left")
        event = F.array_min(F.filter("outcome", lambda s: s > at))

    horizon = at + F.expr(f"INTERVAL {target.horizon_days} DAYS")
    end = F.timestamp_micros(F.lit(data_end_us))
    death = F.col("deceased_at")
    none = F.lit(None).cast("int")
    label = (
        F.when(~eligible, none)
        .when(event.isNotNull() & (event <= at), none)
        .when(event.isNotNull() & (event <= horizon), F.lit(1))
        .when(horizon > end, none)
        .when(death.isNotNull() & (death <= horizon), none)
        .otherwise(F.lit(0))
    )
    frame = rows.select("patient_id", INDEX_AT, label.alias(LABEL)).filter(F.col(LABEL).isNotNull())
    return TrainingSet(frame, data_end, records)


def training_set(tables: Mapping[str, DataFrame], target: TrainingTarget) -> TrainingSet:
    """:func:`labelled_index` with the features of each row, the split and the CV fold."""
    index = labelled_index(tables, target)
    features = feature_frame_at(tables, target.features, index.frame.select("patient_id", INDEX_AT))
    frame = index.frame.join(features, ["patient_id", INDEX_AT]).select(
        "patient_id",
        INDEX_AT,
        LABEL,
        split_column(F.col("patient_id")).alias(TEST),
        fold_column(F.col("patient_id")).alias(FOLD),
        *target.features.names,
    )
    return TrainingSet(frame, index.data_end, index.records)
