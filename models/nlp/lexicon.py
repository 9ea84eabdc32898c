"""The knowledge files of the report reader, and one digest of them all."""

from __future__ import annotations

from functools import cache

from models.artifacts import files_sha256
from models.nlp.context import KNOWLEDGE


@cache
def knowledge_sha256() -> str:
    """SHA-256 over every knowledge file's name and bytes (the trained heads record it)."""
    return files_sha256(KNOWLEDGE, "*.csv")
