"""Deleting a retired or failed run's rows: on PostgreSQL its own tables, dropped whole
(``partitions``); on SQLite, where runs share the tables, a run of consecutive ranks per
transaction, in the order the rows were staged.

Each SQLite transaction holds the database's one write lock, which the API's audit writes
wait for, so the chunks stay small (``RunRepository.PURGE_CHUNK_PEOPLE``). ``RunRepository``
checks that nothing reads the run before it calls this; ``floor`` calls it on its copy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Table, delete, func, select

from riskstrat.store import partitions
from riskstrat.store.schema import cohort_members, patient_scores


def purge_run_rows(conn: Connection, run_id: int, size: int, schema: str | None = None) -> int:
    """Delete run ``run_id``'s cohort members, then its people; returns the rows deleted. On
    PostgreSQL each is the run's own table, dropped whole (``partitions.drop``; ``schema``:
    the tables' schema, if not the connection's own); on SQLite ``size`` ranks go per
    transaction (``_purge_table``). The caller checks that nothing reads the run
    (``RunRepository.purge_rows``)."""
    if partitions.partitioned(conn, patient_scores, schema):
        return sum(
            partitions.drop(conn, table, run_id, schema)
            for table in (cohort_members, patient_scores)
        )
    return sum(
        _purge_table(conn, table, key, run_id, size)
        for table, key in ((cohort_members, cohort_members.c.intervention), (patient_scores, None))
    )


def _purge_table(
    conn: Connection, table: Table, key: Column[Any] | None, run_id: int, size: int
) -> int:
    """Delete ``run_id``'s rows of ``table``, ``size`` ranks per transaction within each value
    of ``key`` (a cohort: ranks count within it), in rank order: the order they were staged
    in, so each transaction's rows lie together in the table and in every index but the
    primary key's. In the primary key's order (the NHS numbers') the same rows took three
    times longer on SQLite: every chunk's rows were spread over the whole table. The
    last transaction takes any row left (none, unless ranks were edited by hand)."""
    groups: list[Any] = [None]
    if key is not None:
        groups = list(
            conn.execute(select(key).where(table.c.run_id == run_id).distinct()).scalars()
        )
        conn.rollback()
    deleted = 0
    for group in groups:
        where = [table.c.run_id == run_id] + ([] if key is None else [key == group])
        top = conn.execute(select(func.max(table.c.rank)).where(*where)).scalar_one()
        conn.rollback()
        for low in range(0, int(top or 0), size):
            with conn.begin():
                gone = conn.execute(
                    delete(table).where(*where, table.c.rank > low, table.c.rank <= low + size)
                ).rowcount
            deleted += max(int(gone or 0), 0)
    with conn.begin():
        gone = conn.execute(delete(table).where(table.c.run_id == run_id)).rowcount
    return deleted + max(int(gone or 0), 0)
