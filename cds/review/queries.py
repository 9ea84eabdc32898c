"""What the review page reads: pages of calls, one call, the summary figures, exports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cds.audit import read
from cds.audit.read import CallRecord
from cds.audit.tables import Access, Card, ChainHead, Feedback, Invocation
from cds.review.filters import CallFilter

#: Calls loaded per query while an export streams.
EXPORT_CHUNK = 200
#: The summary covers this many days when the filter names no start date.
SUMMARY_DAYS = 30


@dataclass
class CallPage:
    calls: list[CallRecord]
    #: ``before`` cursor of the next (older) page, or None.
    next_before: int | None


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def page_of_calls(session: Session, where: CallFilter, size: int, before: int | None) -> CallPage:
    query = (
        select(Invocation.seq)
        .where(*where.conditions(_dialect(session)), *read.keyset(Invocation.seq, before, True))
        .order_by(Invocation.seq.desc())
        .limit(size + 1)
    )
    seqs = list(session.scalars(query))
    page = seqs[:size]
    calls = read.load_calls(session, page)
    return CallPage([calls[s] for s in page], page[-1] if len(seqs) > size else None)


def one_call(session: Session, seq: int) -> CallRecord | None:
    return read.load_calls(session, [seq]).get(seq)


def call_of_card(session: Session, card_uuid: str) -> int | None:
    return session.scalar(select(Card.invocation_seq).where(Card.uuid == card_uuid))


def head_seq(session: Session) -> int:
    return session.scalar(select(ChainHead.last_seq).where(ChainHead.id == 1)) or 0


def count_calls(session: Session, where: CallFilter, up_to: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Invocation)
            .where(*where.conditions(_dialect(session)), Invocation.seq <= up_to)
        )
        or 0
    )


def stream_calls(session: Session, where: CallFilter, up_to: int) -> Iterator[CallRecord]:
    """Every call of the filter with seq <= ``up_to``, oldest first, in chunks (keyset)."""
    after = 0
    conditions = where.conditions(_dialect(session))
    while True:
        seqs = list(
            session.scalars(
                select(Invocation.seq)
                .where(*conditions, Invocation.seq > after, Invocation.seq <= up_to)
                .order_by(Invocation.seq)
                .limit(EXPORT_CHUNK)
            )
        )
        if not seqs:
            return
        calls = read.load_calls(session, seqs)
        for seq in seqs:
            call = calls[seq]
            call.feedback = {
                uuid: [f for f in entries if f.seq <= up_to]
                for uuid, entries in call.feedback.items()
            }
            yield call
        after = seqs[-1]


# --------------------------------------------------------------------------- summary
@dataclass
class Rate:
    cards: int = 0
    accepted: int = 0
    overridden: int = 0

    @property
    def with_feedback(self) -> int:
        return self.accepted + self.overridden

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.with_feedback if self.with_feedback else None


@dataclass
class Summary:
    first_day: date
    last_day: date
    #: (day, service) → cards returned
    per_day: dict[tuple[date, str], int] = field(default_factory=dict)
    per_service: dict[str, Rate] = field(default_factory=dict)
    #: (service, card type) → rate; the card type is the result's code, or "indicator" when
    #: the card asserts nothing as data.
    per_type: dict[tuple[str, str], Rate] = field(default_factory=dict)
    calls: int = 0

    @property
    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(count)]

    @property
    def services(self) -> list[str]:
        return sorted({service for _, service in self.per_day} | set(self.per_service))


def summary_window(where: CallFilter, today: date | None = None) -> tuple[date, date]:
    last = where.date_to or today or datetime.now(UTC).date()
    first = where.date_from or (last - timedelta(days=SUMMARY_DAYS - 1))
    return first, last


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def summarise(session: Session, where: CallFilter) -> Summary:
    first, last = summary_window(where)
    bounded = CallFilter(**{**where.__dict__, "date_from": first, "date_to": last})
    conditions = bounded.conditions(_dialect(session))
    if _dialect(session) == "postgresql":
        day = func.date(func.timezone("UTC", Invocation.received_at))
    else:
        day = func.date(Invocation.received_at)
    summary = Summary(first, last)
    summary.calls = (
        session.scalar(select(func.count()).select_from(Invocation).where(*conditions)) or 0
    )
    rows = session.execute(
        select(day, Card.service_id, func.count(Card.seq))
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .where(*conditions)
        .group_by(day, Card.service_id)
    ).all()
    summary.per_day = {(_as_date(d), service): n for d, service, n in rows}

    latest = (
        select(Feedback.card_uuid, func.max(Feedback.seq).label("seq"))
        .group_by(Feedback.card_uuid)
        .subquery()
    )
    # One row per card (its latest feedback), then grouped: the JSON path expression is
    # computed once in the inner query (PostgreSQL would not match it in GROUP BY).
    cards = (
        select(
            Card.service_id.label("service"),
            Card.result[("code", "code")].as_string().label("code"),
            Card.indicator.label("indicator"),
            Feedback.outcome.label("outcome"),
        )
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .outerjoin(latest, latest.c.card_uuid == Card.uuid)
        .outerjoin(Feedback, Feedback.seq == latest.c.seq)
        .where(*conditions)
        .subquery()
    )
    outcome_rows = session.execute(
        select(
            cards.c.service, cards.c.code, cards.c.indicator, cards.c.outcome, func.count()
        ).group_by(cards.c.service, cards.c.code, cards.c.indicator, cards.c.outcome)
    ).all()
    per_service: dict[str, Rate] = defaultdict(Rate)
    per_type: dict[tuple[str, str], Rate] = defaultdict(Rate)
    for service, code, indicator, outcome, n in outcome_rows:
        card_type = code or f"{indicator} (no result)"
        for rate in (per_service[service], per_type[service, card_type]):
            rate.cards += n
            if outcome == "accepted":
                rate.accepted += n
            elif outcome == "overridden":
                rate.overridden += n
    summary.per_service = dict(sorted(per_service.items()))
    summary.per_type = dict(sorted(per_type.items()))
    return summary


# --------------------------------------------------------------------------- access log
def page_of_access(
    session: Session, size: int, before: int | None
) -> tuple[list[Access], int | None]:
    rows = list(
        session.scalars(
            select(Access)
            .where(*read.keyset(Access.seq, before, True))
            .order_by(Access.seq.desc())
            .limit(size + 1)
        )
    )
    page = rows[:size]
    return page, page[-1].seq if len(rows) > size else None


def models_seen(calls: list[CallRecord]) -> list[str]:
    return sorted({str(m.get("id")) for c in calls for m in c.invocation.model_versions or []})
