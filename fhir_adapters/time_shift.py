"""Move a whole record in time by a number of days (demos and tests of synthetic data).

The shared Synthea records end on their export date (2021-03-31). A live hook evaluates
"today", so unshifted, every laboratory value and blood pressure is years old and every
risk score rightly refuses them as stale. :func:`shift_record` moves every full date and
date-time of every resource (birth date included, so ages are kept) by the same number
of days, as date-shifting de-identification does; partial dates (``2020``, ``2020-03``)
are left as they are. It is for demonstrations and tests only: a real EHR's record is
never shifted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

#: FHIR date (full) or dateTime/instant with time: what is shifted.
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")
#: Element names that hold dates in FHIR R4 resources, besides ``*Date``/``*DateTime``/
#: ``*Instant``: period bounds, ``issued``, ``authoredOn`` and the like.
DATE_ELEMENTS = frozenset(
    {
        "start",
        "end",
        "issued",
        "authoredOn",
        "created",
        "recorded",
        "started",
        "date",
        "lastUpdated",
        "whenHandedOver",
        "whenPrepared",
        "occurrenceDateTime",
        "timestamp",
    }
)


def _is_date_element(name: str) -> bool:
    return name in DATE_ELEMENTS or name.endswith(("Date", "DateTime", "Instant"))


def shift_value(value: str, days: int) -> str:
    """``value`` moved by ``days`` if it is a full FHIR date or date-time, else unchanged."""
    if _FULL_DATE.match(value):
        return (date.fromisoformat(value) + timedelta(days=days)).isoformat()
    if _DATE_TIME.match(value):
        moved = datetime.fromisoformat(value.replace("Z", "+00:00")) + timedelta(days=days)
        text = moved.isoformat()
        return text.replace("+00:00", "Z") if value.endswith("Z") else text
    return value


def _shift(item: Any, days: int) -> Any:
    if isinstance(item, dict):
        return {
            key: (
                shift_value(value, days)
                if isinstance(value, str) and _is_date_element(key)
                else _shift(value, days)
            )
            for key, value in item.items()
        }
    if isinstance(item, list):
        return [_shift(value, days) for value in item]
    return item


def shift_record(
    resources: Mapping[str, Sequence[dict[str, Any]]], days: int
) -> dict[str, list[dict[str, Any]]]:
    """Every resource of the record with its dates moved by ``days`` (input unchanged)."""
    return {kind: [_shift(r, days) for r in items] for kind, items in resources.items()}


def days_between(anchor: date, to: date) -> int:
    """The shift that moves ``anchor`` (e.g. a data set's export date) onto ``to``."""
    return (to - anchor).days
