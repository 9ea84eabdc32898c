"""Match what the EHR prefetched against what a service declared.

CDS Hooks 2.0: a key that is *absent* means the client did not (or could not) prefetch
it; a key present with ``null`` means the client looked and found nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrefetchResult:
    #: key → FHIR JSON, or None where the EHR reported no data.
    data: Mapping[str, dict[str, Any] | None]
    #: keys the EHR supplied (null included).
    used: tuple[str, ...]
    #: declared keys the EHR did not supply.
    missing: tuple[str, ...]


def collect_prefetch(
    templates: Mapping[str, str], supplied: Mapping[str, dict[str, Any] | None] | None
) -> PrefetchResult:
    supplied = supplied or {}
    used = tuple(key for key in templates if key in supplied)
    missing = tuple(key for key in templates if key not in supplied)
    return PrefetchResult(data={key: supplied[key] for key in used}, used=used, missing=missing)
