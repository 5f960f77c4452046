"""The database's own time to store a run's rows: the floor under staging them.

``copy_run`` makes an empty copy of the run tables beside the store (SQLite: a new file,
attached; PostgreSQL: a new schema), with the same indexes and keys, and copies one run's
rows into it by ``INSERT ... SELECT``: no client, no driver, no Python object between the
rows and the tables, a transaction per table. On PostgreSQL the rows go the way a run's
do (``partitions``): into the run's bare table, then its keys and indexes, then attached.
``riskstrat bench`` times this beside the monthly run's stage step, as it times DuckDB's own
copy of an extract beside the first sight (``data.reading.copy_as_found``). It then deletes
the copied run's rows as the prune after a monthly run deletes the month leaving the
retention window (``RunRepository.purge_rows``: SQLite's chunks, PostgreSQL's dropped
tables), and times that too. The copy is dropped afterwards.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Table

from riskstrat.store import partitions
from riskstrat.store.engine import mark
from riskstrat.store.purge import purge_run_rows
from riskstrat.store.runs import STAGE_CACHE_KIB, RunRepository
from riskstrat.store.schema import cohort_members, patient_scores, score_runs


@dataclass(frozen=True)
class RunCopy:
    """What ``copy_run`` measured: seconds per table, the rows it wrote, and the seconds
    deleting them again took, a chunk per transaction as a prune deletes a month."""

    scores_seconds: float
    cohorts_seconds: float
    people: int
    members: int
    purge_seconds: float


def copy_run(engine: Engine, run_id: int) -> RunCopy:
    """The seconds the database takes to write run ``run_id``'s people and its cohort
    members into empty tables shaped as the store's, with the rows it wrote. A copy left by
    a process killed part way (the same name) is cleared first."""
    copy = f"riskstrat_floor_{os.getpid()}"
    path: Path | None = None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            raise ValueError("the copy needs a SQLite store kept in a file")
        path = Path(f"{database}.{copy}")
    with engine.connect() as conn:
        if path is None:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{copy}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{copy}"')
        else:
            _remove(path)
            quoted = str(path).replace("'", "''")
            conn.exec_driver_sql(f"ATTACH DATABASE '{quoted}' AS {copy}")
        conn.commit()
        try:
            if path is not None:
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
                    conn.exec_driver_sql(f"PRAGMA {copy}.{pragma}")
                # the page cache the staging has (``runs``), so the two write alike
                conn.exec_driver_sql(f"PRAGMA {copy}.cache_size=-{STAGE_CACHE_KIB}")
                conn.commit()
            return _copy(conn, copy, run_id)
        finally:
            conn.rollback()
            if path is None:
                conn.exec_driver_sql(f'DROP SCHEMA "{copy}" CASCADE')
            else:
                conn.exec_driver_sql(f"DETACH DATABASE {copy}")
            conn.commit()
            if path is not None:
                _remove(path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _copy(conn: Connection, copy: str, run_id: int) -> RunCopy:
    tables = [score_runs, patient_scores, cohort_members]
    score_runs.metadata.create_all(
        conn.execution_options(schema_translate_map={None: copy}), tables=tables
    )
    conn.commit()
    conn.exec_driver_sql(
        _insert_select(conn, score_runs, f'"{copy}"."score_runs"', "id"), (run_id,)
    )
    conn.commit()
    seconds, rows = [], []
    for table in (patient_scores, cohort_members):
        started = time.perf_counter()
        # On PostgreSQL the store's own path: the run's bare table, then its keys and
        # indexes and the attaching (``partitions``); on SQLite the shared tables.
        partitioned = partitions.partitioned(conn, table, copy)
        into = (
            partitions.create_bare(conn, table, run_id, copy)
            if partitioned
            else f'"{copy}"."{table.name}"'
        )
        written = conn.exec_driver_sql(_insert_select(conn, table, into, "run_id"), (run_id,))
        conn.commit()
        if partitioned:
            partitions.seal(conn.engine, [table], run_id, copy)
        seconds.append(time.perf_counter() - started)
        rows.append(int(written.rowcount))
    copied = conn.execution_options(schema_translate_map={None: copy})
    started = time.perf_counter()
    deleted = purge_run_rows(copied, run_id, RunRepository.PURGE_CHUNK_PEOPLE, copy)
    purge_seconds = time.perf_counter() - started
    if deleted != sum(rows):
        raise RuntimeError(f"the copy's purge deleted {deleted} rows of {sum(rows)}")
    return RunCopy(seconds[0], seconds[1], rows[0], rows[1], purge_seconds)


def _insert_select(conn: Connection, table: Table, into: str, key: str) -> str:
    """Copy ``table``'s rows whose ``key`` is the parameter into the table ``into``."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    return (
        f"INSERT INTO {into} ({columns}) "
        f'SELECT {columns} FROM "{table.name}" WHERE "{key}" = {mark(conn)}'
    )
