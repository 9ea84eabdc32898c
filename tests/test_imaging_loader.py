"""PatientLoader ``with_images``: ImagingStudy → Endpoint → DICOMweb, with credentials per origin.

Server tests run the loader against the session's real sekmet-fhir (Synthea data) and
Orthanc (the Synthea X-rays, HTTP Basic auth): they store an ``Endpoint`` naming Orthanc's
DICOMweb root and point two patients' ImagingStudies at it, and put everything back
afterwards (other modules compare the server's data with the Synthea bundles).
Configuration tests (``DicomWebAccess`` and ``Settings``) need no server.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from cds.config import ConfigError, Settings
from fhir_adapters import (
    PATIENT_CONTEXT_PREFETCH,
    ClientSettings,
    FhirSource,
    LoadedPatient,
    PatientLoader,
    PatientRequest,
    PrefetchFetcher,
    SessionPool,
)
from fhir_adapters.dicomweb_auth import (
    NO_CREDENTIALS,
    REUSE_FHIR_TOKEN,
    BasicCredentials,
    BearerAuth,
    BearerCredentials,
    DicomWebAccess,
    DicomWebConfigError,
    DicomWebSessions,
    origin_of,
    parse_dicomweb_access,
)
from fhir_adapters.imaging import ImagingLimits
from tests.support.dicom_fixtures import FixtureStudy, wado_rs_endpoint
from tests.support.dicomweb_server import DicomWebServer
from tests.support.fhir_server import FhirServer

XRAY = ("DX", "CR")


# --------------------------------------------------------------------------- server set-up
def _get(fhir_server: FhirServer, path: str) -> dict[str, Any]:
    response = fhir_server.request("GET", path)
    assert response.status_code == 200, response.text[:2000]
    body: dict[str, Any] = response.json()
    return body


def _put(fhir_server: FhirServer, resource: dict[str, Any]) -> None:
    path = f"{resource['resourceType']}/{resource['id']}"
    response = fhir_server.request("PUT", path, resource)
    assert response.status_code in (200, 201), response.text[:2000]


def _is_xray(imaging_study: dict[str, Any]) -> bool:
    return any(s["modality"]["code"] in XRAY for s in imaging_study.get("series", []))


def _xray_instance_count(imaging_study: dict[str, Any]) -> int:
    series = imaging_study.get("series", [])
    return sum(len(s.get("instance", [])) for s in series if s["modality"]["code"] in XRAY)


@dataclass(frozen=True)
class ImagingPatient:
    id: str
    #: Its X-ray studies, newest first (the loader's order).
    studies: tuple[FixtureStudy, ...]


def _two_study_patients(
    fhir_server: FhirServer, dicomweb_server: DicomWebServer, wanted: int
) -> list[ImagingPatient]:
    """Patients with exactly two X-ray studies on the FHIR server, both on Orthanc in full."""
    found: list[ImagingPatient] = []
    on_fhir = set(fhir_server.patient_ids)
    for patient_id, studies in sorted(dicomweb_server.fixtures.by_patient().items()):
        if patient_id not in on_fhir or len(studies) != 2:
            continue
        if any(len(s.instances) != _xray_instance_count(s.imaging_study) for s in studies):
            continue  # Orthanc holds only part of a study (reused UIDs)
        bundle = _get(fhir_server, f"ImagingStudy?patient={patient_id}&_count=200")
        xray_ids = {e["resource"]["id"] for e in bundle.get("entry", []) if _is_xray(e["resource"])}
        if xray_ids != {s.imaging_study["id"] for s in studies}:
            continue
        ordered = sorted(
            studies,
            key=lambda s: (s.imaging_study["started"], s.imaging_study["id"]),
            reverse=True,
        )
        found.append(ImagingPatient(patient_id, tuple(ordered)))
        if len(found) == wanted:
            return found
    pytest.fail(f"fewer than {wanted} patients with two X-ray studies on both servers")


@dataclass(frozen=True)
class Stored:
    #: Its two studies point at the Endpoint.
    with_endpoint: ImagingPatient
    #: No study has an endpoint; its first study also lost its DICOM UID identifier.
    without_endpoint: ImagingPatient
    endpoint_id: str


@pytest.fixture(scope="module")
def stored(fhir_server: FhirServer, dicomweb_server: DicomWebServer) -> Iterator[Stored]:
    with_endpoint, without_endpoint = _two_study_patients(fhir_server, dicomweb_server, 2)
    endpoint_id = f"wardround-test-{uuid.uuid4().hex[:16]}"
    originals: list[dict[str, Any]] = []
    try:
        _put(
            fhir_server,
            wado_rs_endpoint(endpoint_id, dicomweb_server.base_url),
        )
        for study in with_endpoint.studies:
            current = _get(fhir_server, f"ImagingStudy/{study.imaging_study['id']}")
            originals.append(copy.deepcopy(current))
            current["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
            _put(fhir_server, current)
        no_uid = _get(
            fhir_server, f"ImagingStudy/{without_endpoint.studies[0].imaging_study['id']}"
        )
        originals.append(copy.deepcopy(no_uid))
        no_uid.pop("identifier", None)
        _put(fhir_server, no_uid)
        yield Stored(with_endpoint, without_endpoint, endpoint_id)
    finally:
        for original in originals:  # as loaded (other modules compare with the bundles)
            original.pop("meta", None)
            _put(fhir_server, original)
        deleted = fhir_server.request("DELETE", f"Endpoint/{endpoint_id}")
        assert deleted.status_code in (200, 204), deleted.text[:2000]


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def _access(dicomweb_server: DicomWebServer, password: str) -> DicomWebAccess:
    """Orthanc's credentials through the JSON configuration, the password from 'env'."""
    config = {
        origin_of(dicomweb_server.base_url): {
            "basic": {"username": dicomweb_server.username, "password_env": "ORTHANC_PASSWORD"}
        }
    }
    return parse_dicomweb_access(json.dumps(config), {"ORTHANC_PASSWORD": password})


def _load(
    fhir_server: FhirServer,
    executor: ThreadPoolExecutor,
    patient_id: str,
    access: DicomWebAccess | None,
    images_since: datetime | None = None,
    **loader_options: Any,
) -> LoadedPatient:
    pool = SessionPool(ClientSettings(timeout=(2.0, 10.0)))
    loader = PatientLoader(
        pool,
        PrefetchFetcher(executor, deadline_s=30.0),
        dicomweb_access=access,
        **loader_options,
    )
    try:
        return loader.load(
            PatientRequest(
                templates=PATIENT_CONTEXT_PREFETCH,
                required=frozenset({"patient"}),
                supplied=None,
                context={"patientId": patient_id, "userId": "Practitioner/x"},
                source=FhirSource(fhir_server.base_url, fhir_server.token),
                with_images=True,
                images_since=images_since,
            )
        )
    finally:
        loader.dicomweb.close()
        pool.close()


def _imaging_warnings(loaded: LoadedPatient) -> list[str]:
    return [w for w in loaded.patient.warnings if w.startswith("imaging:")]


# --------------------------------------------------------------------------- with the servers
@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_images_of_every_study_with_basic_credentials(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
    source_images: np.ndarray,
) -> None:
    patient = stored.with_endpoint
    access = _access(dicomweb_server, dicomweb_server.password)
    loaded = _load(fhir_server, executor, patient.id, access)
    assert _imaging_warnings(loaded) == []
    instances = [i for study in patient.studies for i in study.instances]
    images = loaded.patient.images
    assert len(images) == len(instances) == 2
    for image, instance in zip(images, instances, strict=True):
        assert image.study_uid == instance.study_uid
        assert image.series_uid == instance.series_uid
        assert image.sop_instance_uid == instance.sop_instance_uid
        assert image.patient_id == patient.id
        assert image.modality == instance.modality
        assert not image.pixels.flags.writeable
        # 8 bits, rescale 1/0, DX window 128/256: the decoded pixels are the source image.
        assert instance.source_index is not None
        expected = source_images[instance.source_index].astype(np.float32)
        np.testing.assert_array_equal(image.pixels, expected)


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_a_wrong_password_gives_no_images_and_a_warning(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    access = _access(dicomweb_server, dicomweb_server.password + "-wrong")
    loaded = _load(fhir_server, executor, stored.with_endpoint.id, access)
    assert loaded.patient.images == ()
    warnings = _imaging_warnings(loaded)
    assert len(warnings) == 2
    for warning, study in zip(warnings, stored.with_endpoint.studies, strict=True):
        instance = study.instances[0]
        expected = f"{study.study_uid}: {instance.sop_instance_uid}: not authorised"
        assert warning.startswith(f"imaging: {expected} by the DICOMweb server (HTTP 401)")
    assert dicomweb_server.password not in repr(loaded.patient)
    assert [(s.study_uid, s.study_id, s.instance_uid) for s in loaded.patient.image_skips] == [
        (study.study_uid, study.imaging_study["id"], study.instances[0].sop_instance_uid)
        for study in stored.with_endpoint.studies
    ]
    assert all("(HTTP 401)" in s.reason for s in loaded.patient.image_skips)


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_an_unlisted_origin_gets_no_credentials_not_the_fhir_token(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    # Orthanc's origin differs from the FHIR server's (another port): nothing is sent.
    assert origin_of(dicomweb_server.base_url) != origin_of(fhir_server.base_url)
    loaded = _load(fhir_server, executor, stored.with_endpoint.id, None)
    assert loaded.patient.images == ()
    assert all("(HTTP 401)" in w for w in _imaging_warnings(loaded))


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_max_instances_holds_across_studies(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    access = _access(dicomweb_server, dicomweb_server.password)
    loaded = _load(
        fhir_server, executor, stored.with_endpoint.id, access, imaging_limits=ImagingLimits(1)
    )
    newest = stored.with_endpoint.studies[0].instances[0]
    assert [i.sop_instance_uid for i in loaded.patient.images] == [newest.sop_instance_uid]
    assert _imaging_warnings(loaded) == [
        "imaging: 1 studies not retrieved: max_instances (1) reached"
    ]


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_the_total_deadline_stops_retrieval(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    access = _access(dicomweb_server, dicomweb_server.password)
    loaded = _load(
        fhir_server, executor, stored.with_endpoint.id, access, imaging_total_timeout_s=1e-9
    )
    assert loaded.patient.images == ()
    assert _imaging_warnings(loaded) == [
        "imaging: 2 studies not retrieved: deadline of 1e-09 s reached"
    ]
    assert [(s.study_id, s.instance_uid, s.reason) for s in loaded.patient.image_skips] == [
        (study.imaging_study["id"], None, "not retrieved: deadline of 1e-09 s reached")
        for study in stored.with_endpoint.studies
    ]


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_only_studies_since_the_look_back_are_retrieved(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    access = _access(dicomweb_server, dicomweb_server.password)
    studies = stored.with_endpoint.studies
    since = max(datetime.fromisoformat(s.imaging_study["started"]) for s in studies)
    loaded = _load(fhir_server, executor, stored.with_endpoint.id, access, images_since=since)
    recent = [s for s in studies if datetime.fromisoformat(s.imaging_study["started"]) >= since]
    assert recent  # the bound is inclusive
    assert [i.study_uid for i in loaded.patient.images] == [s.study_uid for s in recent]
    assert loaded.patient.images_since == since
    assert dict(loaded.patient.image_sources) == {
        s.study_uid: dicomweb_server.base_url for s in recent
    }
    later = _load(
        fhir_server, executor, stored.with_endpoint.id, access, since + timedelta(seconds=1)
    )
    assert later.patient.images == () and later.patient.image_skips == ()
    assert _imaging_warnings(later) == []  # not retrieved, not a failure


@pytest.mark.fhir_server
@pytest.mark.dicomweb
def test_a_study_without_endpoint_is_a_warning_named_by_uid_or_id(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    stored: Stored,
    executor: ThreadPoolExecutor,
) -> None:
    access = _access(dicomweb_server, dicomweb_server.password)
    patient = stored.without_endpoint
    loaded = _load(fhir_server, executor, patient.id, access)
    assert loaded.patient.images == ()
    no_uid, with_uid = patient.studies
    assert sorted(_imaging_warnings(loaded)) == sorted(
        [
            f"imaging: study ImagingStudy/{no_uid.imaging_study['id']} has no DICOMweb endpoint",
            f"imaging: study {with_uid.study_uid} has no DICOMweb endpoint",
        ]
    )
    assert not any("None" in w for w in loaded.patient.warnings)


# --------------------------------------------------------------------------- configuration
ORIGIN = "http://127.0.0.1:8042"
FHIR = "https://ehr.example.org/fhir"


def test_the_json_configuration_is_parsed_with_secrets_from_the_environment() -> None:
    access = parse_dicomweb_access(
        json.dumps(
            {
                "HTTP://127.0.0.1:8042/": {"basic": {"username": "u", "password_env": "PW"}},
                "https://vna.example.org": {"bearer": {"token_env": "VNA"}},
                "https://pacs.example.org:8443": "fhir",
                "https://ehr.example.org": "none",
            }
        ),
        {"PW": "s3cret", "VNA": "tok"},
    )
    assert access.origins == {
        ORIGIN: BasicCredentials("u", "s3cret"),
        "https://vna.example.org:443": BearerCredentials("tok"),
        "https://pacs.example.org:8443": REUSE_FHIR_TOKEN,
        "https://ehr.example.org:443": NO_CREDENTIALS,
    }
    assert "s3cret" not in repr(access) and "tok" not in repr(access)
    assert access.credentials_for(f"{ORIGIN}/dicom-web", FHIR) == BasicCredentials("u", "s3cret")
    assert access.auth_for("https://vna.example.org:443/wado", FHIR, "fhir") == BearerAuth("tok")
    assert access.auth_for("https://pacs.example.org:8443/", FHIR, "fhir") == BearerAuth("fhir")
    assert access.auth_for("https://pacs.example.org:8443/", FHIR, None) is None
    # Listed as "none": the same origin as fhirServer, yet no token goes there.
    assert access.auth_for("https://ehr.example.org/dicom-web", FHIR, "fhir") is None
    assert parse_dicomweb_access(None).origins == parse_dicomweb_access(" ").origins == {}


def test_unlisted_origins_get_the_fhir_token_only_on_the_fhir_servers_origin() -> None:
    access = DicomWebAccess()
    assert access.credentials_for("https://ehr.example.org:443/dicom-web", FHIR) == (
        REUSE_FHIR_TOKEN
    )
    assert access.auth_for("https://ehr.example.org/dicom-web", FHIR, "tok") == BearerAuth("tok")
    assert access.auth_for("https://ehr.example.org/dicom-web", FHIR, None) is None
    assert access.auth_for("http://ehr.example.org/dicom-web", FHIR, "tok") is None  # scheme
    assert access.auth_for("https://ehr.example.org:8443/dicom-web", FHIR, "tok") is None
    assert access.auth_for("https://pacs.example.org/dicom-web", FHIR, "tok") is None
    assert access.auth_for("https://pacs.example.org/dicom-web", None, "tok") is None
    assert access.auth_for("ftp://ehr.example.org/x", "ftp://ehr.example.org/", "t") is None
    assert repr(BearerAuth("tok")) == "BearerAuth(***)"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("{not json", {}, "not valid JSON"),
        ('["http://a"]', {}, "must be a JSON object"),
        ('{"http://a/dicom-web": "fhir"}', {}, "is not a DICOMweb origin"),
        ('{"http://u:p@a": "fhir"}', {}, "is not a DICOMweb origin"),
        ('{"file:///x": "fhir"}', {}, "is not a DICOMweb origin"),
        ('{"http://a": "fhir", "HTTP://A:80": "none"}', {}, "listed twice"),
        ('{"http://a": "token"}', {}, "expected"),
        ('{"http://a": {"digest": {}}}', {}, "expected"),
        ('{"http://a": {"basic": {"username": "u"}}}', {}, "password_env must name"),
        ('{"http://a": {"basic": {"username": "u", "password": "p"}}}', {}, "password_env"),
        ('{"http://a": {"bearer": {"token": "t"}}}', {}, "use token_env, not token"),
        ('{"http://a": {"bearer": {"token_env": "T", "x": 1}}}', {"T": "t"}, "unknown key"),
        ('{"http://a": {"basic": {"password_env": "P"}}}', {"P": "p"}, "username"),
        ('{"http://a": {"bearer": {"token_env": "MISSING"}}}', {}, "MISSING is not set"),
        ('{"http://a": {"bearer": {"token_env": "EMPTY"}}}', {"EMPTY": ""}, "EMPTY is not set"),
    ],
)
def test_bad_configurations_are_refused(text: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(DicomWebConfigError, match=message) as caught:
        parse_dicomweb_access(text, environ)
    assert "s3cret" not in str(caught.value)


def test_settings_refuse_bad_json_and_missing_env_vars_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WARDROUND_DICOMWEB_AUTH: not valid JSON"):
        Settings(database_url="sqlite://", instance_path=tmp_path, dicomweb_auth_json="{")
    config = json.dumps({ORIGIN: {"basic": {"username": "u", "password_env": "WR_TEST_PACS_PW"}}})
    with pytest.raises(ConfigError, match="WR_TEST_PACS_PW is not set"):
        Settings.from_env({"WARDROUND_DICOMWEB_AUTH": config}, instance_path=tmp_path)
    assert "WR_TEST_PACS_PW" not in os.environ
    with pytest.raises(ConfigError, match="WR_TEST_PACS_PW is not set"):
        Settings(database_url="sqlite://", instance_path=tmp_path, dicomweb_auth_json=config)


def test_settings_carry_the_parsed_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.dumps({ORIGIN: {"basic": {"username": "u", "password_env": "WR_TEST_PACS_PW"}}})
    env = {"WARDROUND_DICOMWEB_AUTH": config, "WR_TEST_PACS_PW": "s3cret"}
    settings = Settings.from_env(env, instance_path=tmp_path)
    assert settings.dicomweb_auth_json == config
    assert settings.dicomweb_access is not None
    assert settings.dicomweb_access.origins == {ORIGIN: BasicCredentials("u", "s3cret")}
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({}, instance_path=tmp_path).dicomweb_access is None
    monkeypatch.setenv("WR_TEST_PACS_PW", "other")
    direct = Settings(database_url="sqlite://", instance_path=tmp_path, dicomweb_auth_json=config)
    assert direct.dicomweb_access is not None
    assert direct.dicomweb_access.origins[ORIGIN] == BasicCredentials("u", "other")
    changed = settings.with_overrides(dicomweb_auth_json=json.dumps({ORIGIN: "none"}))
    assert changed.dicomweb_access is not None
    assert changed.dicomweb_access.origins == {ORIGIN: NO_CREDENTIALS}


def test_a_call_session_shares_the_pool_and_leaves_it_unchanged() -> None:
    access = DicomWebAccess({ORIGIN: BasicCredentials("u", "p")})
    sessions = DicomWebSessions(access)
    try:
        first = sessions.session_for(f"{ORIGIN}/dicom-web", FHIR, "tok")
        second = sessions.session_for("http://127.0.0.1:8042/other", FHIR, "tok")
        pooled = sessions.pooled(f"{ORIGIN}/dicom-web")
        assert pooled.auth is None and not pooled.trust_env
        assert first is not second and not first.trust_env
        assert first.adapters["http://"] is pooled.adapters["http://"]
        assert second.adapters["http://"] is pooled.adapters["http://"]
        assert isinstance(first.auth, requests.auth.HTTPBasicAuth)
        assert (first.auth.username, first.auth.password) == ("u", "p")
        closed: list[str] = []
        pooled.adapters["http://"].close = lambda: closed.append("closed")  # type: ignore[method-assign]
        first.close()  # what a caller may do: the pooled connections stay open
        assert closed == []
        other = sessions.session_for("https://pacs.example.org/dicom-web", FHIR, "tok")
        assert other.auth is None
        assert other.adapters["https://"] is not pooled.adapters["https://"]
        prepared = first.prepare_request(requests.Request("GET", f"{ORIGIN}/dicom-web/studies"))
        assert prepared.headers["Authorization"].startswith("Basic ")
    finally:
        sessions.close()


@pytest.mark.parametrize(
    ("change", "usable"),
    [
        ({}, True),
        ({"status": "off"}, False),
        ({"connectionType": {"code": "hl7-fhir-rest"}}, False),
        ({"address": "file:///etc/passwd"}, False),
        ({"resourceType": "Organization"}, False),
    ],
)
def test_only_an_active_wado_rs_endpoint_is_used(change, usable):
    from fhir_adapters.loader import _is_dicomweb

    endpoint = {
        "resourceType": "Endpoint",
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "address": "https://pacs.example.org/dicom-web",
    }
    assert _is_dicomweb(endpoint | change) is usable
