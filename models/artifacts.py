"""Versioned model artifacts: the files of a trained model, described and hashed by a manifest.

An artifact is a folder (``models/<family>/artifacts/<model-id>/``) holding the model files
(weights, feature spec, calibration, …) and ``manifest.json``:

.. code-block:: json

    {"id": "t2d-onset-3y", "version": "1.0.0",
     "files": {"model.json": "<sha256>", "feature_spec.json": "<sha256>"},
     "metadata": {"metrics": {...}, "training_data": "...", ...}}

The artifact hash is the SHA-256 of the canonical manifest JSON, which names every file's
own SHA-256: one hash that changes when any file, the version or the metadata changes.
Loading verifies every file against the manifest, so a tampered or half-copied artifact
is refused (:class:`ArtifactInvalid`) rather than served. The audit log records
``(id, version, hash)`` of every model that produced a card (:class:`ModelIdentity`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class ArtifactInvalid(RuntimeError):
    """An artifact folder is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class ModelIdentity:
    """What the audit log records for every model that produced a card."""

    id: str
    version: str
    #: SHA-256 of the artifact manifest; ``None`` for rule sets without an artifact.
    sha256: str | None = None


@dataclass(frozen=True)
class Artifact:
    path: Path
    id: str
    version: str
    files: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(id=self.id, version=self.version, sha256=self.sha256)

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise ArtifactInvalid(f"{self.id}: {name} is not part of the artifact")
        return self.path / name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(folder: Path, pattern: str) -> str:
    """One SHA-256 over the name and bytes of every file in ``folder`` matching ``pattern``,
    in name order: the version of a knowledge base kept as files beside the code."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob(pattern)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def write_manifest(
    folder: Path, model_id: str, version: str, metadata: Mapping[str, Any] | None = None
) -> Artifact:
    """Hash every file in ``folder`` (except the manifest) and write ``manifest.json``."""
    files = {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"id": model_id, "version": version, "files": files, "metadata": metadata or {}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return load_artifact(folder)


def load_artifact(folder: Path) -> Artifact:
    """Read and verify an artifact folder; raise :class:`ArtifactInvalid` on any mismatch."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        model_id, version, files = manifest["id"], manifest["version"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactInvalid(f"{folder.name}: unreadable manifest ({type(exc).__name__})") from exc
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactInvalid(f"{model_id}: file {name} is missing")
        if file_sha256(path) != expected:
            raise ArtifactInvalid(f"{model_id}: file {name} does not match its manifest hash")
    return Artifact(
        path=folder,
        id=str(model_id),
        version=str(version),
        files=dict(files),
        metadata=manifest.get("metadata") or {},
        sha256=hashlib.sha256(_canonical(manifest)).hexdigest(),
    )
