"""``cds imaging predict PATH…``: one JSON line per file, folders walked recursively."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.imaging.dataset import PneumoniaMnist
from tests.conftest import REPO
from tests.imaging.conftest import PATIENT, chest_xray, write
from tests.support.dicom_fixtures import compressed_study

KEYS = ["sop_instance_uid", "file", "status", "probability", "label", "reason"]


def _cds(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDROUND_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "cds.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


def test_predict_writes_one_json_line_per_file(
    tmp_path: Path, pneumoniamnist: PneumoniaMnist
) -> None:
    images = pneumoniamnist.train_images
    folder = tmp_path / "pacs-export"
    nested = folder / "series-2"
    nested.mkdir(parents=True)
    write(folder, "a-chest.dcm", chest_xray(images[0]))
    write(folder, "b-knee.dcm", chest_xray(images[1], BodyPartExamined="KNEE"))
    (folder / "c-notes.txt").write_text("not an image")
    (folder / ".hidden").write_bytes(b"ignored")
    compressed = compressed_study(PATIENT, nested, images, 2).instances  # 3 files
    single = write(tmp_path, "single.dcm", chest_xray(np.full((28, 28), 3, np.uint8)))

    run = _cds("imaging", "predict", str(folder), str(single), "--no-progress")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["file"]).name for r in lines] == [
        "a-chest.dcm",
        "b-knee.dcm",
        "c-notes.txt",
        *sorted(i.path.name for i in compressed),
        "single.dcm",
    ]
    assert all(list(r) == KEYS for r in lines)
    chest, knee, text, *from_series, blank = lines
    assert {r["status"] for r in [chest, *from_series]} == {"analysed"}
    assert chest["label"] in ("pneumonia", "no-pneumonia") and 0 <= chest["probability"] <= 1
    assert {r["sop_instance_uid"] for r in from_series} == {i.sop_instance_uid for i in compressed}
    assert knee["status"] == "skipped" and knee["reason"].startswith("not a chest radiograph")
    assert knee["sop_instance_uid"] == "1.2.826.0.1.3680043.10.1.1.1"
    assert text == {
        "sop_instance_uid": None,
        "file": str(folder / "c-notes.txt"),
        "status": "skipped",
        "probability": None,
        "label": None,
        "reason": "not DICOM",
    }
    assert blank["reason"] == "blank image (no contrast to read)"


def test_predict_refuses_a_path_that_does_not_exist(tmp_path: Path) -> None:
    run = _cds("imaging", "predict", str(tmp_path / "missing"))
    assert run.returncode == 2
    assert "does not exist" in run.stderr


def test_models_list_names_the_pneumonia_model() -> None:
    from models.artifacts import load_artifact
    from models.imaging import ARTIFACT_DIR

    run = _cds("models", "list")
    assert run.returncode == 0, run.stderr[-2000:]
    artifact = load_artifact(ARTIFACT_DIR)
    assert f"pneumonia-cxr\t1.0.0\t{artifact.sha256}" in run.stdout.splitlines()
