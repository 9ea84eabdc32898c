"""The shipped report model: a verified artifact that reproduces its model card's numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models import registry
from models.artifacts import ArtifactInvalid, load_artifact, write_manifest
from models.nlp import ARTIFACT_DIR, MODEL_ID
from models.nlp.heads import VARIANTS
from models.nlp.iu_reports import load_reports, split
from models.nlp.reader import ReportReader
from models.nlp.training import MODEL_CARD, evaluate
from tests.conftest import REPO
from tests.support.missing import shared_file

IU_CSV = "iu-xray-reports/reports.csv"


def _iu_reports():  # type: ignore[no-untyped-def]
    return load_reports(shared_file(IU_CSV))


def test_the_registry_serves_the_verified_artifact(reader: ReportReader) -> None:
    artifact = load_artifact(ARTIFACT_DIR)
    assert registry.identity(MODEL_ID) == artifact.identity
    assert set(artifact.files) == {"heads.npz", "split.json"}
    meta = artifact.metadata
    assert meta["variant"] == reader.variant
    assert set(meta["metrics"]["held_out_test"]) == set(VARIANTS)
    oof = {v: m["oof_macro_f1_train"] for v, m in meta["metrics"]["held_out_test"].items()}
    assert oof[meta["variant"]] == max(oof.values())  # chosen on training folds only


def test_the_split_is_disjoint_and_matches_the_seeded_split() -> None:
    ids = json.loads((ARTIFACT_DIR / "split.json").read_text())
    assert not set(ids["train"]) & set(ids["test"])
    train, test = split(_iu_reports())
    assert (train, test) == (ids["train"], ids["test"])


def test_the_shipped_model_reproduces_its_test_numbers(reader: ReportReader) -> None:
    """What `cds nlp evaluate` checks: the whole held-out split, the real transformer."""
    artifact = load_artifact(ARTIFACT_DIR)
    measured = evaluate(artifact, shared_file(IU_CSV), encoder=reader.encoder)
    recorded = artifact.metadata["metrics"]["held_out_test"][artifact.metadata["variant"]]
    assert measured["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-4)
    assert measured["per_finding"] == {
        k: {f: v[f] for f in measured["per_finding"][k]} for k, v in recorded["per_finding"].items()
    }
    rules = artifact.metadata["metrics"]["held_out_test"]["rules"]["macro_f1"]
    assert f"{recorded['macro_f1']:.3f}" in MODEL_CARD.read_text()
    assert f"{rules:.3f}" in MODEL_CARD.read_text()


def test_no_report_text_ships_in_the_product() -> None:
    sentences = {
        s.strip()
        for r in _iu_reports()
        for s in r.text.replace("\n", " ").split(". ")
        if len(s.strip()) > 50 and "XXXX" not in s
    }
    product = [REPO / "models", REPO / "cds", REPO / "README.md"]
    for root in product:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix in (".pyc",):
                continue
            content = path.read_bytes().decode("utf-8", errors="ignore")
            leaked = [s for s in sentences if s in content]
            assert not leaked, f"{path} holds IU report text: {leaked[0][:60]}…"


def _copy(tmp_path: Path, **metadata_changes: object) -> Path:
    folder = tmp_path / "report-nlp"
    shutil.copytree(ARTIFACT_DIR, folder)
    artifact = load_artifact(folder)
    (folder / "manifest.json").unlink()
    write_manifest(folder, artifact.id, artifact.version, {**artifact.metadata, **metadata_changes})
    return folder


def test_a_changed_lexicon_or_encoder_is_refused(reader: ReportReader, tmp_path: Path) -> None:
    with pytest.raises(ArtifactInvalid, match="knowledge files changed"):
        ReportReader(
            load_artifact(_copy(tmp_path / "a", knowledge_sha256="0" * 64)), reader.encoder
        )
    encoder = dict(load_artifact(ARTIFACT_DIR).metadata["encoder"], weights_sha256="0" * 64)
    with pytest.raises(ArtifactInvalid, match="encoder"):
        ReportReader(load_artifact(_copy(tmp_path / "b", encoder=encoder)), reader.encoder)
    folder = _copy(tmp_path / "c")
    (folder / "heads.npz").write_bytes(b"not numpy")
    with pytest.raises(ArtifactInvalid, match=r"heads\.npz"):
        load_artifact(folder)


def test_read_gives_assertion_probability_and_evidence(reader: ReportReader) -> None:
    text = (
        "FINDINGS: Heart size is normal. There is a small right apical pneumothorax. "
        "No pleural effusion.\n\nIMPRESSION: Small right pneumothorax."
    )
    (result,) = reader.read([text])
    pneumothorax = result.get("pneumothorax")
    assert pneumothorax is not None and pneumothorax.assertion == "present"
    assert pneumothorax.evidence == "Small right pneumothorax."
    assert 0.5 <= pneumothorax.probability <= 1
    effusion = result.get("pleural_effusion")
    assert effusion is not None and effusion.assertion == "absent" and effusion.probability < 0.5
    assert result.get("fracture") is None
    assert set(pneumothorax.to_json()) == {"label", "assertion", "probability", "evidence"}
    (empty,) = reader.read([""])
    assert empty.findings == () and empty.sentences == 0
