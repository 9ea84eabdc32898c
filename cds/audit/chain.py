"""Canonical row content and the hash that links each audit row to the one before it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from cds.audit.tables import ChainedRow


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes: everything is stored in UTC.
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical_content(row: ChainedRow) -> dict[str, Any]:
    content = {name: _canonical_value(getattr(row, name)) for name in row.hashed_columns}
    content["table"] = row.__tablename__  # type: ignore[attr-defined]
    content["seq"] = row.seq
    content["prev_hash"] = row.prev_hash
    return content


def row_hash(row: ChainedRow) -> str:
    """SHA-256 over canonical JSON (sorted keys, no whitespace, UTF-8) of the row's content."""
    payload = json.dumps(
        canonical_content(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
