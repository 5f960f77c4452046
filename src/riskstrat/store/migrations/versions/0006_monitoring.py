"""model_monitoring: the champion's monitoring results per run and check date

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: nothing existing is copied or rewritten. No foreign key to a run:
    # monitoring results (aggregates) are kept after the run's people are pruned.
    op.create_table(
        "model_monitoring",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("check_date", sa.Date(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_model_monitoring_run", "model_monitoring", ["run_id", "check_date"])


def downgrade() -> None:
    bind = op.get_bind()
    if "model_monitoring" not in sa.inspect(bind).get_table_names():
        return  # already dropped (SQLite does not roll DDL back with a failed downgrade)
    # Aggregates only, recomputable with `riskstrat monitor` from the extracts: dropped.
    op.drop_index("ix_model_monitoring_run", table_name="model_monitoring")
    op.drop_table("model_monitoring")
