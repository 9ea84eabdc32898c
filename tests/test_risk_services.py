"""The risk services end to end: real Synthea patients, the real app, both databases.

The shared records end on 2021-03-31; a hook evaluates today, so most requests here move a
record in time (``fhir_adapters.time_shift``) to end today, as a demo would. Each test reads
the cards as the EHR would, then the audit row: model identities and each card's result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cds.audit.tables import Card as AuditCard
from cds.audit.tables import Invocation
from cds.cards import Card
from cds.config import ConfigError, Settings
from fhir_adapters import build_patient_context
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type
from fhir_adapters.time_shift import days_between, shift_record
from models import registry
from models.risk.kb import knowledge_sha256, knowledge_version
from models.risk.learned import NotEligible
from models.risk.scores import cha2ds2_vasc, has_bled, pce, statin
from tests.conftest import synthea_bundles
from tests.support.fhir_server import fhir_authorization
from tests.test_audit_log import rows_of, verify

CARDIO, LEARNED = "cardiovascular-risk", "risk-models"
CARDIO_KEYS = (
    "patient",
    "condition_history",
    "medication_history",
    "observations",
    "smoking_status",
)
LEARNED_KEYS = (*CARDIO_KEYS, "encounters")
Resources = dict[str, list[dict[str, Any]]]


def _shifted(bundle: Path) -> Resources:
    resources = resources_by_type(load_bundle(bundle))
    return shift_record(resources, days_between(date(2021, 3, 31), date.today()))


def _context(resources: Resources):  # type: ignore[no-untyped-def]
    prefetch = prefetch_for(resources)
    return build_patient_context(
        {k: prefetch[k] for k in LEARNED_KEYS}, resources["Patient"][0]["id"]
    )


def _matches(kind: str, context) -> bool:  # type: ignore[no-untyped-def]
    assessment = pce.assess(context)
    rec = statin.recommend(context, assessment) if assessment.applicable else None
    if kind == "statin":
        return bool(
            assessment.computed
            and rec
            and rec.suggest_order
            and rec.category == "primary-prevention"
        )
    if kind == "pce-eligible":
        return bool(
            assessment.computed
            and not rec
            and not assessment.diabetes
            and 40 <= context.age_years <= 75
        )
    if kind == "af":  # anticoagulation recommended whatever the sex, HAS-BLED computable
        return (cha2ds2_vasc.assess(context).score or 0) >= 3 and has_bled.assess(context).computed
    if kind == "acute":
        try:
            return registry.get("acute-care-1y").predict(context).band is not None
        except NotEligible:
            return False
    return False


#: A cheap first filter on the raw bundle for the rarer kinds (AF, deaths).
RAW_HINT = {"af": '"49436004"', "deceased": '"deceasedDateTime"'}


@cache
def _find(kind: str) -> tuple[Path, str]:
    """The first shared patient (moved to today) matching ``kind``."""
    for bundle in synthea_bundles():
        hint = RAW_HINT.get(kind)
        if hint and hint not in json.dumps(load_bundle(bundle)):
            continue
        context = _context(_shifted(bundle))
        if context.deceased != (kind == "deceased"):
            continue
        if kind == "deceased" or _matches(kind, context):
            return bundle, context.patient_id
    pytest.skip(f"no shared patient for {kind}")


def _request(
    bundle: Path,
    keys: tuple[str, ...],
    change: Callable[[Resources], Resources] | None = None,
) -> dict[str, Any]:
    resources = _shifted(bundle)
    if change is not None:
        resources = change(resources)
    prefetch = prefetch_for(resources)
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": resources["Patient"][0]["id"]},
        "prefetch": {key: prefetch[key] for key in keys},
    }


def _cards(hooks, service: str, body: dict[str, Any]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = hooks.call(service, body)
    assert response.status_code == 200, response.json
    for card in response.json["cards"]:
        Card.model_validate(card)  # spec-valid, IG invariants and FHIR resources included
    return response.json["cards"]


def _stored(database_url: str) -> dict[str, dict[str, Any]]:
    return {row.uuid: row.result for row in rows_of(database_url, AuditCard)}


def _without(*loincs: str) -> Callable[[Resources], Resources]:
    def change(resources: Resources) -> Resources:
        def keep(o: dict[str, Any]) -> bool:
            codes = {c.get("code") for c in o["code"]["coding"]}
            return not codes & set(loincs)

        return resources | {"Observation": [o for o in resources["Observation"] if keep(o)]}

    return change


# ----------------------------------------------------------------------------- ASCVD
def test_statin_card_with_its_order_inputs_link_and_audit(hooks, database_url):
    bundle, patient_id = _find("statin")
    cards = _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS))
    (card,) = [c for c in cards if "ASCVD" in c["summary"]]
    assert card["indicator"] in ("info", "warning")
    assert "no statin active" in card["summary"]
    order = card["suggestions"][0]["actions"][0]["resource"]
    assert order["resourceType"] == "MedicationRequest" and order["status"] == "draft"
    assert order["subject"] == {"reference": f"Patient/{patient_id}"}
    assert "atorvastatin" in order["medicationCodeableConcept"]["text"]
    assert card["links"] == [
        {
            "label": "How the ASCVD risk and statin rules work",
            "url": "http://localhost/models/ascvd-pce/",
            "type": "absolute",
        }
    ]
    assert "Total cholesterol:" in card["detail"] and "Systolic blood pressure:" in card["detail"]
    [invocation] = rows_of(database_url, Invocation)
    assert {"id": "ascvd-pce", "version": knowledge_version(), "hash": knowledge_sha256()} in (
        invocation.model_versions
    )
    result = _stored(database_url)[card["uuid"]]
    expected = pce.assess(_context(_shifted(bundle))).risk
    assert result["kind"] == "risk-assessment" and result["model"] == "ascvd-pce"
    assert result["code"]["code"] == "79423-0" and result["horizon_years"] == 10
    assert result["probability"] == pytest.approx(expected)
    names = {i["name"]: i for i in result["inputs"]}
    assert names["HDL cholesterol"]["date"] and names["HDL cholesterol"]["reference"].startswith(
        "Observation/"
    )
    assert verify(database_url).ok


def test_missing_lipids_give_a_refusal_card_with_a_lipid_panel(hooks):
    bundle, _ = _find("pce-eligible")
    body = _request(bundle, CARDIO_KEYS, _without("2093-3", "2085-9", "18262-6"))
    (card,) = _cards(hooks, CARDIO, body)
    assert card["summary"].startswith("10-year ASCVD risk not estimated")
    assert card["indicator"] == "info"
    assert "**Total cholesterol**: not recorded" in card["detail"]
    panel = card["suggestions"][0]["actions"][0]["resource"]
    assert (
        panel["resourceType"] == "ServiceRequest"
        and panel["code"]["coding"][0]["code"] == "57698-3"
    )


def test_a_cholesterol_in_an_unknown_unit_is_refused_not_guessed(hooks):
    bundle, _ = _find("pce-eligible")

    def bad_unit(resources: Resources) -> Resources:
        for o in resources["Observation"]:
            if o["code"]["coding"][0]["code"] == "2093-3":
                o["valueQuantity"] = {
                    "value": 2.1,
                    "unit": "g/L",
                    "code": "g/L",
                    "system": "http://unitsofmeasure.org",
                }
        return resources

    (card,) = _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS, bad_unit))
    assert "recorded in 'g/L', which cannot be converted to mg/dL" in card["detail"]


def test_an_eligible_patient_at_low_risk_gets_no_card(hooks, database_url):
    bundle, _ = _find("pce-eligible")
    assert _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS)) == []
    [invocation] = rows_of(database_url, Invocation)
    assert [m["id"] for m in invocation.model_versions] == ["ascvd-pce"]


# ----------------------------------------------------------------------------- AF
def _stop_anticoagulants(resources: Resources) -> Resources:
    def anticoagulant(m: dict[str, Any]) -> bool:
        return "arfarin" in m["medicationCodeableConcept"]["coding"][0]["display"]

    return resources | {
        "MedicationRequest": [m for m in resources["MedicationRequest"] if not anticoagulant(m)]
    }


def test_af_without_anticoagulation_gets_the_recommendation_and_has_bled(hooks, database_url):
    bundle, patient_id = _find("af")
    cards = _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS, _stop_anticoagulants))
    (card,) = [c for c in cards if "CHA2DS2-VASc" in c["summary"]]
    assert card["indicator"] == "warning" and "none active" in card["summary"]
    assert "**HAS-BLED" in card["detail"] and "Lip et al. 2010" in card["detail"]
    result = _stored(database_url)[card["uuid"]]
    context = _context(_stop_anticoagulants(_shifted(bundle)))
    assert result["facts"]["cha2ds2_vasc"] == cha2ds2_vasc.assess(context).score
    assert result["facts"]["has_bled"] == has_bled.assess(context).score
    assert result["probability"] == cha2ds2_vasc.assess(context).annual_stroke_rate / 100
    if card.get("suggestions"):
        order = card["suggestions"][0]["actions"][0]["resource"]
        assert "apixaban" in order["medicationCodeableConcept"]["text"]
        assert order["subject"]["reference"] == f"Patient/{patient_id}"
    [invocation] = rows_of(database_url, Invocation)
    assert {m["id"] for m in invocation.model_versions} >= {"cha2ds2-vasc", "has-bled"}


def test_anticoagulated_af_gets_a_card_only_for_high_bleeding_risk(hooks):
    bundle, _ = _find("af")
    context = _context(_shifted(bundle))
    cards = _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS))
    af_cards = [c for c in cards if "AF" in c["summary"]]
    assert len(af_cards) == int(has_bled.assess(context).high_risk)


# ----------------------------------------------------------------------------- learned
def test_learned_model_card_with_factors_and_artifact_identities(hooks, database_url):
    bundle, _ = _find("acute")
    cards = _cards(hooks, LEARNED, _request(bundle, LEARNED_KEYS))
    (card,) = [c for c in cards if "Emergency visit" in c["summary"]]
    assert card["indicator"] in ("info", "warning")
    assert "**What drives it for this patient**" in card["detail"]
    assert card["detail"].count("log-odds") >= 3
    assert card["links"][0]["url"] == "http://localhost/models/acute-care-1y/"
    [invocation] = rows_of(database_url, Invocation)
    identities = {m["id"]: m for m in invocation.model_versions}
    for model_id in ("cvd-event-3y", "acute-care-1y"):
        identity = registry.identity(model_id)
        assert identities[model_id] == {
            "id": model_id,
            "version": identity.version,
            "hash": identity.sha256,
        }
    result = _stored(database_url)[card["uuid"]]
    prediction = registry.get("acute-care-1y").predict(_context(_shifted(bundle)))
    assert result["probability"] == pytest.approx(prediction.probability)
    assert result["qualitative"] == prediction.band and result["horizon_years"] == 1
    assert [f["name"] for f in result["factors"]] == [f.label for f in prediction.factors]
    assert verify(database_url).ok


def test_thresholds_are_configurable(make_app, mint):
    bundle, _ = _find("acute")
    client = make_app(risk_thresholds={"acute-care-1y": 0.99, "cvd-event-3y": 0.99}).test_client()
    path = f"/cds-services/{LEARNED}"
    response = client.post(
        path, json=_request(bundle, LEARNED_KEYS), headers={"Authorization": f"Bearer {mint(path)}"}
    )
    assert response.status_code == 200 and response.json["cards"] == []
    with pytest.raises(ConfigError, match="probabilities between 0 and 1"):
        Settings.from_env({"WARDROUND_RISK_THRESHOLDS": '{"acute-care-1y": 1.5}'})
    with pytest.raises(ConfigError, match="JSON object"):
        Settings.from_env({"WARDROUND_RISK_THRESHOLDS": "[0.2]"})


def test_data_that_could_not_be_had_gives_no_learned_card(hooks, database_url):
    bundle, _ = _find("acute")
    body = _request(bundle, LEARNED_KEYS)
    del body["prefetch"]["encounters"]  # not prefetched, and no fhirServer to fetch it from
    assert _cards(hooks, LEARNED, body) == []
    [invocation] = rows_of(database_url, Invocation)
    sources = {entry["key"]: entry["source"] for entry in invocation.prefetch_fetched}
    assert sources["encounters"] == "not-fetchable"


def test_deceased_patients_get_no_risk_cards(hooks):
    bundle, _ = _find("deceased")
    assert _cards(hooks, CARDIO, _request(bundle, CARDIO_KEYS)) == []
    assert _cards(hooks, LEARNED, _request(bundle, LEARNED_KEYS)) == []


@pytest.mark.fhir_server
def test_risk_services_fetch_what_they_need_from_the_fhir_server(hooks, fhir_server, database_url):
    body = _request(synthea_bundles()[3], ("patient",))
    body["prefetch"] = {}
    body["fhirServer"] = fhir_server.base_url
    body["fhirAuthorization"] = fhir_authorization(fhir_server.token, subject="cds")
    body["context"]["patientId"] = resources_by_type(load_bundle(synthea_bundles()[3]))["Patient"][
        0
    ]["id"]
    for service, keys in ((CARDIO, CARDIO_KEYS), (LEARNED, LEARNED_KEYS)):
        _cards(hooks, service, body | {"hookInstance": str(uuid.uuid4())})
        invocation = rows_of(database_url, Invocation)[-1]
        sources = {entry["key"]: entry["source"] for entry in invocation.prefetch_fetched}
        assert sources == dict.fromkeys(keys, "fetched"), sources


# ----------------------------------------------------------------------------- pages
def test_model_pages_explain_without_a_token(client):
    page = client.get("/models/cvd-event-3y/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "AUROC" in html and 'src="model_card/cvd-event-3y-calibration.png"' in html
    figure = client.get("/models/cvd-event-3y/model_card/cvd-event-3y-calibration.png")
    assert figure.status_code == 200 and figure.mimetype == "image/png"
    assert figure.data.startswith(b"\x89PNG")
    scores = client.get("/models/cha2ds2-vasc/").get_data(as_text=True)
    assert "Pooled Cohort Equations" in scores and "HAS-BLED" in scores
    assert client.get("/models/drug-safety/").status_code == 404  # no card
    assert client.get("/models/unknown/").status_code == 404
    assert client.get("/models/cvd-event-3y/model_card/manifest.json").status_code == 404
    assert client.get("/models/cvd-event-3y/model_card/..%2Fmanifest.json").status_code == 404


def test_discovery_lists_the_risk_services(hooks):
    response = hooks.client.get(
        "/cds-services", headers={"Authorization": f"Bearer {hooks.mint('/cds-services')}"}
    )
    services = {s["id"]: s for s in response.json["services"]}
    assert services[CARDIO]["hook"] == services[LEARNED]["hook"] == "patient-view"
    assert set(services[LEARNED]["prefetch"]) == set(LEARNED_KEYS)
    assert services[LEARNED]["prefetch"]["encounters"] == "Encounter?patient={{context.patientId}}"


def test_a_demo_request_for_a_risk_service_ends_today():
    from cds.demo import patient_view_request
    from cds.services.risk_models import SERVICE

    body = patient_view_request(
        synthea_bundles()[0], keys=list(SERVICE.prefetch), shift_to_today=True
    )
    assert set(body["prefetch"]) == set(LEARNED_KEYS)
    starts = [e["resource"]["period"]["start"] for e in body["prefetch"]["encounters"]["entry"]]
    assert max(starts)[:10] == date.today().isoformat()


def test_bad_history_prefetch_is_a_400_and_a_bad_entry_is_skipped(hooks, database_url):
    bundle, _ = _find("acute")
    body = _request(bundle, LEARNED_KEYS)
    not_a_bundle = body | {
        "prefetch": body["prefetch"] | {"encounters": {"resourceType": "Patient"}}
    }
    response = hooks.call(LEARNED, not_a_bundle)
    assert response.status_code == 400 and response.json["field"] == "prefetch.encounters"
    broken = _request(bundle, LEARNED_KEYS)
    broken["prefetch"]["encounters"]["entry"][0]["resource"]["period"] = "yesterday"
    assert hooks.call(LEARNED, broken).status_code == 200
    invocation = rows_of(database_url, Invocation)[-1]
    entry = next(e for e in invocation.prefetch_fetched if e["key"] == "encounters")
    assert entry["skipped"] == 1 and entry["warnings"][0].startswith("encounters.entry[0]")
