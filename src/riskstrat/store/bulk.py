"""PostgreSQL's bulk path: Arrow rows into a table by binary COPY (ADBC's PostgreSQL driver).

A monthly run stages its people and cohort members by ``COPY ... FROM STDIN``. The rows go
as Arrow tables, which the driver writes in PostgreSQL's binary COPY format: nothing is
formatted as text on the way and nothing is parsed on arrival, where CSV cost the server
most of the copy (a month at 909,091 people: 3.2-3.8 s against 5.8-6.4 s as CSV,
docs/benchmarks.md). Binary values must be exactly the column's type, so each column is
cast to the width the table declares (``arrow_for``).

The driver's errors quote rows after their first line, as psycopg's do (PostgreSQL's
DETAIL: a failing row, a duplicate key); ``errors.failure_message`` keeps the first line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import pyarrow as pa
from sqlalchemy import BigInteger, Engine, Float, Integer, SmallInteger, Table
from sqlalchemy.engine import URL

#: The Arrow type PostgreSQL's binary format takes for each kind of column that is not text.
_WIDTHS: tuple[tuple[type, pa.DataType], ...] = (
    (SmallInteger, pa.int16()),
    (BigInteger, pa.int64()),
    (Integer, pa.int32()),
    (Float, pa.float64()),
)


def libpq_uri(url: URL) -> str:
    """``url`` (SQLAlchemy's, any PostgreSQL driver) as the libpq URI the driver connects
    with: its query parameters (``options``, ``sslmode``, ...) are libpq's own already."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def arrow_for(table: Table, rows: pa.Table) -> pa.Table:
    """``rows`` with each column of ``table`` cast to the Arrow type of its declared width
    (an ``integer`` column's numbers as 32-bit, ``double precision`` as 64-bit), which the
    binary format needs; text, JSON and the rest as they are. A value that does not fit its
    column's width raises ``pyarrow.ArrowInvalid`` (never wraps)."""
    columns = []
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        kind = table.c[name].type
        for sql_type, arrow_type in _WIDTHS:
            if isinstance(kind, sql_type):
                if column.type != arrow_type:
                    column = column.cast(arrow_type)
                break
        columns.append(column)
    return pa.table(columns, names=rows.column_names)


def copy_rows(
    engine: Engine,
    table: Table,
    parts: Sequence[Callable[[], pa.Table]],
    *,
    into: str,
    schema: str | None = None,
    streams: int = 2,
) -> None:
    """Copy the rows each of ``parts`` makes (Arrow tables with ``table``'s columns) into the
    table named ``into`` (``table`` itself, or a table shaped as it), on ``streams``
    connections at once: each makes and copies every ``streams``-th part in turn, in one
    transaction, committed once all its parts are in. At the first failure the streams stop
    before their next part and commit nothing more; the failure is raised once all stopped.
    """
    if not parts:
        return
    from adbc_driver_postgresql import dbapi  # the driver loads its libpq: on first use

    uri = libpq_uri(engine.url)
    stop = threading.Event()

    def stream(share: Sequence[Callable[[], pa.Table]]) -> None:
        # The stream's transaction is begun and ended by statement: the driver's own
        # transactions begin one more within each copy, which the server warns of in its log.
        with dbapi.connect(uri, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute("BEGIN")
            for make in share:
                if stop.is_set():
                    cursor.execute("ROLLBACK")
                    return
                cursor.adbc_ingest(
                    into, arrow_for(table, make()), mode="append", db_schema_name=schema
                )
            cursor.execute("COMMIT")

    count = max(1, min(streams, len(parts)))
    with ThreadPoolExecutor(max_workers=count) as pool:
        running = [pool.submit(stream, parts[i::count]) for i in range(count)]
        wait(running, return_when=FIRST_EXCEPTION)
        stop.set()  # all done, or one failed: the others stop before their next part
        wait(running)
    for future in running:
        error = future.exception()
        if error is not None:
            raise error
