"""patient_scores and cohort_members: on PostgreSQL, a partition per run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A month's run was added to indexes that every stored run shares, and deleted again row by
row when it was replaced or left the retention window. On PostgreSQL both tables are now
partitioned by run (``LIST (run_id)``): each run's rows are a table of their own, indexed
once after they are copied in and attached before the run is published, and dropped whole
when it is retired (``riskstrat.store.partitions``). Readers query the shared tables as
before. The rows stored before this revision move into one partition per run, with the same
names, keys and indexes on the shared tables (about 11 s per stored month at 909,091
people, on 2 cores). SQLite has no partitions: nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The tables as revision 0008 left them: primary key, indexes (name, columns).
_TABLES = {
    "patient_scores": (
        "run_id, nhs_number",
        {
            "ix_patient_scores_run_rank": "run_id, rank",
            "ix_patient_scores_run_pcn_rank": "run_id, pcn_code, rank",
            "ix_patient_scores_run_practice_rank": "run_id, practice_code, rank",
        },
    ),
    "cohort_members": (
        "run_id, intervention, nhs_number",
        {
            "ix_cohort_members_run_int_rank": "run_id, intervention, rank",
            "ix_cohort_members_run_int_pcn_rank": "run_id, intervention, pcn_code, rank",
            "ix_cohort_members_run_int_practice_rank": "run_id, intervention, practice_code, rank",
            "ix_cohort_members_run_nhs": "run_id, nhs_number",
        },
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (key, indexes) in _TABLES.items():
        old = _set_aside(table, key, indexes)
        op.execute(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY LIST (run_id)"
        )
        _keys_and_indexes(table, key, indexes)
        op.execute("SET LOCAL maintenance_work_mem = '256MB'")
        runs = op.get_bind().exec_driver_sql(f"SELECT DISTINCT run_id FROM {old}").scalars()
        for run_id in sorted(int(r) for r in runs):
            _move_run(table, old, key, indexes, run_id)
        op.execute(f"DROP TABLE {old}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (key, indexes) in _TABLES.items():
        old = _set_aside(table, key, indexes)
        op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
        op.execute(f"DROP TABLE {old}")  # and its partitions
        _keys_and_indexes(table, key, indexes)


def _move_run(table: str, old: str, key: str, indexes: dict[str, str], run_id: int) -> None:
    """Copy run ``run_id``'s rows of ``old`` into a table of their own, key and index it in
    one pass each, and attach it as the run's partition of ``table``: as a run is staged
    (``riskstrat.store.partitions``, which this copies so that the revision stays as it
    is), 2-3 times faster than adding the rows to an attached partition's indexes."""
    part = f"{table}_run_{run_id}"
    op.execute(f"CREATE TABLE {part} (LIKE {old} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {part} SELECT * FROM {old} WHERE run_id = {run_id}")
    op.execute(f"ALTER TABLE {part} ADD CONSTRAINT {part}_pkey PRIMARY KEY ({key})")
    for name, columns in indexes.items():
        op.execute(f"CREATE INDEX {name}_{run_id} ON {part} ({columns})")
    op.execute(f"ALTER TABLE {part} ADD CONSTRAINT {part}_only CHECK (run_id = {run_id})")
    op.execute(f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES IN ({run_id})")
    op.execute(f"ALTER TABLE {part} DROP CONSTRAINT {part}_only")


def _set_aside(table: str, key: str, indexes: dict[str, str]) -> str:
    """Rename ``table``, its key, foreign key and indexes out of the way; returns its new
    name."""
    old = f"{table}_0008"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey")
    op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_run_id_fkey TO {old}_run_id_fkey")
    for name in indexes:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_0008")
    return old


def _keys_and_indexes(table: str, key: str, indexes: dict[str, str]) -> None:
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
    op.execute(
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_run_id_fkey FOREIGN KEY (run_id) "
        "REFERENCES score_runs (id) ON DELETE CASCADE"
    )
    for name, columns in indexes.items():
        op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
