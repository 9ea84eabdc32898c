"""Model artifacts and the model registry: hashes, verification, what the audit records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from models import registry
from models.artifacts import ArtifactInvalid, load_artifact, write_manifest
from models.drug import knowledge_sha256, model_version
from tests.test_audit_log import CDS_CLI, cli_env


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "spec").mkdir()
    (folder / "spec" / "features.json").write_text(json.dumps({"features": ["age"]}))
    return folder


def test_manifest_names_every_file_with_its_hash(artifact_dir: Path) -> None:
    artifact = write_manifest(artifact_dir, "toy", "1.2.0", {"metrics": {"auroc": 0.8}})
    assert set(artifact.files) == {"weights.bin", "spec/features.json"}
    assert artifact.identity.id == "toy" and artifact.identity.version == "1.2.0"
    assert len(artifact.sha256) == 64
    assert load_artifact(artifact_dir).sha256 == artifact.sha256  # stable across loads
    assert artifact.metadata["metrics"] == {"auroc": 0.8}
    assert artifact.file("weights.bin").read_bytes()[:3] == b"\x00\x01\x02"
    with pytest.raises(ArtifactInvalid):
        artifact.file("other.bin")


def test_a_changed_file_is_refused(artifact_dir: Path) -> None:
    write_manifest(artifact_dir, "toy", "1.0.0")
    (artifact_dir / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactInvalid, match=r"weights\.bin does not match"):
        load_artifact(artifact_dir)


def test_a_missing_file_or_manifest_is_refused(artifact_dir: Path) -> None:
    write_manifest(artifact_dir, "toy", "1.0.0")
    (artifact_dir / "spec" / "features.json").unlink()
    with pytest.raises(ArtifactInvalid, match="missing"):
        load_artifact(artifact_dir)
    (artifact_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactInvalid, match="unreadable manifest"):
        load_artifact(artifact_dir)


def test_the_hash_changes_with_version_or_metadata(artifact_dir: Path) -> None:
    first = write_manifest(artifact_dir, "toy", "1.0.0", {"metrics": {"auroc": 0.8}}).sha256
    second = write_manifest(artifact_dir, "toy", "1.0.1", {"metrics": {"auroc": 0.8}}).sha256
    third = write_manifest(artifact_dir, "toy", "1.0.1", {"metrics": {"auroc": 0.9}}).sha256
    assert len({first, second, third}) == 3


def test_registry_serves_each_model_once_with_its_identity() -> None:
    rules = registry.get("drug-safety")
    assert registry.get("drug-safety") is rules
    assert rules.identity.version == model_version()
    assert rules.identity.sha256 == knowledge_sha256()
    with pytest.raises(registry.UnknownModel):
        registry.get("no-such-model")


def test_every_registered_model_loads() -> None:
    identities = registry.warm()
    assert [i.id for i in identities] == [e.id for e in registry.MODEL_ENTRIES]
    assert all(i.version for i in identities)


def test_cli_lists_models_with_versions_and_hashes(tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(CDS_CLI), "models", "list"],
        env=cli_env(f"sqlite:///{tmp_path / 'a.db'}", tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = dict(line.split("\t", 1) for line in completed.stdout.splitlines())
    assert lines["drug-safety"] == f"{model_version()}\t{knowledge_sha256()}"
