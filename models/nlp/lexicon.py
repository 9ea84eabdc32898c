"""The knowledge files of the report reader, and one digest of them all."""

from __future__ import annotations

import hashlib
from functools import cache

from models.nlp.context import KNOWLEDGE


@cache
def knowledge_sha256() -> str:
    """SHA-256 over every knowledge file's name and bytes (the trained heads record it)."""
    digest = hashlib.sha256()
    for path in sorted(KNOWLEDGE.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
