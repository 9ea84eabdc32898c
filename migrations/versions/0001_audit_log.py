"""Audit log: invocations, cards, feedback, chain head, JWT replay store.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def _chain_columns() -> list[sa.Column]:
    return [
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_invocation",
        *_chain_columns(),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False, index=True),
        sa.Column("hook", sa.String(128)),
        sa.Column("hook_instance", sa.String(64), index=True),
        sa.Column("fhir_server", sa.Text()),
        sa.Column("client_iss", sa.Text()),
        sa.Column("client_sub", sa.Text()),
        sa.Column("user_id", sa.Text()),
        sa.Column("patient_id", sa.Text(), index=True),
        sa.Column("encounter_id", sa.Text()),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("prefetch_used", JsonType, nullable=False),
        sa.Column("prefetch_fetched", JsonType, nullable=False),
        sa.Column("model_versions", JsonType, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_detail", sa.Text()),
    )
    op.create_table(
        "audit_card",
        *_chain_columns(),
        sa.Column(
            "invocation_seq",
            sa.BigInteger(),
            sa.ForeignKey("audit_invocation.seq"),
            nullable=False,
            index=True,
        ),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("summary", sa.String(140), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("card_json", JsonType, nullable=False),
    )
    op.create_table(
        "audit_feedback",
        *_chain_columns(),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "card_uuid",
            sa.String(36),
            sa.ForeignKey("audit_card.uuid"),
            nullable=False,
            index=True,
        ),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("client_iss", sa.Text()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_suggestions", JsonType, nullable=False),
        sa.Column("override_reason", JsonType),
    )
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "audit_chain_head",
            sa.column("id", sa.Integer()),
            sa.column("last_seq", sa.BigInteger()),
            sa.column("last_hash", sa.String()),
        ),
        [{"id": 1, "last_seq": 0, "last_hash": "0" * 64}],
    )
    op.create_table(
        "jwt_replay",
        sa.Column("iss", sa.String(512), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    for table in (
        "jwt_replay",
        "audit_chain_head",
        "audit_feedback",
        "audit_card",
        "audit_invocation",
    ):
        op.drop_table(table)
