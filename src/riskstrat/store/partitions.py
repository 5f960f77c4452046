"""PostgreSQL: each run's rows in partitions of their own, indexed once, dropped whole.

On PostgreSQL ``patient_scores`` and ``cohort_members`` are partitioned by run (``LIST
(run_id)``, migration 0009): every run's rows are a table of their own,
``<table>_run_<id>``, attached to the shared table, which readers query as before (the
planner reads only the run's partition). A run's rows are copied into a bare table (no key,
no index, not yet attached: nothing reads it); :func:`seal` then builds its primary key and
the shared table's indexes, each in one sorted pass, and attaches it, before the switch that
publishes the run. Adding the same rows to indexes that every run shares cost about three
times as long. Retiring a run drops its tables (:func:`drop`): no row-by-row delete.

SQLite has no partitions; its runs share the tables (``runs``).
"""

from __future__ import annotations

from sqlalchemy import Connection, Table

#: Memory each index build may sort in (PostgreSQL's default is 64 MB): a month's scores
#: sort in memory instead of in temporary files.
SEAL_SORT_MEMORY = "256MB"
#: How long dropping a run's table waits for its lock. Dropping a partition locks the shared
#: table for a moment; behind a long query (an analyst's report, say) the API's reads would
#: queue for as long as it runs. Past this the drop gives up, the run stays retired (nothing
#: reads it) and the next run's start drops it (``RunRepository.purge_leftovers``).
DROP_LOCK_TIMEOUT = "5s"


def partitioned(conn: Connection, table: Table, schema: str | None = None) -> bool:
    """True where ``table``'s runs are partitions of their own: on PostgreSQL from revision
    0009 on (a store at an earlier revision, on its way to be upgraded, shares the table)."""
    if conn.dialect.name != "postgresql":
        return False
    name = _qualified(table.name, schema)
    return _ask(
        conn, f"SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass('{name}')"
    )


def _ask(conn: Connection, query: str) -> bool:
    """A catalog question, leaving no transaction open that was not open before (the
    callers go on to transactions of their own)."""
    opened = not conn.in_transaction()
    answer = bool(conn.exec_driver_sql(query).scalar())
    if opened:
        conn.rollback()
    return answer


def partition_name(table: Table, run_id: int) -> str:
    """The name of run ``run_id``'s table of ``table``'s rows."""
    return f"{table.name}_run_{int(run_id)}"


def _qualified(name: str, schema: str | None) -> str:
    return f'"{name}"' if schema is None else f'"{schema}"."{name}"'


def create_bare(conn: Connection, table: Table, run_id: int, schema: str | None = None) -> str:
    """Make run ``run_id``'s bare table of ``table`` (its columns, defaults and NOT NULLs;
    no key, no index) unless it is there; returns its qualified name. Not committed."""
    name = _qualified(partition_name(table, run_id), schema)
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {name} "
        f"(LIKE {_qualified(table.name, schema)} INCLUDING DEFAULTS)"
    )
    return name


def exists(conn: Connection, table: Table, run_id: int, schema: str | None = None) -> bool:
    """True if run ``run_id`` has a table of ``table``'s rows, attached or not."""
    name = _qualified(partition_name(table, run_id), schema)
    return _ask(conn, f"SELECT to_regclass('{name}') IS NOT NULL")


def seal(conn: Connection, table: Table, run_id: int, schema: str | None = None) -> bool:
    """Index run ``run_id``'s bare table of ``table`` as the shared table is indexed and
    attach it as the run's partition, in one transaction (committed here). False if the run
    has no such table (it staged no rows of ``table``) or it is attached already.

    The primary key and each index are built in one sorted pass over the rows. A check
    that every row is the run's lets PostgreSQL attach the table without reading it again;
    the foreign key to ``score_runs`` is checked as the table is attached."""
    partition = partition_name(table, run_id)
    name = _qualified(partition, schema)
    with conn.begin():
        attached = conn.exec_driver_sql(
            f"SELECT relispartition FROM pg_class WHERE oid = to_regclass('{name}')"
        ).scalar()
        if attached is None or attached:
            return False
        conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{SEAL_SORT_MEMORY}'")
        key = ", ".join(c.name for c in table.primary_key.columns)
        conn.exec_driver_sql(
            f'ALTER TABLE {name} ADD CONSTRAINT "{partition}_pkey" PRIMARY KEY ({key})'
        )
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            columns = ", ".join(c.name for c in index.columns)
            conn.exec_driver_sql(f'CREATE INDEX "{index.name}_{int(run_id)}" ON {name} ({columns})')
        check = f'"{partition}_only"'
        conn.exec_driver_sql(
            f"ALTER TABLE {name} ADD CONSTRAINT {check} "
            f"CHECK (run_id IS NOT NULL AND run_id = {int(run_id)})"
        )
        conn.exec_driver_sql(
            f"ALTER TABLE {_qualified(table.name, schema)} ATTACH PARTITION {name} "
            f"FOR VALUES IN ({int(run_id)})"
        )
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {check}")
    # The planner's statistics for the new partition (a sample of its rows), for the API's
    # first queries of the month; autovacuum would take them later.
    conn.exec_driver_sql(f"ANALYZE {name}")
    conn.commit()
    return True


def drop(conn: Connection, table: Table, run_id: int, schema: str | None = None) -> int:
    """Drop run ``run_id``'s table of ``table``, attached or not, in one transaction
    (committed here); returns the rows it held (0 if there was none)."""
    name = _qualified(partition_name(table, run_id), schema)
    with conn.begin():
        if not exists(conn, table, run_id, schema):
            return 0
        rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
        conn.exec_driver_sql(f"DROP TABLE {name}")
    return rows
