"""audit_access (reads of the audit, in the same hash chain), reviewer accounts, read indexes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_access",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("principal_system", sa.Text(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False, index=True),
        sa.Column("grants", JsonType, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("query", JsonType, nullable=False),
        sa.Column("patient_id", sa.Text(), index=True),
        sa.Column("result_count", sa.Integer()),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("remote_addr", sa.String(64)),
    )
    op.create_table(
        "reviewer_account",
        sa.Column("username", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("roles", JsonType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    )
    # The FHIR API and the review page page by seq (keyset) within a patient or a user,
    # and filter on dates.
    op.create_index("ix_audit_invocation_patient_seq", "audit_invocation", ["patient_id", "seq"])
    op.create_index("ix_audit_invocation_user_seq", "audit_invocation", ["user_id", "seq"])
    op.create_index("ix_audit_invocation_received_at", "audit_invocation", ["received_at"])
    op.create_index("ix_audit_invocation_hook_seq", "audit_invocation", ["hook", "seq"])
    op.create_index("ix_audit_feedback_received_at", "audit_feedback", ["received_at"])
    op.create_index("ix_audit_feedback_service_seq", "audit_feedback", ["service_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_feedback_service_seq", "audit_feedback")
    op.drop_index("ix_audit_invocation_hook_seq", "audit_invocation")
    op.drop_index("ix_audit_feedback_received_at", "audit_feedback")
    op.drop_index("ix_audit_invocation_received_at", "audit_invocation")
    op.drop_index("ix_audit_invocation_user_seq", "audit_invocation")
    op.drop_index("ix_audit_invocation_patient_seq", "audit_invocation")
    op.drop_table("reviewer_account")
    op.drop_table("audit_access")
