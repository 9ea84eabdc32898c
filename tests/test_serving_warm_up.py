"""Models loaded in each gunicorn worker before it serves (gunicorn.conf.py), with one torch
thread per worker unless OMP_NUM_THREADS says otherwise; a broken model does not stop a
worker from starting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from cds.config import Settings
from cds.migrate import upgrade
from cds.serving.warm_up import warm_models
from models import registry
from tests.support.live_server import GunicornServer


def _warm_up_lines(server: GunicornServer) -> list[dict]:
    lines = [line for line in server.log_tail(1_000_000).splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines if '"models loaded"' in line]


def test_a_worker_loads_every_model_before_it_serves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    warm = {"WARDROUND_AUTH": "off", "WARDROUND_WARM_MODELS": "true"}
    with GunicornServer(url, None, tmp_path / "warm", workers=1, extra_env=warm) as server:
        (line,) = _warm_up_lines(server)  # logged before the worker answered
        assert line["models"] == len(registry.MODEL_ENTRIES) and line["failed"] == []
        assert line["torch_threads"] == 1  # gunicorn.conf.py's OMP_NUM_THREADS default
        assert requests.get(f"{server.base_url}/models/report-nlp/", timeout=10).ok
    lazy = {"WARDROUND_AUTH": "off"}  # the harness default: WARDROUND_WARM_MODELS=false
    with GunicornServer(url, None, tmp_path / "lazy", workers=1, extra_env=lazy) as server:
        assert _warm_up_lines(server) == []


def test_a_broken_model_is_logged_and_the_rest_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = registry.ModelEntry("broken", "test", "a loader that fails", "models.nowhere:load")
    monkeypatch.setattr(registry, "MODEL_ENTRIES", (broken, registry.entry("drug-safety")))
    monkeypatch.setattr(registry, "_loaded", {})
    summary = warm_models()
    assert summary["models"] == 1 and summary["failed"] == ["broken"]
    (record,) = [r for r in caplog.records if r.getMessage() == "model not loaded"]
    assert (record.model, record.error) == ("broken", "ModuleNotFoundError")  # type: ignore[attr-defined]


def test_warm_up_is_on_unless_switched_off(tmp_path: Path) -> None:
    assert Settings.from_env({}, instance_path=tmp_path).warm_models is True
    for off in ("false", "0", "no"):
        env = {"WARDROUND_WARM_MODELS": off}
        assert Settings.from_env(env, instance_path=tmp_path).warm_models is False
