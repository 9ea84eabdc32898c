"""The report model, loaded once for the NLP tests (the real transformer, from its package)."""

from __future__ import annotations

import pytest

from models import registry
from models.nlp import MODEL_ID
from models.nlp.reader import ReportReader


@pytest.fixture(scope="session")
def reader() -> ReportReader:
    return registry.get(MODEL_ID)
