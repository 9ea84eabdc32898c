"""audit_card.result: what each card asserts, as data (served by the FHIR API).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable: rows written before this column hash without it (``later_hashed_columns``).
    with op.batch_alter_table("audit_card") as batch:
        batch.add_column(sa.Column("result", JsonType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_card") as batch:
        batch.drop_column("result")
