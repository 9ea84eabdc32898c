"""Training samples from patient records: index dates, features as of each, outcomes after.

For every patient record:

1. the whole record becomes a PatientContext (for outcomes: condition onsets, encounters,
   death);
2. index dates (landmarks) are ambulatory encounters, at most one per year, at which the
   patient is old enough for some model;
3. for each index date T, :func:`context_as_of` rewinds the record to T
   (``fhir_adapters.as_of``) and builds the PatientContext exactly as a hook would
   (``prefetch_for`` → ``build_patient_context(today=T)``); the model's features are
   evaluated on it by the serving evaluator;
4. the outcome is read from the whole record strictly after T: an event in (T, T + horizon]
   is a 1. A sample without an event whose follow-up ends before T + horizon (the data set
   ends, or the patient dies) is censored and left out; so is a patient who already had
   the outcome condition on T (``exclude_prior``).

Nothing from after T can reach the features: they are computed from a record that no
longer holds it (tested in ``tests/risk/test_as_of.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fhir_adapters.as_of import record_as_of
from fhir_adapters.context_builder import PATIENT_CONTEXT_PREFETCH, build_patient_context
from fhir_adapters.parsing import ParseCache
from fhir_adapters.patient_context import PatientContext
from fhir_adapters.records import PatientRecord
from fhir_adapters.synthea import prefetch_for
from models.risk.catalog import PREFETCH_KEYS, RiskModelSpec
from models.risk.features.evaluate import evaluate
from models.risk.kb import CodeMatch

_EPOCH = datetime.min.replace(tzinfo=UTC)


def context_as_of(
    resources: dict[str, list[dict]],
    patient_id: str,
    at: datetime,
    cache: ParseCache | None = None,
) -> PatientContext:
    """The PatientContext a hook would have built from this record on ``at``.

    ``cache`` only saves parsing the same resources again for the next index date."""
    prefetch = prefetch_for(record_as_of(resources, at))
    data = {key: prefetch[key] for key in PREFETCH_KEYS}
    assert set(data) <= set(PATIENT_CONTEXT_PREFETCH)
    return build_patient_context(
        data, patient_id, today=at.astimezone(UTC).date(), parse_cache=cache
    )


def full_context(
    resources: dict[str, list[dict]], patient_id: str, cache: ParseCache | None = None
) -> PatientContext:
    """The whole record (for outcomes and index dates), as of its last recorded day."""
    return context_as_of(resources, patient_id, record_end(resources), cache)


def record_end(resources: dict[str, list[dict]]) -> datetime:
    """The last moment the record speaks of (an encounter's start or end, or death)."""
    last = _EPOCH
    for encounter in resources.get("Encounter", []):
        for key in ("start", "end"):
            value = (encounter.get("period") or {}).get(key)
            if isinstance(value, str):
                last = max(last, datetime.fromisoformat(value.replace("Z", "+00:00")))
    for patient in resources.get("Patient", []):
        died = patient.get("deceasedDateTime")
        if isinstance(died, str):
            last = max(last, datetime.fromisoformat(died.replace("Z", "+00:00")))
    return last if last > _EPOCH else datetime.now(UTC)


def landmarks(full: PatientContext, classes: Sequence[str], gap_days: int) -> list[datetime]:
    """Starts of ``classes`` encounters, the first and then each >= ``gap_days`` later."""
    chosen: list[datetime] = []
    for encounter in full.encounters:
        if encounter.class_code not in classes or encounter.start is None:
            continue
        if not chosen or encounter.start - chosen[-1] >= timedelta(days=gap_days):
            chosen.append(encounter.start)
    return chosen


def first_event(spec: RiskModelSpec, full: PatientContext, after: datetime) -> datetime | None:
    """The outcome event that decides the label of index date ``after``.

    Condition outcomes: the first onset in the whole record (one on or before ``after``
    makes the sample ineligible when ``exclude_prior``; otherwise the first one after it).
    Encounter outcomes: the first such encounter starting after ``after``.
    """
    outcome = spec.outcome
    if outcome.condition_codes:
        onsets = sorted(
            p.onset
            for p in full.conditions
            if p.onset is not None
            and any(code.matches(c) for code in outcome.condition_codes for c in p.concept.codings)
        )
        if not onsets:
            return None
        if onsets[0] <= after and not outcome.exclude_prior:
            return next((t for t in onsets if t > after), None)
        return onsets[0]
    starts = [
        e.start
        for e in full.encounters
        if e.start is not None and e.class_code in outcome.encounter_classes and e.start > after
    ]
    return min(starts) if starts else None


@dataclass
class Sample:
    patient_id: str
    index: datetime
    age: int
    #: The file (or "ndjson") the record came from.
    source: str = ""
    #: Models this index date is eligible for (age range, required condition).
    eligible: set[str] = field(default_factory=set)
    #: model id → feature values (trained models only).
    features: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: model id → time of the first outcome event (None: none in the record).
    events: dict[str, datetime | None] = field(default_factory=dict)
    death: datetime | None = None
    #: model id → a comparator score on the same as-of context (e.g. the PCE's risk).
    comparators: dict[str, float | None] = field(default_factory=dict)


def label(spec: RiskModelSpec, sample: Sample, data_end: datetime) -> int | None:
    """1 / 0, or None when the sample is not eligible or its follow-up is censored."""
    if spec.id not in sample.eligible:
        return None
    event = sample.events.get(spec.id)
    if event is not None and event <= sample.index:
        return None  # the outcome condition was already there
    horizon = sample.index + timedelta(days=spec.outcome.horizon_days)
    if event is not None and event <= horizon:
        return 1
    if horizon > data_end:
        return None  # the data set ends before the horizon
    if sample.death is not None and sample.death <= horizon:
        return None  # died without the event: competing risk, not a negative
    return 0


def _eligible(spec: RiskModelSpec, age: int) -> bool:
    return age >= spec.min_age and (spec.max_age is None or age <= spec.max_age)


def _has(full: PatientContext, codes: Sequence[CodeMatch], at: datetime) -> bool:
    return any(
        p.onset is not None
        and p.onset <= at
        and any(code.matches(c) for code in codes for c in p.concept.codings)
        for p in full.conditions
    )


Comparator = Callable[[PatientContext], "float | None"]


def record_samples(
    record: PatientRecord,
    specs: Sequence[RiskModelSpec],
    comparators: Mapping[str, Comparator] | None = None,
    survey: Sequence[RiskModelSpec] = (),
) -> list[Sample]:
    """Every index date of one record, with each eligible model's features and events.

    ``survey`` specs get eligibility and events only (no features): outcome counts."""
    resources = {kind: list(items) for kind, items in record.resources.items()}
    cache = ParseCache()
    full = full_context(resources, record.patient_id, cache)
    dates: set[datetime] = set()
    for spec in (*specs, *survey):
        dates.update(landmarks(full, spec.landmark_classes, spec.landmark_gap_days))
    samples = []
    for at in sorted(dates):
        age = _age(full, at)
        if age is None or (full.deceased_at is not None and full.deceased_at <= at):
            continue
        wanted = [
            s
            for s in (*specs, *survey)
            if _eligible(s, age) and (not s.requires or _has(full, s.requires, at))
        ]
        if not wanted:
            continue
        sample = Sample(record.patient_id, at, age, record.source, death=full.deceased_at)
        context = None
        for spec in wanted:
            sample.eligible.add(spec.id)
            sample.events[spec.id] = first_event(spec, full, at)
            if spec in survey:
                continue
            if context is None:
                context = context_as_of(resources, record.patient_id, at, cache)
            sample.features[spec.id] = evaluate(spec.features, context).values
            if comparators and spec.id in comparators:
                sample.comparators[spec.id] = comparators[spec.id](context)
        samples.append(sample)
    return samples


def _age(full: PatientContext, at: datetime) -> int | None:
    birth = full.birth_date
    if birth is None:
        return None
    day = at.astimezone(UTC).date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass
class Dataset:
    samples: list[Sample]
    data_end: datetime
    records: int


def _work(
    args: tuple[
        PatientRecord,
        tuple[RiskModelSpec, ...],
        Mapping[str, Comparator],
        tuple[RiskModelSpec, ...],
    ],
) -> tuple[list[Sample], datetime]:
    record, specs, comparators, survey = args
    return record_samples(record, specs, comparators, survey), record_end(
        {kind: list(items) for kind, items in record.resources.items()}
    )


def build_dataset(
    records: Iterable[PatientRecord],
    specs: Sequence[RiskModelSpec],
    workers: int = 1,
    progress: Callable[[Iterator], Iterator] | None = None,
    comparators: Mapping[str, Comparator] | None = None,
    survey: Sequence[RiskModelSpec] = (),
) -> Dataset:
    """Samples of every record (in record order, whatever ``workers`` is)."""
    jobs = ((record, tuple(specs), dict(comparators or {}), tuple(survey)) for record in records)
    samples: list[Sample] = []
    data_end = _EPOCH
    count = 0
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterator = pool.map(_work, jobs, chunksize=4)
            for found, end in progress(results) if progress else results:
                samples += found
                data_end = max(data_end, end)
                count += 1
    else:
        results = map(_work, jobs)
        for found, end in progress(results) if progress else results:
            samples += found
            data_end = max(data_end, end)
            count += 1
    # One order whatever the files' order (bundles or NDJSON): the folds and the trees
    # depend on row order, and the same data must give the same model.
    samples.sort(key=lambda s: (s.patient_id, s.index))
    return Dataset(samples, data_end, count)
