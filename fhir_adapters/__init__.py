"""FHIR adapters: turn what the EHR sends (or serves) into a typed :class:`PatientContext`.

The door for the HTTP layer is :class:`PatientLoader`; models see only the
:mod:`fhir_adapters.patient_context` types. Never imports ``cds`` or ``models`` (an
import-linter contract keeps it so).
"""

from fhir_adapters.context_builder import (
    PATIENT_CONTEXT_PREFETCH,
    NoPatientData,
    PrefetchDataInvalid,
    build_patient_context,
    invalid_draft_orders,
)
from fhir_adapters.dicomweb_auth import DicomWebAccess, DicomWebConfigError, parse_dicomweb_access
from fhir_adapters.fhir_client import ClientSettings, FhirClient, FhirError, SessionPool
from fhir_adapters.loader import (
    FetchedDataInvalid,
    FhirSource,
    LoadedPatient,
    PatientLoader,
    PatientRequest,
    PrefetchUnavailable,
)
from fhir_adapters.parsing import (
    ParsedEntries,
    ResourceInvalid,
    find_unstorable_text,
    parse_resource,
    parse_searchset,
    printable_path,
)
from fhir_adapters.patient_context import PatientContext
from fhir_adapters.prefetch import KeyOutcome, PrefetchFetcher, ResolvedPrefetch, render_template

__all__ = [
    "PATIENT_CONTEXT_PREFETCH",
    "ClientSettings",
    "DicomWebAccess",
    "DicomWebConfigError",
    "FetchedDataInvalid",
    "FhirClient",
    "FhirError",
    "FhirSource",
    "KeyOutcome",
    "LoadedPatient",
    "NoPatientData",
    "ParsedEntries",
    "PatientContext",
    "PatientLoader",
    "PatientRequest",
    "PrefetchDataInvalid",
    "PrefetchFetcher",
    "PrefetchUnavailable",
    "ResolvedPrefetch",
    "ResourceInvalid",
    "SessionPool",
    "build_patient_context",
    "find_unstorable_text",
    "invalid_draft_orders",
    "parse_dicomweb_access",
    "parse_resource",
    "parse_searchset",
    "printable_path",
    "render_template",
]
