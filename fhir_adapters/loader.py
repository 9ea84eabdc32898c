"""The adapters' one door: a hook request's prefetch and FHIR server in, a PatientContext out.

:class:`PatientLoader` resolves the service's prefetch templates (EHR prefetch first, the
FHIR server for what is missing, under one deadline), builds the :class:`PatientContext`,
and, for services that read pixels, retrieves the imaging studies' DICOM over DICOMweb.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapters.context_builder import PrefetchDataInvalid, build_patient_context
from fhir_adapters.dicomweb_auth import DicomWebAccess, DicomWebSessions
from fhir_adapters.fhir_client import BinaryContent, FhirClient, FhirError, SessionPool
from fhir_adapters.imaging import (
    DicomImage,
    ImageSkip,
    ImagingLimits,
    ImagingStudyRef,
    retrieve_study_images,
    xray_studies,
)
from fhir_adapters.patient_context import PatientContext, frozen_mapping
from fhir_adapters.prefetch import KeyOutcome, PrefetchFetcher, ResolvedPrefetch
from fhir_adapters.report_text import BinaryUnavailable, TextLimits

#: The modalities whose instances ``with_images`` retrieves (single-frame X-rays).
IMAGE_MODALITIES = ("DX", "CR")


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
    #: With ``with_images``: only studies started at or after this (aware) are retrieved.
    images_since: datetime | None = None
    #: ``time.perf_counter()`` when the hook call arrived: the fetch deadline counts from it.
    started: float | None = None


class PatientLoader:
    def __init__(
        self,
        pool: SessionPool,
        fetcher: PrefetchFetcher,
        text_limits: TextLimits | None = None,
        imaging_limits: ImagingLimits | None = None,
        dicomweb_access: DicomWebAccess | None = None,
        imaging_total_timeout_s: float | None = None,
    ) -> None:
        """``dicomweb_access``: credentials per DICOMweb origin (default: the FHIR token to
        the FHIR server's own origin only). ``imaging_total_timeout_s``: deadline for all of
        one request's image retrieval (default: twice ``imaging_limits.timeout_s``)."""
        self.pool = pool
        self.fetcher = fetcher
        self.text_limits = text_limits or TextLimits()
        self.imaging_limits = imaging_limits or ImagingLimits()
        self.dicomweb = DicomWebSessions(dicomweb_access)
        self.imaging_total_timeout_s = (
            imaging_total_timeout_s
            if imaging_total_timeout_s is not None
            else 2 * self.imaging_limits.timeout_s
        )
        if self.imaging_total_timeout_s <= 0:
            raise ValueError("imaging_total_timeout_s must be positive")

    def client(self, source: FhirSource) -> FhirClient | None:
        if source.server is None:
            return None
        return FhirClient(source.server, source.access_token, self.pool)

    def load(self, request: PatientRequest) -> LoadedPatient:
        client = self.client(request.source)
        resolved = self.fetcher.resolve(
            request.templates, request.supplied, request.context, client, request.started
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
        if request.with_images:
            patient = dataclasses.replace(patient, images_since=request.images_since)
            if client is not None:
                patient = self._with_images(patient, client, request.source)
        return LoadedPatient(patient=patient, prefetch=resolved)

    def _with_images(
        self, patient: PatientContext, client: FhirClient, source: FhirSource
    ) -> PatientContext:
        """Retrieve the X-rays (:data:`IMAGE_MODALITIES`) of the studies, newest study first.

        Studies without such a series, and (with ``patient.images_since``) studies started
        before it or without a start date, are passed over (no Endpoint read, no warning).
        Each study's Endpoint is read from the FHIR server; the credentials sent to it are
        those ``dicomweb_access`` gives its origin. Two caps for all studies together: at
        most ``imaging_limits.max_instances`` instances, and ``imaging_total_timeout_s``,
        checked before each study (later studies are then not retrieved) and cutting each
        instance's timeout to the time left when its study starts. It is not re-checked
        within a study, so the study under way may overrun it by up to (its instances - 1)
        x that time left. Failures become warnings and ``image_skips``; nothing is raised.
        """
        limits = self.imaging_limits
        deadline = time.monotonic() + self.imaging_total_timeout_s
        images: list[DicomImage] = []
        skips: list[ImageSkip] = []
        sources: dict[str, str] = {}
        warnings = list(patient.warnings)
        studies = xray_studies(patient.imaging_studies, patient.images_since, IMAGE_MODALITIES)
        for index, study in enumerate(studies):
            label = _study_label(study)
            remaining_instances = limits.max_instances - len(images)
            remaining_s = deadline - time.monotonic()
            if remaining_instances <= 0 or remaining_s <= 0:
                reason = (
                    f"max_instances ({limits.max_instances}) reached"
                    if remaining_instances <= 0
                    else f"deadline of {self.imaging_total_timeout_s:g} s reached"
                )
                warnings.append(f"imaging: {len(studies) - index} studies not retrieved: {reason}")
                skips.extend(_study_skip(s, f"not retrieved: {reason}") for s in studies[index:])
                break
            address = _endpoint_address(client, study.endpoint_references)
            if address is None:
                warnings.append(f"imaging: study {label} has no DICOMweb endpoint")
                skips.append(_study_skip(study, "no DICOMweb endpoint"))
                continue
            call_limits = dataclasses.replace(
                limits,
                max_instances=remaining_instances,
                timeout_s=min(limits.timeout_s, remaining_s),
            )
            session = self.dicomweb.session_for(address, source.server, source.access_token)
            result = retrieve_study_images(
                study, address, session=session, limits=call_limits, modalities=IMAGE_MODALITIES
            )
            if study.study_uid:
                sources[study.study_uid] = address
            images.extend(result.images)
            warnings.extend(f"imaging: {label}: {s.uid}: {s.reason}" for s in result.skipped)
            skips.extend(
                ImageSkip(study.study_uid, study.resource_id, s.uid, s.reason)
                for s in result.skipped
            )
        return dataclasses.replace(
            patient,
            images=tuple(images[: limits.max_instances]),
            image_skips=tuple(skips),
            image_sources=frozen_mapping(sources),
            warnings=tuple(warnings),
        )


def _study_skip(study: ImagingStudyRef, reason: str) -> ImageSkip:
    return ImageSkip(study.study_uid, study.resource_id, None, reason)


def _study_label(study: ImagingStudyRef) -> str:
    """How a warning names a study: its DICOM UID, else its FHIR id (never ``None``)."""
    if study.study_uid:
        return study.study_uid
    if study.resource_id:
        return f"ImagingStudy/{study.resource_id}"
    return "(ImagingStudy without UID or id)"


def _binary_fetcher(client: FhirClient | None):  # type: ignore[no-untyped-def]
    if client is None:
        return None

    def fetch(url: str) -> BinaryContent:
        try:
            return client.binary(url)
        except FhirError as exc:
            raise BinaryUnavailable(exc.code) from None

    return fetch


#: Endpoint.connectionType codes that name a DICOMweb (WADO-RS) service.
DICOMWEB_CONNECTION_TYPES = frozenset({"dicom-wado-rs"})


def _is_dicomweb(endpoint: Mapping[str, Any]) -> bool:
    """An active Endpoint whose connectionType is WADO-RS, with an absolute http(s) address."""
    connection = endpoint.get("connectionType")
    code = connection.get("code") if isinstance(connection, dict) else None
    address = str(endpoint.get("address") or "")
    return (
        endpoint.get("resourceType") == "Endpoint"
        and endpoint.get("status") == "active"
        and code in DICOMWEB_CONNECTION_TYPES
        and address.startswith(("http://", "https://"))
    )


def _endpoint_address(client: FhirClient, references: Sequence[str]) -> str | None:
    for reference in references:
        try:
            endpoint = client.get(reference)
        except FhirError:
            continue
        if _is_dicomweb(endpoint):
            return str(endpoint["address"])
    return None
