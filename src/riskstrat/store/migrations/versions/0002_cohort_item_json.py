"""cohort members keep their API item as JSON text

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: runs published before this revision have none, and are served as before.
    op.add_column("cohort_members", sa.Column("item_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cohort_members") as batch:
        batch.drop_column("item_json")
