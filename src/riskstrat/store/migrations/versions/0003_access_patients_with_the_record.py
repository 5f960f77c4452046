"""access records carry their patients; the per-patient index is filled after the fact

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Records made before this revision keep their patients only in access_patients: no
    # patients here, nothing pending. Plain ALTER TABLE, never batch mode: on SQLite batch
    # mode copies and drops access_log, and the drop would cascade to access_patients.
    op.add_column("access_log", sa.Column("patients", sa.Text(), nullable=True))
    op.add_column(
        "access_log",
        sa.Column("patients_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_access_log_pending",
        "access_log",
        ["id"],
        sqlite_where=sa.text("patients_pending"),
        postgresql_where=sa.text("patients_pending"),
    )


def downgrade() -> None:
    # Without the column, a pending record's patients would be lost: refuse instead.
    pending = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM access_log WHERE patients_pending"))
        .scalar_one()
    )
    if pending:
        raise RuntimeError(
            f"{pending} access records are not yet in access_patients; query the audit trail "
            "once (`riskstrat audit`), which indexes them, then downgrade"
        )
    op.drop_index("ix_access_log_pending", table_name="access_log")
    op.drop_column("access_log", "patients_pending")  # plain ALTER TABLE, as in upgrade
    op.drop_column("access_log", "patients")
