"""Canonical row content and the hash that links each audit row to the one before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cds.audit.tables import ChainedRow


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes: everything is stored in UTC.
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical_content(table: type[ChainedRow], values: Mapping[str, Any]) -> dict[str, Any]:
    content = {
        name: _canonical_value(values.get(name))
        for name in table.hashed_columns
        if name not in table.later_hashed_columns or values.get(name) is not None
    }
    content["table"] = table.__tablename__  # type: ignore[attr-defined]
    content["seq"] = values["seq"]
    content["prev_hash"] = values["prev_hash"]
    return content


def content_hash(table: type[ChainedRow], values: Mapping[str, Any]) -> str:
    """SHA-256 over canonical JSON (sorted keys, no whitespace, UTF-8) of a row's content."""
    payload = json.dumps(
        canonical_content(table, values), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def row_values(row: ChainedRow) -> dict[str, Any]:
    names = (*row.hashed_columns, "seq", "prev_hash")
    return {name: getattr(row, name) for name in names}


def row_hash(row: ChainedRow) -> str:
    """The hash a stored (ORM) row should carry."""
    return content_hash(type(row), row_values(row))
