"""The shipped learned models: artifacts verified, explanations that add up, eligibility, and
the served probability equal to the training pipeline's (train/serve skew)."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from datetime import date, datetime
from pathlib import Path

import pytest

from cds.audit.tables import Card as AuditCard
from fhir_adapters import context_builder
from fhir_adapters.as_of import record_as_of
from fhir_adapters.synthea import load_bundle, prefetch_for, resources_by_type
from fhir_adapters.time_shift import days_between, shift_record
from models import registry
from models.artifacts import ArtifactInvalid, load_artifact, write_manifest
from models.risk.catalog import PREFETCH_KEYS
from models.risk.learned import ARTIFACTS, MODEL_CARD, NotEligible, load
from models.risk.training.dataset import context_as_of
from tests.conftest import SYNTHEA, synthea_bundles
from tests.risk.builders import condition, patient
from tests.test_audit_log import rows_of

MODELS = ("cvd-event-3y", "acute-care-1y")
EXPORT_DAY = date(2021, 3, 31)


def _today_context(bundle: Path):  # type: ignore[no-untyped-def]
    """A shared patient's record moved so that its data set's last day is today."""
    resources = resources_by_type(load_bundle(bundle))
    shifted = shift_record(resources, days_between(EXPORT_DAY, date.today()))
    prefetch = prefetch_for(shifted)
    return context_builder.build_patient_context(
        {k: prefetch[k] for k in PREFETCH_KEYS}, shifted["Patient"][0]["id"]
    )


@pytest.mark.parametrize("model_id", MODELS)
def test_shipped_artifacts_load_through_the_registry_with_their_hash(model_id):
    model = registry.get(model_id)
    artifact = load_artifact(ARTIFACTS / model_id)
    assert model.identity.sha256 == artifact.sha256 and model.identity.version == "1.0.0"
    meta = artifact.metadata
    assert 0 < meta["threshold"] < meta["high_threshold"] < 1
    for name in ("auroc", "auprc", "brier"):
        low, high = meta["metrics"]["ci95"][name]
        assert low <= meta["metrics"][name] <= high
    assert meta["training_data"]["patients"] > 100
    assert artifact.sha256 in MODEL_CARD.read_text(), "the model card describes this artifact"


def test_a_changed_or_inconsistent_artifact_is_refused(tmp_path: Path):
    copy = tmp_path / "cvd-event-3y"
    shutil.copytree(ARTIFACTS / "cvd-event-3y", copy)
    (copy / "calibration.json").write_text('{"a": 1, "b": 0}')
    with pytest.raises(ArtifactInvalid, match="does not match its manifest hash"):
        load("cvd-event-3y", tmp_path)
    shutil.copy(ARTIFACTS / "cvd-event-3y" / "calibration.json", copy / "calibration.json")
    spec = json.loads((copy / "feature_spec.json").read_text())
    spec["features"][0]["name"] = "renamed"
    (copy / "feature_spec.json").write_text(json.dumps(spec))
    manifest = json.loads((copy / "manifest.json").read_text())
    write_manifest(copy, manifest["id"], manifest["version"], manifest["metadata"])
    with pytest.raises(ArtifactInvalid, match="booster features differ"):
        load("cvd-event-3y", tmp_path)
    with pytest.raises(ArtifactInvalid, match="no artifact"):
        load("no-such-model", tmp_path)


def test_explanations_add_up_to_the_probability_shown():
    model = registry.get("acute-care-1y")
    checked = 0
    for bundle in synthea_bundles()[:30]:
        context = _today_context(bundle)
        try:
            prediction = model.predict(context)
        except NotEligible:
            continue
        logit = math.log(prediction.probability / (1 - prediction.probability))
        total = prediction.baseline_logit + sum(f.contribution for f in prediction.factors)
        assert total == pytest.approx(logit, abs=1e-4)
        contributions = [abs(f.contribution) for f in prediction.factors]
        assert contributions == sorted(contributions, reverse=True)
        assert all(f.label for f in prediction.factors)
        checked += 1
    assert checked >= 15


def test_who_is_not_scored():
    cvd = registry.get("cvd-event-3y")
    with pytest.raises(NotEligible, match="outside 30-79"):
        cvd.predict(patient(age=25))
    with pytest.raises(NotEligible, match="already recorded"):
        cvd.predict(patient(age=60, conditions=[condition("88805009", "2020-01-01")]))
    with pytest.raises(NotEligible, match="deceased"):
        registry.get("acute-care-1y").predict(patient(age=60, deceased=True))
    scored = cvd.predict(patient(age=60))
    assert 0 < scored.probability < 1
    assert all(math.isnan(v) for v in scored.vector.values[2:13]), "no values: NaN, not imputed"


def _references(model_id: str) -> list[dict]:
    metrics = json.loads((ARTIFACTS / model_id / "metrics.json").read_text())
    return metrics["reference_predictions"]


@pytest.fixture
def frozen_today(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Freeze the adapters' calendar (the as-of day of a hook) at a chosen date."""

    class AnyDate(type):
        def __instancecheck__(cls, obj: object) -> bool:
            return isinstance(obj, date)

    def freeze(day: date) -> None:
        class Frozen(date, metaclass=AnyDate):
            @classmethod
            def today(cls) -> date:  # type: ignore[override]
                return day

        monkeypatch.setattr(context_builder, "date", Frozen)

    return freeze


@pytest.mark.parametrize("model_id", MODELS)
def test_the_service_serves_the_training_pipelines_probability(
    model_id, make_app, mint, frozen_today, database_url
):
    """Held-out samples the training run scored (stored in the artifact) are replayed as
    patient-view calls: the EHR's record as it stood on the index date, the hook on that
    day. The card's probability must equal the training pipeline's."""
    app = make_app(risk_thresholds={model_id: 1e-6})
    client = app.test_client()
    references = _references(model_id)
    assert len(references) >= 6 and {r["outcome"] for r in references} == {0, 1}
    for reference in references:
        resources = resources_by_type(load_bundle(SYNTHEA / reference["source"]))
        at = datetime.fromisoformat(reference["index"])
        patient_id = reference["patient_id"]
        prefetch = prefetch_for(record_as_of(resources, at))
        # The training pipeline, again, from the files (the stored value is its output).
        offline = registry.get(model_id).predict(context_as_of(resources, patient_id, at))
        assert offline.probability == pytest.approx(reference["probability"], abs=1e-9)
        frozen_today(at.date())
        body = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": patient_id},
            "prefetch": {key: prefetch[key] for key in PREFETCH_KEYS},
        }
        path = "/cds-services/risk-models"
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {mint(path)}"})
        assert response.status_code == 200, response.json
        cards = [c for c in response.json["cards"] if model_id in c["source"]["label"]]
        assert len(cards) == 1, (reference, response.json["cards"])
        stored = {row.uuid: row.result for row in rows_of(database_url, AuditCard)}
        served = stored[cards[0]["uuid"]]["probability"]
        assert served == pytest.approx(reference["probability"], rel=1e-9, abs=1e-12)
