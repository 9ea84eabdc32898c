"""Which patient a bulk resource belongs to.

Bulk data arrives as loose resources; whoever groups them by patient (the Python record
rows, the Spark job, the clone generator) asks :func:`patient_of`. The same regular
expression, :data:`PATIENT_REFERENCE`, is used on the Spark side (Java regex syntax is
compatible), so both agree on which references name a patient.
"""

from __future__ import annotations

import re
from typing import Any

#: ``Patient/<id>`` relative, or the end of an absolute URL; group 1 is the id.
PATIENT_REFERENCE = r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$"
_PATIENT = re.compile(PATIENT_REFERENCE)
#: Elements that link a resource to its patient, in the order they are tried.
PATIENT_FIELDS = ("subject", "patient", "beneficiary")


def patient_id_from_reference(reference: Any) -> str | None:
    if not isinstance(reference, str):
        return None
    found = _PATIENT.search(reference)
    return found.group(1) if found else None


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource is about (its own id for a Patient), or None."""
    if resource.get("resourceType") == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for name in PATIENT_FIELDS:
        element = resource.get(name)
        if isinstance(element, dict):
            found = patient_id_from_reference(element.get("reference"))
            if found is not None:
                return found
    return None
