"""identifier columns hold 64-character pseudonyms; access records say which kind they read

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: (table, column, width before, width after). A pseudonymous run's ``nhs_number`` columns
#: hold pseudonyms of up to 64 characters (``riskstrat.data.contract.PSEUDONYM_PATTERN``); an
#: audit trail that records identifiers themselves (``audit_identify_patients``) holds them too.
WIDENED = (
    ("patient_scores", "nhs_number", 10, 64),
    ("cohort_members", "nhs_number", 10, 64),
    ("access_patients", "patient", 32, 64),
)


def upgrade() -> None:
    # Plain ALTER TABLE, never batch mode: on SQLite batch mode copies and drops access_log,
    # and the drop would cascade to access_patients (see 0003). Earlier records were all
    # reads by NHS number, which the server default gives them.
    op.add_column(
        "access_log",
        sa.Column(
            "identifier_kind", sa.String(length=20), nullable=False, server_default="nhs_number"
        ),
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite never enforces a VARCHAR's length (the columns have TEXT affinity), so a
        # 64-character pseudonym already fits. Changing the declared type would mean batch
        # mode: copying every retained run's rows and rebuilding their indexes while holding
        # the database's one write lock, which the API's audit writes wait on, for no change
        # in what the columns can hold.
        return
    for table, column, before, after in WIDENED:
        # Widening a VARCHAR on PostgreSQL changes the catalogue only: no table rewrite, no
        # index rebuild.
        op.alter_column(
            table,
            column,
            type_=sa.String(length=after),
            existing_type=sa.String(length=before),
            existing_nullable=False,
        )


def downgrade() -> None:
    bind = op.get_bind()
    # Without the column, reads by pseudonym would pass for reads by NHS number: refuse.
    by_pseudonym = bind.execute(
        sa.text("SELECT count(*) FROM access_log WHERE identifier_kind = 'pseudonym'")
    ).scalar_one()
    if by_pseudonym:
        raise RuntimeError(
            f"{by_pseudonym} access records are reads by pseudonym; without revision 0004 "
            "they would read as reads by NHS number, so the audit trail keeps it"
        )
    if bind.dialect.name != "sqlite":
        # Narrowing would fail part way on the first long value: refuse first, with counts
        # only (the values are identifiers).
        too_long = {
            f"{table}.{column}": int(
                bind.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE length({column}) > {before}")
                ).scalar_one()
            )
            for table, column, before, _ in WIDENED
        }
        found = {name: n for name, n in too_long.items() if n}
        if found:
            listed = ", ".join(f"{name}: {n}" for name, n in found.items())
            raise RuntimeError(
                f"values longer than the old columns allow ({listed}); delete the pseudonymous "
                "runs (and, where identifiers are recorded, their access records) first"
            )
        for table, column, before, after in WIDENED:
            op.alter_column(
                table,
                column,
                type_=sa.String(length=before),
                existing_type=sa.String(length=after),
                existing_nullable=False,
            )
    op.drop_column("access_log", "identifier_kind")  # plain ALTER TABLE, as in upgrade
