"""``pneumonia-cxr`` end to end: EHR hook call → FHIR server → DICOMweb (Orthanc) → CNN → cards.

No prefetch is sent: the service reads the patient and the ImagingStudy resources from the
real FHIR server (sekmet, Synthea patients), the studies' Endpoint names Orthanc's DICOMweb
root, the loader retrieves the instances with HTTP Basic credentials from
``WARDROUND_DICOMWEB_AUTH``, and the audit rows are read back (SQLite and PostgreSQL).

The scenario (a module fixture) gives one Synthea patient new studies, dated relative to
now so that the default 14-day look-back applies: a chest PA + lateral study whose PA image
the model reads as pneumonia, a negative chest study, a chest study that cannot be decoded
(JPEG 2000 Part 2), a knee X-ray, and a chest study from 400 days ago. Everything is put
back afterwards (other modules compare the server's data with the bundles).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import requests
from pydicom.dataset import Dataset

from cds.audit.tables import Card as AuditCard
from cds.audit.tables import Invocation
from cds.cards import Card
from cds.config import ConfigError, Settings
from fhir_adapters.dicomweb_auth import origin_of
from models.imaging import MODEL_ID
from models.imaging.classifier import PneumoniaClassifier
from models.imaging.dataset import PneumoniaMnist, model_inputs
from tests.conftest import BASE_URL, AppFactory, HookClient, Mint
from tests.support.dicom_fixtures import (
    FixtureStudy,
    Patient,
    bad_study,
    dicom_bytes,
    fixture_uid,
    wado_rs_endpoint,
    xray_dataset,
)
from tests.support.dicomweb_server import DicomWebServer
from tests.support.fhir_server import FhirServer, fhir_authorization
from tests.test_audit_log import rows_of, verify

pytestmark = [pytest.mark.fhir_server, pytest.mark.dicomweb]
SERVICE = "pneumonia-cxr"
PASSWORD_ENV = "WARDROUND_TEST_ORTHANC_PASSWORD"
VIEWER = "https://viewer.example.org/ohif/viewer?StudyInstanceUIDs={study_uid}"
SNOMED = "http://snomed.info/sct"
CHEST, KNEE = ("51185008", "Thoracic structure"), ("72696002", "Knee region structure")
DCM = "http://dicom.nema.org/resources/ontology/DCM"


# --------------------------------------------------------------------------- the scenario
@dataclass(frozen=True)
class Study:
    name: str
    imaging_study: dict[str, Any]
    datasets: tuple[Dataset, ...]

    @property
    def uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def id(self) -> str:
        return str(self.imaging_study["id"])


@dataclass(frozen=True)
class Scenario:
    patient_id: str
    studies: dict[str, Study]
    #: Calibrated probability of the positive study's PA image and the negative image.
    positive_p: float
    negative_p: float
    endpoint_id: str


def _study(
    name: str,
    patient: Patient,
    started: datetime,
    series: list[tuple[str, str, tuple[str, str], np.ndarray, dict[str, Any]]],
    endpoint_id: str,
) -> Study:
    """``series``: (modality, view, body site, pixels, header changes) per one-image series."""
    run = uuid.uuid4().hex[:8]
    study_uid = fixture_uid("pneumonia-e2e", run, name)
    datasets, fhir_series = [], []
    for n, (modality, view, site, pixels, changes) in enumerate(series, start=1):
        ds = xray_dataset(
            patient=patient,
            study_uid=study_uid,
            series_uid=fixture_uid("pneumonia-e2e", run, name, str(n)),
            sop_uid=fixture_uid("pneumonia-e2e", run, name, str(n), "1"),
            modality=modality,
            pixels=pixels,
            started=started,
            body_site={"code": site[0], "display": site[1]},
            series_number=n,
        )
        ds.ViewPosition = view
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        datasets.append(ds)
        fhir_series.append(
            {
                "uid": str(ds.SeriesInstanceUID),
                "number": n,
                "modality": {"system": DCM, "code": modality},
                "numberOfInstances": 1,
                "bodySite": {"system": SNOMED, "code": site[0], "display": site[1]},
                "instance": [
                    {"uid": str(ds.SOPInstanceUID), "sopClass": {"code": str(ds.SOPClassUID)}}
                ],
            }
        )
    imaging_study = {
        "resourceType": "ImagingStudy",
        "id": f"pneumonia-e2e-{run}-{name}",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "status": "available",
        "subject": {"reference": f"Patient/{patient.id}"},
        "started": started.isoformat(),
        "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}],
        "numberOfSeries": len(fhir_series),
        "numberOfInstances": len(fhir_series),
        "series": fhir_series,
    }
    return Study(name, imaging_study, tuple(datasets))


def _extreme(
    data: PneumoniaMnist, classifier: PneumoniaClassifier, label: int, highest: bool
) -> tuple[np.ndarray, float]:
    """The held-out image of ``label`` the model is most (or least) sure is pneumonia."""
    images = data.val_images[data.val_labels == label]
    p = np.array(classifier.probabilities(list(model_inputs(images, classifier.spec))))
    k = int(np.argmax(p) if highest else np.argmin(p))
    return images[k], float(p[k])


def _ok(response: requests.Response) -> requests.Response:
    assert response.status_code in (200, 201), response.text[:2000]
    return response


@pytest.fixture(scope="module")
def scenario(
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    pneumoniamnist: PneumoniaMnist,
    classifier: PneumoniaClassifier,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    patient_id = fhir_server.patient_ids[7]
    patient = Patient.from_fhir(_ok(fhir_server.request("GET", f"Patient/{patient_id}")).json())
    positive, positive_p = _extreme(pneumoniamnist, classifier, 1, highest=True)
    negative, negative_p = _extreme(pneumoniamnist, classifier, 0, highest=False)
    assert positive_p >= classifier.threshold > negative_p
    endpoint_id = f"pneumonia-e2e-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(microsecond=0)
    folder = tmp_path_factory.mktemp("pneumonia-e2e")
    undecodable = bad_study(patient, folder, pneumoniamnist.train_images, 0).instance(
        "jpeg2000_part2"
    )
    studies = {
        "positive": _study(
            "positive",
            patient,
            now - timedelta(days=1),
            [("DX", "PA", CHEST, positive, {}), ("DX", "LL", CHEST, positive, {})],
            endpoint_id,
        ),
        "negative": _study(
            "negative",
            patient,
            now - timedelta(days=2),
            [("CR", "AP", CHEST, negative, {})],
            endpoint_id,
        ),
        "undecodable": _study(
            "undecodable",
            patient,
            now - timedelta(days=3),
            [("DX", "PA", CHEST, positive, {})],
            endpoint_id,
        ),
        "knee": _study(
            "knee",
            patient,
            now - timedelta(days=4),
            [("DX", "AP", KNEE, positive, {})],
            endpoint_id,
        ),
        "old": _study(
            "old",
            patient,
            now - timedelta(days=400),
            [("DX", "PA", CHEST, positive, {})],
            endpoint_id,
        ),
    }
    # The undecodable study holds the JPEG 2000 Part 2 object (its UIDs changed to fit).
    broken = undecodable_dataset(undecodable.data, studies["undecodable"].datasets[0])
    studies["undecodable"] = Study("undecodable", studies["undecodable"].imaging_study, (broken,))
    stored: list[str] = []
    written: list[str] = []
    with dicomweb_server.session() as orthanc:
        try:
            _ok(
                fhir_server.request(
                    "PUT",
                    f"Endpoint/{endpoint_id}",
                    wado_rs_endpoint(endpoint_id, dicomweb_server.base_url),
                )
            )
            for study in studies.values():
                for ds in study.datasets:
                    answer = _ok(
                        orthanc.post(
                            f"{dicomweb_server.orthanc_url}/instances",
                            data=dicom_bytes(ds),
                            headers={"Content-Type": "application/dicom"},
                            timeout=30,
                        )
                    ).json()
                    stored.append(answer["ID"])
                _ok(fhir_server.request("PUT", f"ImagingStudy/{study.id}", study.imaging_study))
                written.append(study.id)
            yield Scenario(patient_id, studies, positive_p, negative_p, endpoint_id)
        finally:
            for study_id in written:
                fhir_server.request("DELETE", f"ImagingStudy/{study_id}")
            fhir_server.request("DELETE", f"Endpoint/{endpoint_id}")
            for orthanc_id in stored:
                orthanc.delete(f"{dicomweb_server.orthanc_url}/instances/{orthanc_id}", timeout=30)


def undecodable_dataset(data: bytes, like: Dataset) -> Dataset:
    from io import BytesIO

    from pydicom import dcmread

    ds = dcmread(BytesIO(data))
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, getattr(like, keyword))
    ds.file_meta.MediaStorageSOPInstanceUID = like.SOPInstanceUID
    return ds


# --------------------------------------------------------------------------- calling it
def _request(fhir_server: FhirServer, patient_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "fhirServer": fhir_server.base_url,
        "fhirAuthorization": fhir_authorization(fhir_server.token),
    } | extra


@pytest.fixture
def imaging_hooks(
    make_app: AppFactory,
    mint: Mint,
    dicomweb_server: DicomWebServer,
    monkeypatch: pytest.MonkeyPatch,
):  # type: ignore[no-untyped-def]
    """HookClient factory for an app whose DICOMweb credentials are Orthanc's (or wrong)."""

    def build(password: str | None = None, **overrides: Any) -> HookClient:
        monkeypatch.setenv(PASSWORD_ENV, password or dicomweb_server.password)
        access = {
            origin_of(dicomweb_server.base_url): {
                "basic": {"username": dicomweb_server.username, "password_env": PASSWORD_ENV}
            }
        }
        app = make_app(dicomweb_auth_json=json.dumps(access), **overrides)
        return HookClient(app.test_client(), mint)

    return build


def _cards(response) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.json
    for card in response.json["cards"]:
        Card.model_validate(card)  # spec-valid, IG invariants included
    return response.json["cards"]


def _imaging_record(database_url: str) -> dict[str, Any]:
    invocation = rows_of(database_url, Invocation)[-1]
    return next(e for e in invocation.prefetch_fetched if e["key"] == "imaging")


# --------------------------------------------------------------------------- tests
def test_recent_chest_radiographs_end_to_end(
    imaging_hooks,
    scenario: Scenario,
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    classifier: PneumoniaClassifier,
    database_url: str,
) -> None:
    hooks = imaging_hooks(imaging_viewer_url=VIEWER)
    cards = _cards(hooks.call(SERVICE, _request(fhir_server, scenario.patient_id)))
    positive, undecodable = scenario.studies["positive"], scenario.studies["undecodable"]
    assert [c["indicator"] for c in cards] == ["warning", "info"]  # newest study first
    warning, info = cards

    p = scenario.positive_p
    assert warning["summary"] == (
        f"Findings suggestive of pneumonia (p = {p:.2f}); radiologist review required"
    )
    assert "Images analysed: 1 of 2" in warning["detail"]
    assert "view position LL is not frontal (PA/AP)" in warning["detail"]
    assert "a radiologist must review the images" in warning["detail"]
    assert f"{MODEL_ID} {classifier.identity.version}" in warning["source"]["label"]
    assert classifier.identity.sha256[:12] in warning["detail"]
    assert [link["url"] for link in warning["links"]] == [
        VIEWER.format(study_uid=positive.uid),
        f"{dicomweb_server.base_url}/studies/{positive.uid}",
        f"{BASE_URL}/models/{MODEL_ID}/",
    ]

    started = undecodable.imaging_study["started"][:10]
    assert info["summary"] == f"Chest radiograph of {started} could not be analysed for pneumonia"
    assert "(no decoder installed)" in info["detail"]

    # The audit: the model's identity, the card's result, every skipped image with its reason.
    invocation = rows_of(database_url, Invocation)[-1]
    assert invocation.status_code == 200 and invocation.prefetch_used == []
    assert invocation.model_versions == [
        {"id": MODEL_ID, "version": "1.0.0", "hash": classifier.identity.sha256}
    ]
    rows = {row.uuid: row for row in rows_of(database_url, AuditCard)}
    result = rows[warning["uuid"]].result
    assert result["kind"] == "risk-assessment" and result["model"] == MODEL_ID
    assert result["code"] == {"system": SNOMED, "code": "233604007", "display": "Pneumonia"}
    assert result["probability"] == pytest.approx(p, abs=1e-9)
    assert result["basis"] == [f"ImagingStudy/{positive.id}"]
    pa, lateral = positive.datasets
    assert result["facts"]["analysed"] == {str(pa.SOPInstanceUID): pytest.approx(p, abs=1e-9)}
    assert result["facts"]["skipped"] == {
        str(lateral.SOPInstanceUID): "view position LL is not frontal (PA/AP)"
    }
    assert result["facts"]["threshold"] == classifier.threshold
    assert rows[info["uuid"]].result is None  # an info card asserts no finding
    imaging = _imaging_record(database_url)
    knee = scenario.studies["knee"]
    assert (
        f"imaging: {knee.uid}: {knee.datasets[0].SOPInstanceUID}: not read by {MODEL_ID}: "
        "not a chest radiograph (Body Part Examined KNEE, ImagingStudy body site 72696002)"
    ) in imaging["warnings"]
    assert (
        f"imaging: {positive.uid}: {lateral.SOPInstanceUID}: not read by {MODEL_ID}: "
        "view position LL is not frontal (PA/AP)"
    ) in imaging["warnings"]
    assert any(
        w.startswith(f"imaging: {undecodable.uid}: ") and "no decoder installed" in w
        for w in imaging["warnings"]
    )
    assert imaging["skipped"] == len(imaging["warnings"]) == 3
    assert not any(scenario.studies["old"].uid in w for w in imaging["warnings"])
    assert verify(database_url).ok


def test_a_synthea_study_on_the_pacs_reads_like_its_training_twin(
    imaging_hooks,
    fhir_server: FhirServer,
    dicomweb_server: DicomWebServer,
    classifier: PneumoniaClassifier,
    source_images: np.ndarray,
    database_url: str,
) -> None:
    """Synthea's own ImagingStudy (its UIDs are the Orthanc objects'), years old: with a
    long look-back the card's probability is the model's for the PneumoniaMNIST source."""

    def expected(study: FixtureStudy) -> float:
        sources = np.stack([source_images[i.source_index] for i in study.instances])
        return max(classifier.probabilities(list(model_inputs(sources, classifier.spec))))

    study = next(
        s
        for s in dicomweb_server.fixtures.synthea.values()
        if s.patient_id in fhir_server.patient_ids
        and all(i.body_part == "CHEST" and i.view_position in ("PA", "AP") for i in s.instances)
        and len(s.instances) == sum(len(x["instance"]) for x in s.imaging_study["series"])
        and expected(s) >= classifier.threshold
    )
    endpoint_id = f"pneumonia-e2e-{uuid.uuid4().hex[:12]}"
    original = _ok(fhir_server.request("GET", f"ImagingStudy/{study.imaging_study['id']}")).json()
    changed = original | {"endpoint": [{"reference": f"Endpoint/{endpoint_id}"}]}
    _ok(
        fhir_server.request(
            "PUT",
            f"Endpoint/{endpoint_id}",
            wado_rs_endpoint(endpoint_id, dicomweb_server.base_url),
        )
    )
    try:
        _ok(fhir_server.request("PUT", f"ImagingStudy/{original['id']}", changed))
        hooks = imaging_hooks(imaging_lookback_days=36_500)
        cards = _cards(hooks.call(SERVICE, _request(fhir_server, study.patient_id)))
    finally:
        original.pop("meta", None)
        _ok(fhir_server.request("PUT", f"ImagingStudy/{original['id']}", original))
        fhir_server.request("DELETE", f"Endpoint/{endpoint_id}")
    (card,) = [c for c in cards if study.study_uid in json.dumps(c.get("links", []))]
    p = expected(study)
    assert card["summary"].startswith(f"Findings suggestive of pneumonia (p = {p:.2f})")
    stored = next(r for r in rows_of(database_url, AuditCard) if r.uuid == card["uuid"])
    assert stored.result["probability"] == pytest.approx(p, abs=1e-6)
    assert stored.result["basis"] == [f"ImagingStudy/{study.imaging_study['id']}"]


def test_refused_credentials_give_an_info_card_for_each_recent_chest_study(
    imaging_hooks, scenario: Scenario, fhir_server: FhirServer, database_url: str
) -> None:
    hooks = imaging_hooks(password="wrong-password")
    cards = _cards(hooks.call(SERVICE, _request(fhir_server, scenario.patient_id)))
    # positive, negative, undecodable: chest by their ImagingStudy body site; the knee is not.
    assert [c["indicator"] for c in cards] == ["info", "info", "info"]
    for card in cards:
        assert "not authorised by the DICOMweb server (HTTP 401)" in card["detail"]
    imaging = _imaging_record(database_url)
    assert any("not authorised" in w for w in imaging["warnings"])


def test_without_fhir_server_recent_chest_studies_are_not_analysed_and_say_why(
    imaging_hooks, scenario: Scenario, fhir_server: FhirServer
) -> None:
    bundle = _ok(
        fhir_server.request("GET", f"ImagingStudy?patient={scenario.patient_id}&_count=200")
    ).json()
    patient = _ok(fhir_server.request("GET", f"Patient/{scenario.patient_id}")).json()
    body = _request(
        fhir_server, scenario.patient_id, prefetch={"patient": patient, "imaging": bundle}
    )
    del body["fhirServer"], body["fhirAuthorization"]
    cards = _cards(imaging_hooks().call(SERVICE, body))
    assert len(cards) == 3 and {c["indicator"] for c in cards} == {"info"}
    assert all("the request has no fhirServer" in c["detail"] for c in cards)


def test_no_recent_radiograph_means_no_card(
    imaging_hooks, fhir_server: FhirServer, scenario: Scenario, database_url: str
) -> None:
    other = next(p for p in fhir_server.patient_ids if p != scenario.patient_id)
    cards = _cards(imaging_hooks().call(SERVICE, _request(fhir_server, other)))
    assert cards == []
    invocation = rows_of(database_url, Invocation)[-1]
    assert invocation.model_versions[0]["id"] == MODEL_ID


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"imaging_lookback_days": 0}, "WARDROUND_IMAGING_LOOKBACK_DAYS"),
        ({"imaging_viewer_url": "viewer.example.org/{study_uid}"}, "absolute http"),
        ({"imaging_viewer_url": "https://viewer.example.org/"}, "{study_uid}"),
        ({"imaging_viewer_url": "https://v.example.org/{study_uid}/{x}"}, "no placeholder"),
    ],
)
def test_imaging_settings_are_checked_at_start_up(tmp_path, changes, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        Settings(database_url="sqlite://", instance_path=tmp_path, **changes)
    env = {"WARDROUND_IMAGING_LOOKBACK_DAYS": "3", "WARDROUND_IMAGING_VIEWER_URL": VIEWER}
    settings = Settings.from_env(env, instance_path=tmp_path)
    assert (settings.imaging_lookback_days, settings.imaging_viewer_url) == (3.0, VIEWER)
