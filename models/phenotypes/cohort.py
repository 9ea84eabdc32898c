"""The phenotype cohort: a baseline vector per patient, and landmark samples for outcomes.

* **Baseline** (what the clusters are fitted on): every adult alive on the index date T
  (by default the data's last day minus :data:`FOLLOW_UP_DAYS`), one vector each: the
  declared phenotype features evaluated on the record as it stood on T
  (``fhir_adapters.as_of`` → the hooks' context builder → the risk family's evaluator: one
  code path). One as-of date for everyone, as the population executor computes it.
* **Landmark samples** (what the outcome rates are counted on): the risk models' own
  training index dates (ambulatory encounters at most one a year, adults), each with the
  phenotype vector as of that day and the risk models' outcomes read strictly after it
  with the training rules (``models.risk.training.dataset.label``: eligibility by age and
  prior condition, censoring by death or the end of the data). A sample is given the
  phenotype of its nearest centroid, as a patient is in the hooks. A patient gives several
  samples: the intervals account for it (``describe.wilson`` with a design effect).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from fhir_adapters.parsing import ParseCache
from fhir_adapters.patient_context import PatientContext
from fhir_adapters.records import PatientRecord
from models.phenotypes.features import PHENOTYPE_FEATURES
from models.risk.catalog import LEARNED_MODELS, YEAR, RiskModelSpec
from models.risk.evidence import as_of_datetime
from models.risk.features.evaluate import evaluate
from models.risk.training.dataset import (
    Sample,
    context_as_of,
    first_event,
    full_context,
    label,
    landmarks,
    record_end,
)

MIN_AGE = 18
#: The longest outcome horizon (3 years): the baseline is this long before the data end.
FOLLOW_UP_DAYS = max(spec.outcome.horizon_days for spec in LEARNED_MODELS.values())
LANDMARK_CLASSES = ("AMB",)
OUTCOMES: tuple[RiskModelSpec, ...] = tuple(LEARNED_MODELS.values())


@dataclass(frozen=True)
class CohortRow:
    patient_id: str
    age: int
    values: tuple[float, ...]
    #: outcome id → 1 / 0, or None (not eligible, or censored).
    outcomes: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class LandmarkSample:
    patient_id: str
    index: datetime
    values: tuple[float, ...]
    outcomes: dict[str, int | None] = field(default_factory=dict)


@dataclass
class Cohort:
    index_date: datetime
    data_end: datetime
    rows: list[CohortRow]
    records: int
    samples: list[LandmarkSample] = field(default_factory=list)

    @property
    def sample_matrix(self) -> np.ndarray:
        return np.array([s.values for s in self.samples], dtype=float).reshape(
            len(self.samples), len(PHENOTYPE_FEATURES.names)
        )

    @property
    def matrix(self) -> np.ndarray:
        return np.array([r.values for r in self.rows], dtype=float).reshape(
            len(self.rows), len(PHENOTYPE_FEATURES.names)
        )

    def outcome(self, outcome_id: str) -> list[int | None]:
        return [r.outcomes.get(outcome_id) for r in self.rows]


def _age(birth, at: datetime) -> int | None:  # type: ignore[no-untyped-def]
    if birth is None:
        return None
    day = at.astimezone(UTC).date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _eligible(spec: RiskModelSpec, age: int) -> bool:
    return age >= spec.min_age and (spec.max_age is None or age <= spec.max_age)


def _outcomes(
    full: PatientContext, patient_id: str, at: datetime, age: int, data_end: datetime
) -> dict[str, int | None]:
    outcomes: dict[str, int | None] = {}
    for spec in OUTCOMES:
        sample = Sample(patient_id, at, age, death=full.deceased_at)
        if _eligible(spec, age):
            sample.eligible.add(spec.id)
            sample.events[spec.id] = first_event(spec, full, at)
        outcomes[spec.id] = label(spec, sample, data_end)
    return outcomes


def _alive_adult(full: PatientContext, at: datetime) -> int | None:
    age = _age(full.birth_date, at)
    if age is None or age < MIN_AGE:
        return None
    if full.deceased_at is not None and full.deceased_at <= at:
        return None
    return age


def patient_rows(
    record: PatientRecord, index: datetime, data_end: datetime
) -> tuple[CohortRow | None, list[LandmarkSample]]:
    """One patient's baseline row (None: not an adult alive on ``index``) and samples."""
    resources = {kind: list(items) for kind, items in record.resources.items()}
    cache = ParseCache()
    full = full_context(resources, record.patient_id, cache)
    row = None
    age = _alive_adult(full, index)
    if age is not None and record_end(resources) >= index:
        context = context_as_of(resources, record.patient_id, index, cache)
        values = evaluate(PHENOTYPE_FEATURES, context).values
        outcomes = _outcomes(full, record.patient_id, index, age, data_end)
        row = CohortRow(record.patient_id, age, values, outcomes)
    samples = []
    for at in landmarks(full, LANDMARK_CLASSES, YEAR):
        age = _alive_adult(full, at)
        if age is None:
            continue
        outcomes = _outcomes(full, record.patient_id, at, age, data_end)
        if all(v is None for v in outcomes.values()):
            continue  # censored for every outcome: nothing to count
        context = context_as_of(resources, record.patient_id, at, cache)
        values = evaluate(PHENOTYPE_FEATURES, context).values
        samples.append(LandmarkSample(record.patient_id, at, values, outcomes))
    return row, samples


def data_end(records: Iterable[PatientRecord]) -> datetime:
    """The last moment any record speaks of (first pass over the records)."""
    return max(
        record_end({kind: list(items) for kind, items in r.resources.items()}) for r in records
    )


def _work(
    args: tuple[PatientRecord, datetime, datetime],
) -> tuple[CohortRow | None, list[LandmarkSample]]:
    return patient_rows(*args)


def build_cohort(
    records: Callable[[], Iterable[PatientRecord]],
    workers: int = 1,
    index_date: datetime | None = None,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> Cohort:
    """The cohort of ``records()`` (called twice when the index date must be found first)."""
    end = data_end(records())
    # A calendar day, read to its end (the feature spec's as-of semantics, which the Spark
    # executor shares): everything recorded on the index day counts.
    index = index_date or as_of_datetime((end - timedelta(days=FOLLOW_UP_DAYS)).date())
    jobs = ((record, index, end) for record in records())
    rows: list[CohortRow] = []
    samples: list[LandmarkSample] = []
    count = 0
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        found: Iterator = pool.map(_work, jobs, chunksize=4) if pool else map(_work, jobs)
        for row, more in progress(found) if progress else found:
            count += 1
            samples += more
            if row is not None:
                rows.append(row)
    # One order whatever the files' order: the same data gives the same phenotypes.
    rows.sort(key=lambda r: r.patient_id)
    samples.sort(key=lambda s: (s.patient_id, s.index))
    return Cohort(index, end, rows, count, samples)
