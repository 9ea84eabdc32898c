"""A patient's record as it stood on an earlier date: what an EHR would have served then.

Training a risk model needs, for each index date T, the features a clinician's EHR would
have produced *on T*, with nothing learned later. Rather than a second, "historical"
feature code path, :func:`record_as_of` rewinds the FHIR resources themselves; the result
goes through the same ``prefetch_for`` → ``build_patient_context(today=T)`` → feature
evaluator as a live hook call. Rules (FHIR R4 element names):

* a resource recorded after T is dropped: Condition (``recordedDate``, else the onset),
  Observation (``effective[x]``, else ``issued``), MedicationRequest (``authoredOn``),
  Encounter (``period.start``), AllergyIntolerance (``recordedDate``/``onset``),
  Procedure, Immunization, DiagnosticReport, DocumentReference, ImagingStudy, CarePlan,
  Claim, ExplanationOfBenefit, CareTeam by their own dates;
* a resource of those types without any date is dropped (it cannot be placed in time);
* a Condition that abated after T was still active on T: its abatement is removed and its
  clinical status set to ``active``;
* an Encounter or CarePlan still under way on T loses its end and becomes ``in-progress``
  (``active`` for a CarePlan);
* a Patient who died after T is alive on T (``deceased[x]`` removed);
* resources without a time of their own (Organization, Practitioner, Location,
  Medication, …) are kept; any other type is dropped, so nothing unknown can leak.

Known limit: a MedicationRequest carries no end date in R4, so one authored before T
keeps today's ``status`` (``stopped``/``completed`` may have happened after T). Features
therefore window medication requests by ``authoredOn`` and never read their status.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fhir_adapters.parsing import fhir_datetime

Resource = dict[str, Any]
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

#: Types that have no time of their own: kept whatever T is.
TIMELESS = frozenset(
    {
        "Patient",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Location",
        "Medication",
        "Endpoint",
        "Device",
        "Substance",
        "RelatedPerson",
    }
)


def json_datetime(value: str) -> datetime | None:
    """A FHIR date, dateTime or instant as JSON text → aware datetime (partial dates start
    their period; no zone is UTC); None if it is not one."""
    if len(value) <= 7:  # "2020", "2020-03"
        return fhir_datetime(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return fhir_datetime(parsed)


def _first(resource: Resource, *paths: str) -> datetime | None:
    """The first of ``paths`` (dotted, e.g. ``period.start``) that holds a FHIR date."""
    for path in paths:
        value: Any = resource
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and (when := json_datetime(value)) is not None:
            return when
    return None


#: resource type → the elements that say when the EHR knew of it, in order of preference.
RECORDED_AT: dict[str, tuple[str, ...]] = {
    "Condition": ("recordedDate", "onsetDateTime", "onsetPeriod.start"),
    "Observation": (
        "effectiveDateTime",
        "effectiveInstant",
        "effectivePeriod.start",
        "issued",
    ),
    "MedicationRequest": ("authoredOn",),
    "Encounter": ("period.start",),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime"),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "DocumentReference": ("date",),
    "ImagingStudy": ("started",),
    "CarePlan": ("period.start", "created"),
    "CareTeam": ("period.start",),
    "Claim": ("billablePeriod.start", "created"),
    "ExplanationOfBenefit": ("billablePeriod.start", "created"),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
    "SupplyDelivery": ("occurrenceDateTime",),
    "Provenance": ("recorded",),
}


def _condition_on(resource: Resource, at: datetime) -> Resource:
    abated = _first(resource, "abatementDateTime", "abatementPeriod.end")
    if abated is None or abated <= at:
        return resource
    rewound = {k: v for k, v in resource.items() if not k.startswith("abatement")}
    rewound["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]}
    return rewound


def _period_open_on(status: str) -> Callable[[Resource, datetime], Resource]:
    def rewind(resource: Resource, at: datetime) -> Resource:
        ended = _first(resource, "period.end")
        if ended is None or ended <= at:
            return resource
        rewound = copy.deepcopy(resource)
        rewound["period"].pop("end", None)
        rewound["status"] = status
        return rewound

    return rewind


def _patient_on(resource: Resource, at: datetime) -> Resource:
    died = _first(resource, "deceasedDateTime")
    if died is None or died <= at:
        return resource
    return {k: v for k, v in resource.items() if not k.startswith("deceased")}


REWIND: dict[str, Callable[[Resource, datetime], Resource]] = {
    "Condition": _condition_on,
    "Encounter": _period_open_on("in-progress"),
    "CarePlan": _period_open_on("active"),
    "Patient": _patient_on,
}


def resource_as_of(resource: Resource, at: datetime) -> Resource | None:
    """``resource`` as it stood at ``at``, or None if the EHR did not have it yet."""
    kind = str(resource.get("resourceType"))
    if kind not in TIMELESS:
        fields = RECORDED_AT.get(kind)
        if fields is None:
            return None
        recorded = _first(resource, *fields)
        if recorded is None or recorded > at:
            return None
    rewind = REWIND.get(kind)
    return rewind(resource, at) if rewind else resource


def record_as_of(
    resources: Mapping[str, Sequence[Resource]], at: datetime
) -> dict[str, list[Resource]]:
    """The record (resources by type, as ``synthea.resources_by_type`` gives them) on ``at``.

    ``at`` must be timezone-aware. The input is never modified.
    """
    if at.tzinfo is None:
        raise ValueError("record_as_of needs a timezone-aware datetime")
    rewound: dict[str, list[Resource]] = {}
    for kind, items in resources.items():
        kept = [r for item in items if (r := resource_as_of(item, at)) is not None]
        if kept:
            rewound[kind] = kept
    return rewound
