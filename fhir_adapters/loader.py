"""The adapters' one door: a hook request's prefetch and FHIR server in, a PatientContext out.

:class:`PatientLoader` resolves the service's prefetch templates (EHR prefetch first, the
FHIR server for what is missing, under one deadline), builds the :class:`PatientContext`,
and, for services that read pixels, retrieves the imaging studies' DICOM over DICOMweb.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_adapters.context_builder import PrefetchDataInvalid, build_patient_context
from fhir_adapters.fhir_client import BinaryContent, FhirClient, FhirError, SessionPool
from fhir_adapters.imaging import DicomImage, ImagingLimits, retrieve_study_images
from fhir_adapters.patient_context import PatientContext
from fhir_adapters.prefetch import KeyOutcome, PrefetchFetcher, ResolvedPrefetch
from fhir_adapters.report_text import BinaryUnavailable, TextLimits


@dataclass(frozen=True)
class FhirSource:
    """Where the EHR said its data lives (``fhirServer``) and the token for it, if any."""

    server: str | None
    access_token: str | None = None

    def __repr__(self) -> str:
        return f"FhirSource(server={self.server!r})"


class PrefetchUnavailable(RuntimeError):
    """Data the service requires was neither prefetched nor fetchable (CDS Hooks: 412)."""

    def __init__(self, missing: Sequence[str], reasons: Mapping[str, str]) -> None:
        super().__init__("required prefetch was not supplied and could not be fetched")
        self.missing = tuple(missing)
        self.reasons = dict(reasons)
        #: How every key was (or was not) obtained, for the audit log.
        self.outcomes: tuple[KeyOutcome, ...] = ()


class FetchedDataInvalid(RuntimeError):
    """The FHIR server's own answer was unusable (not the EHR's prefetch: no 400 to give)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class LoadedPatient:
    patient: PatientContext
    prefetch: ResolvedPrefetch


@dataclass(frozen=True)
class PatientRequest:
    """What the loader needs from a hook call (built by the HTTP layer)."""

    templates: Mapping[str, str]
    required: frozenset[str]
    supplied: Mapping[str, dict[str, Any] | None] | None
    #: The hook context's fields (``patientId``, ``userId``, ``encounterId``, …).
    context: Mapping[str, Any]
    source: FhirSource
    draft_orders: Mapping[str, Any] | None = None
    selections: Sequence[str] = ()
    with_images: bool = False


class PatientLoader:
    def __init__(
        self,
        pool: SessionPool,
        fetcher: PrefetchFetcher,
        text_limits: TextLimits | None = None,
        imaging_limits: ImagingLimits | None = None,
    ) -> None:
        self.pool = pool
        self.fetcher = fetcher
        self.text_limits = text_limits or TextLimits()
        self.imaging_limits = imaging_limits or ImagingLimits()

    def client(self, source: FhirSource) -> FhirClient | None:
        if source.server is None:
            return None
        return FhirClient(source.server, source.access_token, self.pool)

    def load(self, request: PatientRequest) -> LoadedPatient:
        client = self.client(request.source)
        resolved = self.fetcher.resolve(
            request.templates, request.supplied, request.context, client
        )
        unavailable = resolved.unavailable
        missing = sorted(request.required & set(unavailable))
        if missing:
            error = PrefetchUnavailable(missing, {key: unavailable[key] for key in missing})
            error.outcomes = resolved.outcomes
            raise error
        fetch_binary = _binary_fetcher(client)
        try:
            patient = build_patient_context(
                resolved.data,
                str(request.context["patientId"]),
                encounter_id=request.context.get("encounterId"),
                draft_orders_bundle=request.draft_orders,
                selections=request.selections,
                unavailable=unavailable,
                supplied_keys=frozenset(resolved.supplied),
                fetch_binary=fetch_binary,
                text_limits=self.text_limits,
            )
        except PrefetchDataInvalid as exc:
            if exc.key in resolved.supplied:
                raise  # the EHR's prefetch is wrong: the caller answers 400
            raise FetchedDataInvalid(exc.key, str(exc)) from None
        if request.with_images and client is not None:
            patient = self._with_images(patient, client)
        return LoadedPatient(patient=patient, prefetch=resolved)

    def _with_images(self, patient: PatientContext, client: FhirClient) -> PatientContext:
        images: list[DicomImage] = []
        warnings = list(patient.warnings)
        for study in patient.imaging_studies:
            address = _endpoint_address(client, study.endpoint_references)
            if address is None:
                warnings.append(f"imaging: study {study.study_uid} has no DICOMweb endpoint")
                continue
            result = retrieve_study_images(study, address, session=None, limits=self.imaging_limits)
            images.extend(result.images)
            warnings.extend(f"imaging: {s.uid}: {s.reason}" for s in result.skipped)
            if len(images) >= self.imaging_limits.max_instances:
                break
        return dataclasses.replace(
            patient,
            images=tuple(images[: self.imaging_limits.max_instances]),
            warnings=tuple(warnings),
        )


def _binary_fetcher(client: FhirClient | None):  # type: ignore[no-untyped-def]
    if client is None:
        return None

    def fetch(url: str) -> BinaryContent:
        try:
            return client.binary(url)
        except FhirError as exc:
            raise BinaryUnavailable(exc.code) from None

    return fetch


def _endpoint_address(client: FhirClient, references: Sequence[str]) -> str | None:
    for reference in references:
        try:
            endpoint = client.get(reference)
        except FhirError:
            continue
        if endpoint.get("resourceType") == "Endpoint" and endpoint.get("address"):
            return str(endpoint["address"])
    return None
