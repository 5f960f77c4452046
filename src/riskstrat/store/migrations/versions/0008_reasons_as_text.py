"""patient_scores.reasons and .contributions: JSON kept as text

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

riskstrat writes these columns and reads them whole; nothing queries inside them. As
PostgreSQL ``json`` every value was parsed by the server as a month's run was copied in (a
quarter of the copy's time at 735,222 people). As ``text`` they hold the same characters.
SQLite keeps any value in any column, and its rows are already text: nothing to change there
(a table copy of every stored run would buy nothing).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = ("reasons", "contributions")


def upgrade() -> None:
    _retype("text")  # one rewrite of the table; the characters are kept as they are


def downgrade() -> None:
    _retype("json")


def _retype(kind: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE patient_scores "
        + ", ".join(f"ALTER COLUMN {c} TYPE {kind} USING {c}::{kind}" for c in _COLUMNS)
    )
