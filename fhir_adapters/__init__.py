"""FHIR adapters: turn what the EHR sends (or serves) into typed FHIR R4 resources.

Never imports ``cds`` or ``models`` (an import-linter contract keeps it so).
"""

from fhir_adapters.parsing import (
    ParsedEntries,
    ResourceInvalid,
    find_unstorable_text,
    parse_resource,
    parse_searchset,
    printable_path,
)
from fhir_adapters.prefetch import PrefetchResult, collect_prefetch

__all__ = [
    "ParsedEntries",
    "PrefetchResult",
    "ResourceInvalid",
    "collect_prefetch",
    "find_unstorable_text",
    "parse_resource",
    "parse_searchset",
    "printable_path",
]
