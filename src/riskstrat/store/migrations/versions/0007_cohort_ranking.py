"""cohort_members.ranking: a list ranked by another model's risk (its model, risk, reasons)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column, added in place (no table copy): existing rows (lists ranked by
    # admission risk) read as null.
    op.add_column("cohort_members", sa.Column("ranking", sa.JSON(), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    if "ranking" not in {c["name"] for c in sa.inspect(bind).get_columns("cohort_members")}:
        return  # already dropped (SQLite does not roll DDL back with a failed downgrade)
    op.drop_column("cohort_members", "ranking")  # plain ALTER TABLE (SQLite 3.35+), no copy
