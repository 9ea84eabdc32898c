"""No leakage: the record as of an index date, the training samples built from it, labels."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, date, datetime, timedelta
from functools import cache

import pytest

from fhir_adapters.as_of import RECORDED_AT, json_datetime, record_as_of, resource_as_of
from fhir_adapters.parsing import ParseCache
from fhir_adapters.records import PatientRecord
from fhir_adapters.synthea import load_bundle, resources_by_type
from models.risk.catalog import ACUTE_CARE_1Y, CVD_EVENT_3Y
from models.risk.features.evaluate import evaluate
from models.risk.training.dataset import (
    Sample,
    context_as_of,
    full_context,
    label,
    landmarks,
    record_samples,
)
from tests.conftest import synthea_bundles


@cache
def _record_with(kind: str) -> tuple[str, dict]:
    """A shared Synthea record with a death (``deceased``) or a resolved condition."""
    for bundle in synthea_bundles():
        resources = resources_by_type(load_bundle(bundle))
        patient = resources["Patient"][0]
        if (
            kind == "deceased"
            and patient.get("deceasedDateTime")
            and len(resources.get("Encounter", [])) > 20
        ):
            return patient["id"], resources
        if kind == "resolved" and not patient.get("deceasedDateTime"):
            resolved = [c for c in resources.get("Condition", []) if c.get("abatementDateTime")]
            if len(resolved) >= 3 and len(resources.get("Encounter", [])) > 20:
                return patient["id"], resources
    pytest.fail(f"no shared Synthea record with {kind}")


def _recorded(resource: dict) -> datetime | None:
    for path in RECORDED_AT[resource["resourceType"]]:
        value = resource
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return json_datetime(value)
    return None


def _middle(resources: dict) -> datetime:
    starts = sorted(json_datetime(e["period"]["start"]) for e in resources["Encounter"])
    return starts[len(starts) // 2] + timedelta(hours=1)


def test_nothing_recorded_after_the_index_date_survives():
    _, resources = _record_with("resolved")
    before = copy.deepcopy(resources)
    at = _middle(resources)
    rewound = record_as_of(resources, at)
    assert resources == before, "the input record is never modified"
    kept = 0
    for kind, items in rewound.items():
        for resource in items:
            if kind in RECORDED_AT:
                assert _recorded(resource) <= at, f"{kind}/{resource['id']}"
                kept += 1
    assert kept > 10
    dropped = sum(len(v) for v in resources.values()) - sum(len(v) for v in rewound.values())
    assert dropped > 10
    assert "Goal" not in rewound, "types without a known date are dropped, never leaked"
    assert rewound["Organization"] == resources["Organization"], "timeless types are kept"


def test_a_condition_resolved_after_the_index_date_was_active_on_it():
    _, resources = _record_with("resolved")
    condition = next(c for c in resources["Condition"] if c.get("abatementDateTime"))
    onset = json_datetime(condition["onsetDateTime"])
    abated = json_datetime(condition["abatementDateTime"])
    between = onset + (abated - onset) / 2
    rewound = resource_as_of(condition, between)
    assert "abatementDateTime" not in rewound
    assert rewound["clinicalStatus"]["coding"][0]["code"] == "active"
    assert resource_as_of(condition, abated + timedelta(days=1)) == condition
    assert resource_as_of(condition, onset - timedelta(days=1)) is None


def test_an_encounter_under_way_and_a_later_death():
    patient_id, resources = _record_with("deceased")
    encounter = resources["Encounter"][0]
    start = json_datetime(encounter["period"]["start"])
    during = resource_as_of(encounter, start)
    assert "end" not in during["period"] and during["status"] == "in-progress"
    assert encounter["period"]["end"], "the input keeps its end"
    died = json_datetime(resources["Patient"][0]["deceasedDateTime"])
    alive = context_as_of(resources, patient_id, died - timedelta(days=400))
    assert not alive.deceased and alive.deceased_at is None
    assert full_context(resources, patient_id).deceased


def test_the_as_of_context_is_the_serving_context_of_that_day():
    patient_id, resources = _record_with("resolved")
    at = _middle(resources)
    context = context_as_of(resources, patient_id, at)
    assert context.as_of == at.date()
    birth = context.birth_date
    assert context.age_years == at.year - birth.year - (
        (at.month, at.day) < (birth.month, birth.day)
    )
    assert all(m.effective <= at for values in context.history.values() for m in values)
    assert all(p.onset <= at for p in context.conditions)
    assert all(e.start <= at for e in context.encounters)
    assert all(m.authored_on <= at for m in context.medication_history)


def test_reusing_parsed_resources_gives_the_same_contexts():
    patient_id, resources = _record_with("resolved")
    cache = ParseCache()
    starts = sorted(json_datetime(e["period"]["start"]) for e in resources["Encounter"])
    for at in starts[:: max(1, len(starts) // 5)]:
        assert context_as_of(resources, patient_id, at, cache) == context_as_of(
            resources, patient_id, at
        )


def test_the_future_cannot_change_the_features():
    """Features at T are identical when everything after T is replaced by something else."""
    patient_id, resources = _record_with("resolved")
    at = _middle(resources)
    altered = copy.deepcopy(resources)
    future = (at + timedelta(days=30)).isoformat()
    for observation in altered["Observation"]:
        if (
            json_datetime(observation.get("effectiveDateTime", "")) > at
            and "valueQuantity" in observation
        ):
            observation["valueQuantity"]["value"] = 999.0
    altered["Condition"].append(
        {
            **copy.deepcopy(altered["Condition"][0]),
            "id": "future-mi",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "22298006"}]},
            "onsetDateTime": future,
            "recordedDate": future,
        }
    )
    altered["Encounter"].append(
        {
            **copy.deepcopy(altered["Encounter"][0]),
            "id": "future-er",
            "class": {"code": "EMER"},
            "period": {"start": future, "end": future},
        }
    )
    for spec in (CVD_EVENT_3Y, ACUTE_CARE_1Y):
        now = evaluate(spec.features, context_as_of(resources, patient_id, at))
        later = evaluate(spec.features, context_as_of(altered, patient_id, at))
        assert now.values == pytest.approx(later.values, nan_ok=True)
    # ...while the same change before T does change them (the check has teeth).
    past = (at - timedelta(days=30)).isoformat()
    altered["Encounter"][-1]["period"] = {"start": past, "end": past}
    changed = evaluate(ACUTE_CARE_1Y.features, context_as_of(altered, patient_id, at))
    original = evaluate(ACUTE_CARE_1Y.features, context_as_of(resources, patient_id, at))
    assert changed.as_dict()["emergency_1y"] == original.as_dict()["emergency_1y"] + 1


def test_samples_index_dates_and_labels():
    patient_id, resources = _record_with("deceased")
    record = PatientRecord(patient_id, resources, "test")
    full = full_context(resources, patient_id)
    dates = landmarks(full, ("AMB",), 365)
    assert all(b - a >= timedelta(days=365) for a, b in itertools.pairwise(dates))
    samples = record_samples(record, [ACUTE_CARE_1Y])
    assert samples and all(s.age >= 18 for s in samples)
    assert all(s.death == full.deceased_at and s.index < s.death for s in samples)
    first = samples[0]
    assert (
        first.features["acute-care-1y"]
        == evaluate(
            ACUTE_CARE_1Y.features, context_as_of(resources, patient_id, first.index)
        ).values
    )


def _sample(index: str, event: str | None, death: str | None = None) -> Sample:
    day = lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC)  # noqa: E731
    return Sample(
        "p",
        day(index),
        50,
        eligible={"m"},
        features={"m": ()},
        events={"m": day(event) if event else None},
        death=day(death) if death else None,
    )


@pytest.mark.parametrize(
    ("index", "event", "death", "expected"),
    [
        ("2015-01-01", "2016-06-01", None, 1),  # event within the 3-year horizon
        ("2015-01-01", "2019-01-01", None, 0),  # event after the horizon
        ("2015-01-01", None, None, 0),  # no event, followed to the data end
        ("2015-01-01", "2014-01-01", None, None),  # the condition was already there
        ("2019-06-01", None, None, None),  # horizon beyond the data end: censored
        ("2019-06-01", "2020-01-01", None, 1),  # ...unless the event came first
        ("2015-01-01", None, "2016-01-01", None),  # died without the event: not a negative
        ("2015-01-01", "2015-06-01", "2016-01-01", 1),  # the event, then death
    ],
)
def test_labels_follow_the_horizon_and_censoring(index, event, death, expected):
    spec = type(CVD_EVENT_3Y)(**{**CVD_EVENT_3Y.__dict__, "id": "m"})
    data_end = datetime(2021, 3, 31, tzinfo=UTC)
    assert label(spec, _sample(index, event, death), data_end) == expected


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        record_as_of({}, datetime(2020, 1, 1))
    assert json_datetime("2020") == datetime(2020, 1, 1, tzinfo=UTC)
    assert json_datetime("2020-03-04") == datetime(2020, 3, 4, tzinfo=UTC)
    assert json_datetime("not a date") is None
    assert date(2020, 1, 1) == json_datetime("2020-01-01T10:00:00+05:00").date()
