"""FHIR Bulk Data input: NDJSON folders, the ``$export`` client, Synthea conversion and clones.

Never imports ``models`` or ``cds`` (an import-linter contract keeps it so).
"""

from fhir_adapters.bulk.ndjson import (
    BulkFile,
    BulkFolder,
    BulkInputError,
    FileDigest,
    LineProblem,
    NdjsonWriter,
    ReadStats,
    digest_files,
    read_folder,
    read_resources,
    scan_folder,
)
from fhir_adapters.bulk.references import PATIENT_REFERENCE, patient_id_from_reference, patient_of

__all__ = [
    "PATIENT_REFERENCE",
    "BulkFile",
    "BulkFolder",
    "BulkInputError",
    "FileDigest",
    "LineProblem",
    "NdjsonWriter",
    "ReadStats",
    "digest_files",
    "patient_id_from_reference",
    "patient_of",
    "read_folder",
    "read_resources",
    "scan_folder",
]
