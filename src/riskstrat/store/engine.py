"""The serving database's engine: how it is opened (SQLite's pragmas), created and upgraded
(Alembic migrations), and the few driver details the repositories share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url

from riskstrat.errors import StoreError

#: Alembic's scripts (``env.py`` and ``versions/``).
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreSchemaError(StoreError):
    """The database holds tables from another version of riskstrat."""

    default_hint = (
        "riskstrat cannot upgrade tables made before migrations: point RISKSTRAT_DATABASE_URL "
        "at a new database (its tables are made on first use), or delete the local one "
        "(`make clean` removes the demo's)"
    )


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite, with the folder made and the pragmas the store needs.

    ``hide_parameters``: a statement's values (NHS numbers among them) never appear in the
    text of an error or a log line, whoever prints it.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers keep reading while a run publishes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            # In WAL mode NORMAL still makes every commit atomic and durable across process
            # crashes and restarts; only a power cut can lose the last commits, and FULL costs
            # an fsync per request. The production store is PostgreSQL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def create_schema(engine: Engine) -> None:
    """Create the tables, or upgrade them, with the migrations (Alembic).

    Raises:
        StoreSchemaError: the database holds riskstrat tables made before migrations.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    existing = set(inspect(engine).get_table_names())
    if "score_runs" in existing and "alembic_version" not in existing:
        raise StoreSchemaError(
            "the serving store was made by an earlier riskstrat, before migrations"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def ping(engine: Engine) -> bool:
    """True if the database answers (raises if it does not)."""
    with engine.connect() as conn:
        conn.execute(select(1))
    return True


def mark(bind: Any) -> str:
    """The driver's placeholder for plain SQL (``bind``: an engine or a connection)."""
    return "?" if bind.dialect.paramstyle == "qmark" else "%s"


def db_time(value: datetime, conn: Any) -> Any:
    """A UTC time for the driver's own executemany: on SQLite, the text SQLAlchemy's DateTime
    writes there (so comparisons and reading back agree); elsewhere the datetime itself."""
    if conn.dialect.name == "sqlite":
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def backend_name(url: str) -> str:
    """The database a URL names, in a word: ``sqlite`` or ``postgresql``."""
    return make_url(url).get_backend_name()


@contextmanager
def temporary_schema(server: str) -> Iterator[str]:
    """A new, empty PostgreSQL schema on ``server`` for the length of the block: yields a
    URL whose default schema it is, and drops the schema and all in it afterwards (the
    benchmark publishes a run there).

    Raises:
        StoreError: the server cannot be reached.
    """
    schema = f"riskstrat_bench_{os.getpid()}"
    admin = create_engine(server, hide_parameters=True)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        raise StoreError(
            f"could not make a schema on the PostgreSQL server ({type(exc).__name__})",
            hint="start the server, or name another",
        ) from exc
    try:
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
