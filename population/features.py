"""The feature spec on Spark: the population twin of :mod:`models.risk.features.evaluate`.

:func:`feature_frame` computes a :class:`~models.risk.features.spec.FeatureSet` for every
patient of the record-row tables (:mod:`population.spark_rows`, or the Parquet the records
job writes) with Spark SQL aggregations: one row per patient, ``patient_id`` and one
double column per feature, missing = NaN, with the semantics of ``spec.py``. A test holds
it equal, patient by patient and feature by feature, to ``evaluate`` on the
PatientContext a hook would have built on the same as-of day (``context_as_of``).
:func:`feature_frame_at` is the same computation with each row's own as-of moment (one
row per patient and index date: the training data set, :mod:`population.training_set`);
both go through :class:`AsOf`.

The record is read as it stood at the end of the as-of day, as ``fhir_adapters.as_of``
rewinds it for training: records dated after it are left out (and so are records without
the date that places them in time); a condition that abated later was still active then;
a patient who died later was alive. Only what a hook's prefetch holds is read: conditions
not refuted or entered in error, medication requests not entered in error, observations
of the vital-signs or laboratory categories and smoking status (``fhir_adapters.synthea``
``prefetch_for``; an observation is placed by its first observation-category code, the
one the record rows keep).

The one Python step is terminology: a medication matches WHO ATC groups through
``models.drug.normalise.identify`` (RxNorm product → ingredient → ATC, else by name),
called on the driver once per distinct drug concept (the vocabulary, not the patients)
and broadcast back as a small table; never the evaluator itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from fhir_adapters.context_builder import NOT_TRUE
from fhir_adapters.patient_context import LOINC, Coding, Concept
from models.drug.normalise import identify
from models.risk.evidence import ACTIVE, as_of_datetime
from models.risk.features.evaluate import SMOKING_STATUS
from models.risk.features.spec import ACT_CODE, ATC, FeatureSet, FeatureSpec
from models.risk.kb import ICD10_SYSTEMS, CodeMatch

NAN = float("nan")
#: Observation categories the hooks' ``observations`` prefetch asks for.
PREFETCHED_CATEGORIES = ("vital-signs", "laboratory")
#: Aggregations whose "nothing found" is 0, not missing.
ZERO_WHEN_NONE = frozenset({"count", "present", "active"})
#: The suffix of a feature's basis column (``with_basis``): the record its value rests on.
BASIS = "__basis"
TABLE_NAMES = ("patients", "conditions", "observations", "medications", "encounters")
#: The as-of columns a per-row read joins onto the record rows (``AsOf.per_row``).
AS_OF_DAY, AS_OF_END = "__as_of_day", "__as_of_end"


@dataclass(frozen=True)
class AsOf:
    """When the record is read: one calendar day for every patient, or each row's own time.

    ``day`` is the calendar day (UTC) windows and ages are counted on; ``end`` the last
    moment of the record that is read. One day (:meth:`on_day`): ``end`` is the end of
    that day. Per row (:meth:`per_row`): an index frame of ``patient_id`` and a timestamp
    column; ``end`` is that very moment (``record_as_of`` rewinds to it), ``day`` its UTC
    day, and every aggregate is grouped by patient *and* that timestamp.
    """

    day: Column
    end: Column
    keys: tuple[str, ...] = ()
    index: DataFrame | None = None

    @classmethod
    def on_day(cls, as_of: date) -> AsOf:
        if isinstance(as_of, datetime):
            raise TypeError("as_of is a calendar day (datetime.date), not a datetime")
        return cls(F.lit(as_of), F.lit(as_of_datetime(as_of).isoformat()).cast("timestamp"))

    @classmethod
    def per_row(cls, index: DataFrame, at: str) -> AsOf:
        frame = index.select(
            "patient_id",
            F.col(at),
            F.to_date(F.col(at)).alias(AS_OF_DAY),
            F.col(at).alias(AS_OF_END),
        )
        return cls(F.col(AS_OF_DAY), F.col(AS_OF_END), (at,), frame)

    def attach(self, rows: DataFrame) -> DataFrame:
        """``rows`` (per patient) with the as-of columns: one copy per index row."""
        if self.index is None:
            return rows
        return rows.join(self.index, "patient_id")

    @property
    def group(self) -> list[str]:
        """The grouping columns of a per-patient aggregate (with the as-of columns)."""
        if self.index is None:
            return ["patient_id"]
        return ["patient_id", *self.keys, AS_OF_DAY, AS_OF_END]

    @property
    def join_keys(self) -> list[str]:
        return ["patient_id", *self.keys]


# --------------------------------------------------------------------------- expressions
def code_matches(system: Column | str, code: Column, codes: Iterable[CodeMatch]) -> Column:
    """``CodeMatch.matches`` as a Spark expression (false, never null).

    ``system`` is a column, or the one system every code of the column is in (LOINC codes
    of observation rows, ATC codes): then only ``codes`` of that system can match.
    """
    implied = system if isinstance(system, str) else None

    def in_system(name: str) -> Column:
        return F.lit(name == implied) if implied is not None else system == name  # type: ignore[operator]

    terms: list[Column] = []
    exact: dict[str, list[str]] = {}
    for match in codes:
        if match.system in ICD10_SYSTEMS:
            theirs = F.upper(F.regexp_replace(code, r"\.", ""))
            mine = match.code.replace(".", "").upper()
            same = theirs.startswith(mine) if match.prefix else theirs == mine
            systems = (
                F.lit(implied in ICD10_SYSTEMS)
                if implied is not None
                else system.isin(*sorted(ICD10_SYSTEMS))  # type: ignore[union-attr]
            )
            terms.append(systems & same)
        elif implied is not None and match.system != implied:
            continue
        elif match.prefix:
            terms.append(in_system(match.system) & code.startswith(match.code))
        else:
            exact.setdefault(match.system, []).append(match.code)
    for name, values in sorted(exact.items()):
        terms.append(in_system(name) & code.isin(*sorted(set(values))))
    if not terms:
        return F.lit(False)
    combined = terms[0]
    for term in terms[1:]:
        combined = combined | term
    return F.coalesce(combined, F.lit(False))


def _day(when: Column) -> Column:
    return F.to_date(when)


def _in_window(when: Column, as_of: AsOf, window_days: int | None) -> Column:
    """Inclusive ``[as_of - window_days, as_of]`` on UTC calendar days (dated records)."""
    day = _day(when)
    inside = day.isNotNull() & (day <= as_of.day)
    if window_days is not None:
        inside = inside & (F.datediff(as_of.day, day) <= window_days)
    return inside


def _latest(value: Column, selected: Column, *order: Column) -> Column:
    """``value`` of the selected row with the largest ``order`` (null when none)."""
    return F.max_by(value, F.when(selected, F.struct(*order)))


def _unit_value(unit: str | None) -> Column:
    """``evaluate._observation_value``: the normalised value in ``unit``, else the raw one."""
    normalised = F.when(F.col("normalised_unit").eqNullSafe(F.lit(unit)), F.col("normalised_value"))
    raw = F.when(F.col("value").isNotNull() & F.col("unit").eqNullSafe(F.lit(unit)), F.col("value"))
    return F.when(F.col("normalised_value").isNotNull(), F.coalesce(normalised, raw)).otherwise(raw)


def _reference(kind: str, record_id: Column) -> Column:
    return F.when(record_id.isNotNull(), F.concat(F.lit(f"{kind}/"), record_id))


def _coded_as(codes: tuple[CodeMatch, ...]) -> Callable[[Column], Column]:
    """A test of one ``system|code`` string (record rows' ``value_codes``) against codes."""

    def test(value: Column) -> Column:
        parts = F.split(value, r"\|", 2)
        return code_matches(parts[0], parts[1], codes)

    return test


def _codings_match(codes: tuple[CodeMatch, ...]) -> Callable[[Column], Column]:
    return lambda c: code_matches(c["system"], c["code"], codes)


def _atc_match(groups: tuple[CodeMatch, ...]) -> Callable[[Column], Column]:
    return lambda a: code_matches(ATC, a, groups)


def _reduce(
    aggregation: str, number: Column, selected: Column, order: tuple[Column, ...]
) -> Column:
    if aggregation == "latest":
        return _latest(number, selected, *order)
    if aggregation == "count":
        return F.count(F.when(selected, 1)).cast("double")
    reducer = {"mean": F.avg, "min": F.min, "max": F.max}[aggregation]
    return reducer(F.when(selected, number))


# --------------------------------------------------------------------------- per source
def _observations(
    frame: DataFrame, features: list[FeatureSpec], as_of: AsOf
) -> tuple[DataFrame, list[Column]]:
    loincs = sorted({c.code for f in features for c in f.codes if c.system == LOINC})
    prefetched = F.coalesce(F.col("category").isin(*PREFETCHED_CATEGORIES), F.lit(False)) | (
        F.col("loinc") == SMOKING_STATUS
    )
    unique = frame.filter(F.col("loinc").isin(*loincs) & prefetched).dropDuplicates(
        ["patient_id", "loinc", "observation_id", "effective", "value", "value_text"]
    )
    rows = as_of.attach(unique).filter(
        F.col("effective").isNotNull() & (F.col("effective") <= as_of.end)
    )
    order = (F.col("effective"), F.col("observation_id"))
    aggregates: list[Column] = []
    for spec in features:
        match = code_matches(LOINC, F.col("loinc"), spec.codes) & _in_window(
            F.col("effective"), as_of, spec.window_days
        )
        if spec.aggregation == "latest_in":
            selected = match & F.col("value_codes").isNotNull()
            hit = F.exists(F.col("value_codes"), _coded_as(spec.value_codes))
            value = _latest(F.when(hit, 1.0).otherwise(0.0), selected, *order)
        else:
            number = _unit_value(spec.unit)
            selected = match & number.isNotNull()
            value = _reduce(spec.aggregation, number, selected, order)
        aggregates.append(value.alias(spec.name))
        basis = _latest(F.col("observation_id"), selected, *order)
        aggregates.append(_reference("Observation", basis).alias(spec.name + BASIS))
    return rows, aggregates


def _conditions(frame: DataFrame, as_of: AsOf) -> DataFrame:
    """The patients' conditions as they stood on ``as_of`` (rows are per coding)."""
    recorded = F.coalesce(F.col("recorded"), F.col("onset"))
    kept = frame.filter(
        ~F.coalesce(F.col("verification_status"), F.lit("")).isin(*sorted(NOT_TRUE))
    )
    return as_of.attach(kept).filter(recorded.isNotNull() & (recorded <= as_of.end))


def _condition_level(
    frame: DataFrame, matchers: Mapping[str, tuple[CodeMatch, ...]], as_of: AsOf
) -> DataFrame:
    """One row per condition, with a boolean per matcher (any of its codings matches)."""
    keys = [*as_of.group, "condition_id", "onset", "abatement", "clinical_status"]
    flags = [
        F.max(code_matches(F.col("system"), F.col("code"), codes)).alias(name)
        for name, codes in matchers.items()
    ]
    return _conditions(frame, as_of).groupBy(*keys).agg(*flags)


def _condition_aggregates(features: list[FeatureSpec], as_of: AsOf) -> list[Column]:
    end = as_of.end
    order = (F.col("onset"), F.col("condition_id"))
    aggregates: list[Column] = []
    for spec in features:
        match = F.col(f"m__{spec.name}")
        if spec.aggregation == "active":
            onset_ok = F.col("onset").isNull() | (_day(F.col("onset")) <= as_of.day)
            # A condition that abated after as_of was still active then (``as_of`` rewind).
            active_then = (
                F.col("abatement").isNull()
                & F.coalesce(F.col("clinical_status").isin(*sorted(ACTIVE)), F.lit(False))
            ) | (F.col("abatement") > end)
            selected = match & onset_ok & active_then
        else:
            selected = match & _in_window(F.col("onset"), as_of, spec.window_days)
        aggregates += _present_or_count(spec, selected, "Condition", "condition_id", order)
    return aggregates


def _present_or_count(
    spec: FeatureSpec, selected: Column, kind: str, id_column: str, order: tuple[Column, ...]
) -> list[Column]:
    """``count`` (records selected) or ``present`` / ``active`` (1 if any, else null: 0
    after the join), and the reference of the latest selected record as its basis."""
    if spec.aggregation == "count":
        value = F.count(F.when(selected, 1)).cast("double")
    else:
        value = F.max(F.when(selected, 1.0))
    basis = _latest(F.col(id_column), selected, *order)
    return [value.alias(spec.name), _reference(kind, basis).alias(spec.name + BASIS)]


def _atc_codes(codings: list[Any] | None, text: str | None) -> list[str]:
    concept = Concept(
        codings=tuple(
            Coding(system=c["system"], code=c["code"], display=c["display"])
            for c in codings or ()
            if c["system"] is not None or c["code"] is not None or c["display"] is not None
        ),
        text=text,
    )
    return list(identify(concept).atc)


def _medication_requests(frame: DataFrame, as_of: AsOf, with_atc: bool) -> DataFrame:
    """One row per MedicationRequest on ``as_of``: its codings, and its ATC codes."""
    kept = frame.filter(F.coalesce(F.col("status"), F.lit("")) != "entered-in-error").filter(
        F.col("authored_on").isNotNull()
    )
    requests = kept.groupBy("patient_id", "medication_request_id", "authored_on", "text").agg(
        F.array_sort(F.collect_list(F.struct("system", "code", "display"))).alias("codings")
    )
    if not with_atc:
        requests = requests.withColumn("atc", F.array().cast(ArrayType(StringType())))
    else:
        key = F.sha2(F.to_json(F.struct("codings", "text")), 256)
        requests = requests.withColumn("concept_key", key)
        atc = F.broadcast(_atc_table(requests))
        requests = requests.join(atc, "concept_key").drop("concept_key")
    return as_of.attach(requests).filter(F.col("authored_on") <= as_of.end)


def _atc_table(requests: DataFrame) -> DataFrame:
    """ATC codes of each distinct drug concept (``concept_key``), computed on the driver.

    The vocabulary, not the population: a panel's distinct drug concepts number in the
    hundreds or thousands whatever its size. ``identify`` reads the drug knowledge files,
    which a cluster's executors cannot open inside the shipped code zip.
    """
    concepts = requests.select("concept_key", "codings", "text").dropDuplicates(["concept_key"])
    mapped = [
        (row["concept_key"], _atc_codes(row["codings"], row["text"]))
        for row in concepts.toLocalIterator()
    ]
    schema = StructType(
        [
            StructField("concept_key", StringType(), False),
            StructField("atc", ArrayType(StringType(), False), False),
        ]
    )
    return requests.sparkSession.createDataFrame(mapped, schema)


def _medication_aggregates(features: list[FeatureSpec], as_of: AsOf) -> list[Column]:
    order = (F.col("authored_on"), F.col("medication_request_id"))
    aggregates: list[Column] = []
    for spec in features:
        direct = tuple(c for c in spec.codes if c.system != ATC)
        groups = tuple(c for c in spec.codes if c.system == ATC)
        match = F.lit(False)
        if direct:
            match = F.exists(F.col("codings"), _codings_match(direct))
        if groups:
            match = match | F.exists(F.col("atc"), _atc_match(groups))
        selected = match & _in_window(F.col("authored_on"), as_of, spec.window_days)
        aggregates += _present_or_count(
            spec, selected, "MedicationRequest", "medication_request_id", order
        )
    return aggregates


def _encounter_aggregates(features: list[FeatureSpec], as_of: AsOf) -> list[Column]:
    order = (F.col("start"), F.col("encounter_id"))
    aggregates: list[Column] = []
    for spec in features:
        classes = sorted({c.code for c in spec.codes if c.system == ACT_CODE})
        selected = F.col("class_code").isin(*classes) & _in_window(
            F.col("start"), as_of, spec.window_days
        )
        if spec.aggregation == "count":
            value = F.count(F.when(selected, 1)).cast("double")
        else:  # days_since
            last = F.max(F.when(selected, _day(F.col("start"))))
            value = F.datediff(as_of.day, last).cast("double")
        aggregates.append(value.alias(spec.name))
        basis = _latest(F.col("encounter_id"), selected, *order)
        aggregates.append(_reference("Encounter", basis).alias(spec.name + BASIS))
    return aggregates


def age_on(birth_date: Column, as_of: date | Column) -> Column:
    """Completed years on ``as_of`` (``context_builder._age``); null without a birth date.

    ``as_of``: a calendar day, or a date column (each row's own day)."""
    day = F.lit(as_of) if isinstance(as_of, date) else as_of
    before_birthday = (F.month(day) < F.month(birth_date)) | (
        (F.month(day) == F.month(birth_date)) & (F.dayofmonth(day) < F.dayofmonth(birth_date))
    )
    return F.year(day) - F.year(birth_date) - F.when(before_birthday, 1).otherwise(0)


def _demographic(spec: FeatureSpec, as_of: AsOf) -> Column:
    if spec.aggregation == "age":
        value = age_on(F.col("birth_date"), as_of.day).cast("double")
    else:
        value = F.when(F.col("sex") == "male", 1.0).when(F.col("sex") == "female", 0.0)
    return value.alias(spec.name)


# --------------------------------------------------------------------------- the frame
def feature_frame(
    spark: Any,
    tables: Mapping[str, DataFrame],
    features: FeatureSet,
    as_of: date,
    *,
    with_basis: bool = False,
) -> DataFrame:
    """``patient_id`` and one double column per feature (NaN: missing), one row per patient.

    ``tables``: the record-row DataFrames by table name (``patients``, ``conditions``,
    ``observations``, ``medications``, ``encounters``; see :func:`record_tables`).
    ``with_basis``: also ``<feature>__basis``, the FHIR reference of the record each value
    rests on (the one ``evaluate`` puts in its evidence), null when none.
    """
    del spark  # the tables carry their session; kept for a uniform job signature
    return _features(tables, features, AsOf.on_day(as_of), with_basis)


def feature_frame_at(
    tables: Mapping[str, DataFrame],
    features: FeatureSet,
    index: DataFrame,
    at: str = "index_at",
    *,
    with_basis: bool = False,
) -> DataFrame:
    """One row per row of ``index`` (``patient_id`` and the timestamp column ``at``): the
    features of that patient's record as it stood at that moment (``record_as_of``:
    records dated after it left out; windows and age on its UTC calendar day).

    Columns: ``patient_id``, ``at`` and one double per feature, as :func:`feature_frame`.
    ``index`` must hold each (patient, moment) once.
    """
    return _features(tables, features, AsOf.per_row(index, at), with_basis)


def _features(
    tables: Mapping[str, DataFrame], features: FeatureSet, as_of: AsOf, with_basis: bool
) -> DataFrame:
    by_source: dict[str, list[FeatureSpec]] = {}
    for spec in features.features:
        by_source.setdefault(spec.source, []).append(spec)

    patients = as_of.attach(tables["patients"])
    frame = patients.select(
        *as_of.join_keys, *(_demographic(s, as_of) for s in by_source.get("demographic", []))
    )
    parts: list[DataFrame] = []
    if by_source.get("observation"):
        rows, aggregates = _observations(tables["observations"], by_source["observation"], as_of)
        parts.append(rows.groupBy(*as_of.group).agg(*aggregates))
    if by_source.get("condition"):
        specs = by_source["condition"]
        level = _condition_level(
            tables["conditions"], {f"m__{s.name}": s.codes for s in specs}, as_of
        )
        parts.append(level.groupBy(*as_of.group).agg(*_condition_aggregates(specs, as_of)))
    if by_source.get("medication"):
        specs = by_source["medication"]
        with_atc = any(c.system == ATC for s in specs for c in s.codes)
        requests = _medication_requests(tables["medications"], as_of, with_atc)
        parts.append(requests.groupBy(*as_of.group).agg(*_medication_aggregates(specs, as_of)))
    if by_source.get("encounter"):
        specs = by_source["encounter"]
        encounters = as_of.attach(tables["encounters"]).filter(
            F.col("start").isNotNull() & (F.col("start") <= as_of.end)
        )
        parts.append(encounters.groupBy(*as_of.group).agg(*_encounter_aggregates(specs, as_of)))
    for part in parts:
        frame = frame.join(part.drop(AS_OF_DAY, AS_OF_END), as_of.join_keys, "left")

    columns: list[Column] = [F.col(key) for key in as_of.join_keys]
    for spec in features.features:
        value = F.col(spec.name).cast("double")
        default = 0.0 if spec.aggregation in ZERO_WHEN_NONE else NAN
        columns.append(F.coalesce(value, F.lit(default)).alias(spec.name))
    if with_basis:
        for spec in features.features:
            if spec.source == "demographic":
                columns.append(F.lit(None).cast("string").alias(spec.name + BASIS))
            else:
                columns.append(F.col(spec.name + BASIS))
    return frame.select(*columns)


def eligibility_frame(
    tables: Mapping[str, DataFrame],
    as_of: date,
    code_sets: Mapping[str, tuple[CodeMatch, ...]],
) -> DataFrame:
    """What the learned models' eligibility reads, per patient on ``as_of``.

    ``patient_id``, ``age_years`` (completed years, null without a birth date),
    ``deceased`` (died on or before as_of, or deceased without a date) and, per entry of
    ``code_sets``, a boolean column of that name: a matching condition is recorded with its
    onset on or before the end of as_of (``LearnedRiskModel._recorded``).
    """
    when = AsOf.on_day(as_of)
    end = when.end
    patients = tables["patients"].select(
        "patient_id",
        age_on(F.col("birth_date"), as_of).alias("age_years"),
        (F.col("deceased") & (F.col("deceased_at").isNull() | (F.col("deceased_at") <= end))).alias(
            "deceased"
        ),
    )
    if not code_sets:
        return patients
    matchers = {f"m__{name}": codes for name, codes in code_sets.items()}
    level = _condition_level(tables["conditions"], matchers, when)
    onset_ok = F.col("onset").isNull() | (F.col("onset") <= end)
    recorded = level.groupBy("patient_id").agg(
        *(F.max(F.col(f"m__{name}") & onset_ok).alias(name) for name in code_sets)
    )
    joined = patients.join(recorded, "patient_id", "left")
    return joined.select(
        "patient_id",
        "age_years",
        "deceased",
        *(F.coalesce(F.col(name), F.lit(False)).alias(name) for name in code_sets),
    )


def record_tables(spark: Any, folder: Any) -> dict[str, DataFrame]:
    """The record-row DataFrames of a bulk folder (built in Spark, not written)."""
    from fhir_adapters.record_rows import TABLES
    from population.bulk_frames import read_type
    from population.spark_rows import SPARK_BUILDERS, row_schema

    tables: dict[str, DataFrame] = {}
    for resource_type, (table, build) in SPARK_BUILDERS.items():
        frame = read_type(spark, folder, resource_type)
        if frame is None:
            frame = spark.createDataFrame([], row_schema(TABLES[table][0]))
            tables[table] = frame
        else:
            tables[table] = build(frame)
    return tables


def parquet_tables(spark: Any, folder: Any) -> dict[str, DataFrame]:
    """The record-row tables a records job wrote to ``folder``."""
    from pathlib import Path

    return {name: spark.read.parquet(str(Path(folder) / name)) for name in TABLE_NAMES}
