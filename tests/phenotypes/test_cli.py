"""``cds population phenotypes fit`` and ``assign``: one command writes the artifact and
the report; assign writes every patient's phenotype (a few shared patients, for time)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds.cli import main
from models.artifacts import load_artifact
from models.phenotypes.report import FIGURES
from models.registry import CARD_FIGURES
from tests.conftest import synthea_bundles

SUBSET = 80


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthea-subset")
    for bundle in synthea_bundles()[:SUBSET]:
        (folder / bundle.name).symlink_to(bundle)
    return folder


def test_fit_writes_the_artifact_and_the_report(subset: Path, tmp_path: Path) -> None:
    args = [
        "population",
        "phenotypes",
        "fit",
        "--data",
        str(subset),
        "--artifact",
        str(tmp_path / "artifact"),
        "--card",
        str(tmp_path / "report" / "MODEL_CARD.md"),
        "--no-progress",
    ]
    (tmp_path / "report").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "artifact")
    assert artifact.id == "patient-phenotypes" and artifact.sha256 in result.output
    metrics = json.loads(artifact.file("metrics.json").read_text())
    assert metrics["cohort"]["records"] == SUBSET
    chosen = json.loads(artifact.file("metrics.json").read_text())["methods"][0]["clusters"]
    assert f"k = {chosen}:" in result.output
    for method in ("k-means", "DBSCAN", "HDBSCAN"):
        assert method in result.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in html and html.count("<img") == len(FIGURES)
    for name in FIGURES:
        assert (tmp_path / "report" / CARD_FIGURES / name).stat().st_size > 10_000


def test_assign_writes_one_phenotype_per_patient(subset: Path, tmp_path: Path) -> None:
    from models import registry

    out = tmp_path / "phenotypes.jsonl"
    args = ["population", "phenotypes", "assign", "--data", str(subset), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == SUBSET
    assert len({line["patient_id"] for line in lines}) == SUBSET
    model = registry.get("patient-phenotypes")
    k = len(model.centroids)
    assert {line["phenotype"] for line in lines} <= set(range(1, k + 1))
    assert len({line["phenotype"] for line in lines}) > 1
    for line in lines:
        assert line["name"] == model.phenotype_name(line["phenotype"] - 1)
    assert f"{SUBSET} patients" in result.output
