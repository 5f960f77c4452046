"""patient_marks: what a team did about a listed person (contacted, reviewed, ...)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: nothing existing is copied or rewritten. No foreign key to a run:
    # marks outlive the runs they were made on (a person reviewed in November stays
    # reviewed on December's list), so pruning runs never touches them. ``person`` is as
    # wide as the identifier columns after 0004 (a pseudonym of up to 64 characters).
    op.create_table(
        "patient_marks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("person", sa.String(length=64), nullable=False),
        sa.Column("identifier_kind", sa.String(length=20), nullable=False),
        sa.Column("intervention", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("pcn_code", sa.String(length=6), nullable=False),
        sa.Column("marked_by", sa.String(length=200), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
    )
    op.create_index(
        "ix_patient_marks_person",
        "patient_marks",
        ["person", "intervention", "marked_at", "id"],
    )


def downgrade() -> None:
    bind = op.get_bind()
    if "patient_marks" not in sa.inspect(bind).get_table_names():
        # Already dropped: on SQLite, DDL is not rolled back with a failed downgrade that went
        # on to an earlier revision, so a retry finds the table gone and the version not.
        return
    # Marks are a record of care teams' work: refuse to throw them away silently.
    kept = bind.execute(sa.text("SELECT count(*) FROM patient_marks")).scalar_one()
    if kept:
        raise RuntimeError(
            f"{kept} marks are kept; without revision 0005 they would be lost. Back up and "
            "delete them first if that is intended"
        )
    op.drop_index("ix_patient_marks_person", table_name="patient_marks")
    op.drop_table("patient_marks")
