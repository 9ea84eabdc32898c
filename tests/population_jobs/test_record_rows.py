"""Python record rows say what the hook path reads: checked against PatientContext.

For every fourth shared Synthea patient (75 of 299: building contexts is the slow part;
the Spark rows are compared with these rows on every patient), the context the hooks
build from prefetch (active problems, active medications, latest vital sign or lab per
LOINC code, demographics) is recomputed from the record rows alone and must come out
the same. Phase 2's feature evaluator aggregates these rows; this is why its features
can equal the hooks'.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

import pytest

from fhir_adapters import build_patient_context
from fhir_adapters.context_builder import ACTIVE_PROBLEM, NOT_TRUE
from fhir_adapters.parsing import ResourceInvalid
from fhir_adapters.patient_context import Quantity
from fhir_adapters.record_rows import ObservationRow, record_rows
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type
from tests.conftest import synthea_bundles

TODAY = date(2026, 11, 25)
#: LOINC of the smoking status, the ``smoking_status`` prefetch key's one code.
SMOKING_STATUS = "72166-2"
EPOCH = datetime.min.replace(tzinfo=UTC)


def _by_patient(rows: list[object]) -> dict[str, list[object]]:
    grouped: dict[str, list[object]] = defaultdict(list)
    for row in rows:
        grouped[row.patient_id].append(row)  # type: ignore[attr-defined]
    return grouped


def test_rows_rebuild_the_shared_patients_contexts(python_rows: dict[str, list[object]]) -> None:
    patients = {row.patient_id: row for row in python_rows["patients"]}  # type: ignore[attr-defined]
    conditions = _by_patient(python_rows["conditions"])
    medications = _by_patient(python_rows["medications"])
    observations = _by_patient(python_rows["observations"])
    sample = synthea_bundles()[::4]
    for path in sample:
        resources = resources_by_type(load_bundle(path))
        patient_id = resources["Patient"][0]["id"]
        context = build_patient_context(prefetch_for(resources), patient_id, today=TODAY)

        person = patients[patient_id]
        assert (person.birth_date, person.sex, person.deceased) == (
            context.birth_date,
            context.sex,
            context.deceased,
        )
        active = {
            (r.condition_id, r.system, r.code, r.onset)
            for r in conditions[patient_id]
            if r.clinical_status in ACTIVE_PROBLEM and r.verification_status not in NOT_TRUE
        }
        assert active == {
            (p.id, c.system, c.code, p.onset) for p in context.problems for c in p.concept.codings
        }
        assert {
            (r.medication_request_id, r.code)
            for r in medications[patient_id]
            if r.status == "active"
        } == {(m.id, c.code) for m in context.medications for c in m.concept.codings}
        assert _latest(observations[patient_id]) == {
            loinc: (m.value, m.unit, m.value_text, m.effective, m.normalised, m.observation_id)
            for loinc, m in context.latest.items()
        }
    assert len(sample) == 75 and len(patients) == len(synthea_bundles())


def _latest(rows: list[ObservationRow]) -> dict[str, tuple[object, ...]]:
    """The newest vital sign, lab or smoking status per LOINC code (ties: larger observation
    id), as the context keeps it (prefetch keys ``observations`` and ``smoking_status``)."""
    latest: dict[str, ObservationRow] = {}
    for row in rows:
        if row.category not in ("vital-signs", "laboratory") and row.loinc != SMOKING_STATUS:
            continue
        current = latest.get(row.loinc)
        if current is None or (row.effective or EPOCH, row.observation_id) > (
            current.effective or EPOCH,
            current.observation_id,
        ):
            latest[row.loinc] = row
    return {
        loinc: (
            r.value,
            r.unit,
            r.value_text,
            r.effective,
            Quantity(r.normalised_value, r.normalised_unit) if r.normalised_unit else None,
            r.observation_id,
        )
        for loinc, r in latest.items()
    }


def test_a_resource_that_is_not_valid_fhir_is_refused() -> None:
    with pytest.raises(ResourceInvalid):
        record_rows({"resourceType": "Condition", "id": "c1", "subject": "Patient/p1"})


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Condition", "code": {"text": "x"}, "subject": {"reference": "Patient/p"}},
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Group/g1"},
        },
    ],
)
def test_a_resource_without_an_id_or_a_patient_gives_no_rows(resource: dict) -> None:
    assert record_rows(resource)[1] == []


def test_a_type_without_rows_is_passed_over() -> None:
    assert record_rows({"resourceType": "Claim", "id": "c"}) == ("", [])
