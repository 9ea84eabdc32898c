"""Validated clinical scores (deterministic, published coefficients, cited).

Each score is a pure module (PatientContext in, an assessment out) and a registry entry
whose identity names the code version and the digest of ``knowledge/`` (coefficients,
code sets, rules), so every card's audit row says exactly which rules produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.artifacts import ModelIdentity
from models.risk.kb import knowledge_sha256, knowledge_version
from models.risk.scores import cha2ds2_vasc, has_bled, pce


@dataclass(frozen=True)
class Score:
    """A score as the model registry serves it."""

    identity: ModelIdentity


def _score(score_id: str) -> Score:
    return Score(ModelIdentity(score_id, knowledge_version(), knowledge_sha256()))


def load_pce() -> Score:
    return _score(pce.SCORE_ID)


def load_cha2ds2_vasc() -> Score:
    return _score(cha2ds2_vasc.SCORE_ID)


def load_has_bled() -> Score:
    return _score(has_bled.SCORE_ID)
