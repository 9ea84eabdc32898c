"""``cds population score``: every shared patient scored through Spark from the bulk folder,
valid RiskAssessment NDJSON, the run in the audit log; bad options refused up front."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fhir.resources.R4B.riskassessment import RiskAssessment

from cds.audit import verify_chain
from cds.audit.tables import Invocation
from cds.cli import main
from cds.db import make_engine, make_sessionmaker
from fhir_adapters.bulk.ndjson import BulkFolder
from models import registry
from tests.population_jobs.conftest import AS_OF

MODEL_IDS = ["cvd-event-3y", "acute-care-1y"]


def test_the_score_command_writes_valid_risk_assessments_and_audits_the_run(
    scored_by_cli: tuple[Path, str, str], synthea_ndjson: BulkFolder
) -> None:
    out, url, stdout = scored_by_cli
    assert sorted(p.name for p in out.iterdir()) == ["fhir", "records", "run.json", "scores"]
    run = json.loads((out / "run.json").read_text())

    # every line of the NDJSON is a valid R4 RiskAssessment of a shared patient
    resources = 0
    per_model = dict.fromkeys(MODEL_IDS, 0)
    for path in sorted((out / "fhir").glob("RiskAssessment.*.ndjson")):
        for line in path.read_text().splitlines():
            resource = RiskAssessment.model_validate_json(line)
            assert resource.occurrenceDateTime is not None
            assert str(resource.occurrenceDateTime) == AS_OF.isoformat()
            per_model[resource.method.coding[0].code] += 1
            resources += 1
    assert resources > 150 and all(n > 0 for n in per_model.values())
    assert {m: c["eligible"] for m, c in run["scores"].items()} == per_model
    for model_id, count in per_model.items():
        assert f"{model_id}" in stdout and f"{count:,}" in stdout

    # the run: who, what models (id, version, artifact hash), which input files, counts
    assert run["status"] == 200 and run["operator"] == "ci-score-test"
    assert run["manifest"]["parameters"]["as_of"] == AS_OF.isoformat()
    expected_models = [
        {"id": m, "version": registry.identity(m).version, "hash": registry.identity(m).sha256}
        for m in MODEL_IDS
    ]
    assert run["models"] == expected_models
    for dataset in run["manifest"]["inputs"]:
        for file in dataset["files"]:
            stored = (synthea_ndjson.root / file["name"]).read_bytes()
            assert file["sha256"] == hashlib.sha256(stored).hexdigest()
    outputs = {d["key"]: d["entries"] for d in run["outputs"]}
    assert outputs["RiskAssessment"] == resources
    assert outputs["scores"] == 299 * len(MODEL_IDS)
    assert outputs["records/patients"] == 299

    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        row = session.get(Invocation, run["audit_seq"])
        assert row is not None and row.hook is None
        assert (row.service_id, row.user_id, row.hook_instance, row.status_code) == (
            "population:score", "ci-score-test", run["run_id"], 200,
        )  # fmt: skip
        assert row.request_digest == run["manifest_sha256"]
        assert row.model_versions == expected_models
        recorded = {
            d["key"]: d["entries"] for d in row.prefetch_fetched if d["source"] != "bulk-ndjson"
        }
        assert recorded["RiskAssessment"] == resources
        assert verify_chain(session).ok
    engine.dispose()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--model", "ascvd-pce"), "not a learned risk model"),
        (("--model", "no-such-model"), "not a learned risk model"),
        (("--as-of", "30/06/2020"), "expected YYYY-MM-DD"),
        (("--master", "local[two]"), "expected local, local[N]"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    tmp_path: Path, option: tuple[str, str], message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    result = CliRunner().invoke(
        main,
        ["population", "score", str(tmp_path), "--out", str(tmp_path / "o"), *option],
        env={"DATABASE_URL": url},
    )
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()
