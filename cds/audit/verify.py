"""Walk the hash chain and report the first broken link."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.audit.chain import row_hash
from cds.audit.tables import CHAINED_TABLES, GENESIS_HASH, ChainedRow, ChainHead


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    last_seq: int
    last_hash: str
    broken_seq: int | None = None
    broken_table: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.ok:
            return (
                f"audit chain intact: {self.rows} rows, head seq {self.last_seq} {self.last_hash}"
            )
        where = f"seq {self.broken_seq}" + (f" ({self.broken_table})" if self.broken_table else "")
        return f"audit chain BROKEN at {where}: {self.reason}"


def _rows_in_order(session: Session, batch: int, after_seq: int = 0) -> Iterator[ChainedRow]:
    streams = [
        session.execute(
            select(table)
            .where(table.seq > after_seq)
            .order_by(table.seq)
            .execution_options(yield_per=batch)
        ).scalars()
        for table in CHAINED_TABLES
    ]
    return heapq.merge(*streams, key=lambda row: row.seq)


def _check_link(row: ChainedRow, expected_seq: int, expected_prev: str) -> str | None:
    """Why ``row`` does not continue the chain, or None if it does."""
    if row.seq != expected_seq:
        kind = "duplicate" if row.seq < expected_seq else "missing"
        return f"{kind} sequence number (expected {expected_seq}, found {row.seq})"
    if row.prev_hash != expected_prev:
        return "prev_hash does not match the hash of the previous row"
    if row_hash(row) != row.hash:
        return "row content does not match its hash (row was modified)"
    return None


def verify_chain(
    session: Session, batch: int = 2000, after: tuple[int, str] | None = None
) -> VerifyResult:
    """Walk the chain from the start, or only the rows after ``after`` = (seq, hash) of a
    link verified before (incremental: rows up to it are not read again). ``rows`` counts
    the rows walked by this call."""
    after_seq, expected_prev = after or (0, GENESIS_HASH)
    expected_seq, count = after_seq + 1, 0
    for row in _rows_in_order(session, batch, after_seq):
        reason = _check_link(row, expected_seq, expected_prev)
        if reason is not None:
            table = row.__tablename__  # type: ignore[attr-defined]
            return VerifyResult(
                False, count, expected_seq - 1, expected_prev, row.seq, table, reason
            )
        expected_prev, expected_seq, count = row.hash, expected_seq + 1, count + 1

    head = session.get(ChainHead, 1)
    head_seq, head_hash = (head.last_seq, head.last_hash) if head else (0, GENESIS_HASH)
    if (head_seq, head_hash) != (expected_seq - 1, expected_prev):
        return VerifyResult(
            False, count, expected_seq - 1, expected_prev, head_seq, "audit_chain_head",
            f"chain head names seq {head_seq} but the last row found is seq {expected_seq - 1} "
            "(rows were removed from the end)",
        )  # fmt: skip
    return VerifyResult(True, count, expected_seq - 1, expected_prev)
