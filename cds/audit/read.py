"""Reading the audit log: the conditions and loaders the FHIR API and the review page share.

Pages are keyset pages on ``seq`` (the chain's sequence, shared by every chained table):
``seq < cursor`` newest first, or ``seq > cursor`` oldest first, never OFFSET. A row
committed while someone pages gets a higher seq than any row already served, so pages
never shift under concurrent inserts. Readers use snapshot sessions
(:func:`cds.db.make_snapshot_sessionmaker`): one consistent view per request, and on
SQLite no write lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from cds.audit.tables import Access, Card, Feedback, Invocation

FeedbackOutcome = str  # "accepted" | "overridden" | "none"


@dataclass
class CallRecord:
    """One CDS call with its cards and the feedback on each (in seq order)."""

    invocation: Invocation
    cards: list[Card] = field(default_factory=list)
    feedback: dict[str, list[Feedback]] = field(default_factory=dict)

    def feedback_on(self, card: Card) -> list[Feedback]:
        return self.feedback.get(card.uuid, [])


# --------------------------------------------------------------------------- conditions
def model_used(dialect: str, model_id: str) -> ColumnElement[bool]:
    """The invocation ran the model ``model_id`` (``model_versions`` holds ``{"id": …}``)."""
    if dialect == "postgresql":
        return type_coerce(Invocation.model_versions, JSONB).contains([{"id": model_id}])
    entries = func.json_each(Invocation.model_versions).table_valued("value").alias("model_entry")
    return (
        select(literal(1))
        .select_from(entries)
        .where(func.json_extract(entries.c.value, "$.id") == model_id)
        .exists()
    )


def cards_of_patient(patient_ids: Sequence[str]) -> Select:
    """uuids of the cards returned for ``patient_ids``."""
    return (
        select(Card.uuid)
        .join(Invocation, Card.invocation_seq == Invocation.seq)
        .where(Invocation.patient_id.in_(patient_ids))
    )


def has_card(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The invocation returned a card meeting ``conditions``."""
    return exists().where(Card.invocation_seq == Invocation.seq, *conditions)


def feedback_outcome_is(outcome: FeedbackOutcome) -> ColumnElement[bool]:
    """``accepted`` / ``overridden``: some card of the call got that feedback; ``none``: the
    call returned cards and none of them got any feedback."""
    if outcome == "none":
        with_feedback = exists().where(Feedback.card_uuid == Card.uuid)
        return and_(has_card(), ~has_card(with_feedback))
    return has_card(exists().where(Feedback.card_uuid == Card.uuid, Feedback.outcome == outcome))


def keyset(seq_column, cursor: int | None, descending: bool) -> list[ColumnElement[bool]]:  # type: ignore[no-untyped-def]
    if cursor is None:
        return []
    return [seq_column < cursor] if descending else [seq_column > cursor]


def ordered(seq_column, descending: bool):  # type: ignore[no-untyped-def]
    return seq_column.desc() if descending else seq_column.asc()


def any_of(conditions: Iterable[ColumnElement[bool]]) -> ColumnElement[bool]:
    items = list(conditions)
    return items[0] if len(items) == 1 else or_(*items)


# --------------------------------------------------------------------------- loaders
def load_calls(session: Session, seqs: Sequence[int]) -> dict[int, CallRecord]:
    """The calls ``seqs`` with their cards and each card's feedback, by seq."""
    if not seqs:
        return {}
    calls = {
        row.seq: CallRecord(row)
        for row in session.scalars(select(Invocation).where(Invocation.seq.in_(seqs)))
    }
    cards = session.scalars(
        select(Card).where(Card.invocation_seq.in_(seqs)).order_by(Card.seq)
    ).all()
    for card in cards:
        calls[card.invocation_seq].cards.append(card)
    feedback = feedback_on(session, [card.uuid for card in cards])
    for call in calls.values():
        call.feedback = {c.uuid: feedback[c.uuid] for c in call.cards if c.uuid in feedback}
    return calls


def feedback_on(session: Session, card_uuids: Sequence[str]) -> dict[str, list[Feedback]]:
    out: dict[str, list[Feedback]] = defaultdict(list)
    if card_uuids:
        for row in session.scalars(
            select(Feedback).where(Feedback.card_uuid.in_(card_uuids)).order_by(Feedback.seq)
        ):
            out[row.card_uuid].append(row)
    return dict(out)


def load_feedback(
    session: Session, seqs: Sequence[int]
) -> dict[int, tuple[Feedback, Card | None, Invocation | None]]:
    """Feedback rows ``seqs`` with the card they name and that card's call."""
    if not seqs:
        return {}
    rows = session.execute(
        select(Feedback, Card, Invocation)
        .outerjoin(Card, Card.uuid == Feedback.card_uuid)
        .outerjoin(Invocation, Invocation.seq == Card.invocation_seq)
        .where(Feedback.seq.in_(seqs))
    ).all()
    return {fb.seq: (fb, card, invocation) for fb, card, invocation in rows}


def load_access(session: Session, seqs: Sequence[int]) -> dict[int, Access]:
    if not seqs:
        return {}
    return {row.seq: row for row in session.scalars(select(Access).where(Access.seq.in_(seqs)))}
