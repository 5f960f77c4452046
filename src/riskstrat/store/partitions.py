"""PostgreSQL: each run's rows in partitions of their own, indexed once, dropped whole.

On PostgreSQL ``patient_scores`` and ``cohort_members`` are partitioned by run (``LIST
(run_id)``, migration 0009): every run's rows are a table of their own,
``<table>_run_<id>``, attached to the shared table, which readers query as before (the
planner reads only the run's partition). A run's rows are copied into a bare table (no key,
no index, not yet attached: nothing reads it); :func:`seal` then builds its primary key and
the shared table's indexes, each in one sorted pass (two at once), and attaches it, before
the switch that publishes the run. Adding the same rows to indexes that every run shares
cost about three times as long. Retiring a run drops its tables (:func:`drop`): no row by
row delete.

SQLite has no partitions; its runs share the tables (``runs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Connection, Engine, Table

#: Memory each index build may sort in (PostgreSQL's default is 64 MB): a month's scores
#: sort in memory instead of in temporary files.
SEAL_SORT_MEMORY = "256MB"
#: Connections building a run's keys and indexes at once. Each build is one process on the
#: server sorting one column set; two at once kept both cores of the benchmark's machine
#: busy (docs/benchmarks.md), where one at a time left one idle for most of the seal.
SEAL_STREAMS = 2
#: How long dropping a run's table waits for its lock. Dropping a partition locks the shared
#: table for a moment; behind a long query (an analyst's report, say) the API's reads would
#: queue for as long as it runs. Past this the drop gives up, the run stays retired (nothing
#: reads it) and the next run's start drops it (``RunRepository.purge_leftovers``).
DROP_LOCK_TIMEOUT = "5s"
#: The statistics target a run's new table is analysed with (PostgreSQL samples 300 rows per
#: unit: 3,000 rows; its default of 100 samples 30,000). The API's queries of a run's rows
#: (by rank, by PCN or practice and rank, one person) take the same plans either way; the
#: smaller sample took a month's scores' statistics in 0.13-0.16 s instead of 0.7-1.8 s.
STATISTICS_TARGET = 10


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
    """Make run ``run_id``'s bare table of ``table`` (its columns, defaults and NOT NULLs, and
    a check that every row is the run's; no key, no index) unless it is there; returns its
    qualified name. Not committed.

    The check is tested on each row as it arrives, so :func:`seal` attaches the table
    without reading it again to prove its rows belong (adding the check at the end read
    the whole table: about 0.9 s of a month's scores)."""
    partition = partition_name(table, run_id)
    name = _qualified(partition, schema)
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {name} "
        f"(LIKE {_qualified(table.name, schema)} INCLUDING DEFAULTS, "
        f"CONSTRAINT {_only(partition)} {_only_check(run_id)})"
    )
    return name


def _only(partition: str) -> str:
    """The name of the check that every row of ``partition`` is its run's."""
    return f'"{partition}_only"'


def _only_check(run_id: int) -> str:
    return f"CHECK (run_id IS NOT NULL AND run_id = {int(run_id)})"


def exists(conn: Connection, table: Table, run_id: int, schema: str | None = None) -> bool:
    """True if run ``run_id`` has a table of ``table``'s rows, attached or not."""
    name = _qualified(partition_name(table, run_id), schema)
    return _ask(conn, f"SELECT to_regclass('{name}') IS NOT NULL")


def seal(
    engine: Engine,
    tables: Sequence[Table],
    run_id: int,
    schema: str | None = None,
    *,
    streams: int = SEAL_STREAMS,
) -> None:
    """Index run ``run_id``'s bare tables of ``tables`` as the shared tables are indexed and
    attach each as the run's partition. A table the run has none of (it staged no such rows)
    or one attached already is left as it is.

    Every key and index is built in one sorted pass over the rows, each in a transaction of
    its own, on ``streams`` connections at once (building indexes of one table together is
    allowed: each only reads it). Then each table, as soon as its own are built, in one
    transaction: its primary key (the unique index built), the attaching (the check that
    every row is the run's, made with the table, spares PostgreSQL reading it again for
    that; the foreign key to ``score_runs`` is checked then) and the check dropped; then
    its statistics. A seal stopped part way is finished by the next (``publish`` seals a run
    not yet sealed): what was built is kept."""
    with engine.connect() as conn:
        bare = [t for t in tables if _unattached(conn, t, run_id, schema)]

    def build(sql: str) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{SEAL_SORT_MEMORY}'")
            conn.exec_driver_sql(sql)

    with ThreadPoolExecutor(max_workers=max(1, streams)) as pool:
        builds = {
            t.name: [pool.submit(build, sql) for sql in _index_builds(t, run_id, schema)]
            for t in bare
        }
        try:
            # Each table is attached as soon as its own indexes are built, while the
            # connections go on to the next table's.
            with engine.connect() as conn:
                for table in bare:
                    for done in builds[table.name]:
                        done.result()
                    _attach(conn, table, run_id, schema)
        except BaseException:
            for pending in (f for table_builds in builds.values() for f in table_builds):
                pending.cancel()  # those not begun are not begun; the others finish first
            raise


def _unattached(conn: Connection, table: Table, run_id: int, schema: str | None) -> bool:
    """True if run ``run_id`` has a table of ``table``'s rows not yet attached."""
    name = _qualified(partition_name(table, run_id), schema)
    attached = conn.exec_driver_sql(
        f"SELECT relispartition FROM pg_class WHERE oid = to_regclass('{name}')"
    ).scalar()
    conn.rollback()
    return attached is not None and not attached


def _index_builds(table: Table, run_id: int, schema: str | None) -> list[str]:
    """The statements building run ``run_id``'s table's key (a unique index, made the primary
    key by ``_attach``) and the shared table's indexes, each unless it is there."""
    partition = partition_name(table, run_id)
    name = _qualified(partition, schema)
    key = ", ".join(c.name for c in table.primary_key.columns)
    builds = [f'CREATE UNIQUE INDEX IF NOT EXISTS "{partition}_pkey" ON {name} ({key})']
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        columns = ", ".join(c.name for c in index.columns)
        builds.append(
            f'CREATE INDEX IF NOT EXISTS "{index.name}_{int(run_id)}" ON {name} ({columns})'
        )
    return builds


def _attach(conn: Connection, table: Table, run_id: int, schema: str | None) -> None:
    """Make run ``run_id``'s indexed table of ``table`` its partition, in one transaction,
    then take its statistics (committed here)."""
    partition = partition_name(table, run_id)
    name = _qualified(partition, schema)
    with conn.begin():
        conn.exec_driver_sql(
            f'ALTER TABLE {name} ADD CONSTRAINT "{partition}_pkey" '
            f'PRIMARY KEY USING INDEX "{partition}_pkey"'
        )
        if not _ask(
            conn,
            f"SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass('{name}') "
            f"AND conname = '{partition}_only'",
        ):
            # a bare table made without its check (by a riskstrat before it had one): the
            # check reads the table once, so that attaching it need not
            conn.exec_driver_sql(
                f"ALTER TABLE {name} ADD CONSTRAINT {_only(partition)} {_only_check(run_id)}"
            )
        conn.exec_driver_sql(
            f"ALTER TABLE {_qualified(table.name, schema)} ATTACH PARTITION {name} "
            f"FOR VALUES IN ({int(run_id)})"
        )
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {_only(partition)}")
    # The planner's statistics for the new partition, for the API's first queries of the
    # month, from a sample of STATISTICS_TARGET * 300 rows (this ANALYZE is the one they get:
    # it resets the count of changes that would have sent autovacuum to take them).
    with conn.begin():
        conn.exec_driver_sql(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}")
        conn.exec_driver_sql(f"ANALYZE {name}")


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
