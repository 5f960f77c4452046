"""PostgreSQL for tests: the server on this machine (127.0.0.1:5432, database ``test``).

Each test gets its own schema, dropped afterwards. Where no server answers, PostgreSQL tests
are skipped with the reason, unless ``RISKSTRAT_REQUIRE_POSTGRES=1`` (CI sets it), when they
fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from riskstrat.store import Store

SERVER = os.environ.get("RISKSTRAT_TEST_POSTGRES", "postgres@127.0.0.1:5432/test")


def _connect():  # type: ignore[no-untyped-def]
    import psycopg

    user_host, dbname = SERVER.rsplit("/", 1)
    user, hostport = user_host.split("@")
    host, port = hostport.split(":")
    return psycopg.connect(
        host=host, port=int(port), user=user, dbname=dbname, connect_timeout=3, autocommit=True
    )


def connect_or_skip():  # type: ignore[no-untyped-def]
    """A connection to the test server; without one, skip (or fail where CI requires it)."""
    try:
        return _connect()
    except Exception as exc:
        reason = f"no PostgreSQL at {SERVER} ({type(exc).__name__}: {exc})"
        if os.environ.get("RISKSTRAT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and RISKSTRAT_REQUIRE_POSTGRES=1")
        pytest.skip(f"{reason}; set RISKSTRAT_TEST_POSTGRES=user@host:port/db to use another")


def postgres_url() -> Iterator[str]:
    """Yield a SQLAlchemy URL whose default schema is new and empty; drop it afterwards."""
    con = connect_or_skip()
    schema = f"rs_test_{uuid.uuid4().hex[:12]}"
    con.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            f"postgresql+psycopg://{SERVER.split('/')[0]}/{SERVER.rsplit('/', 1)[1]}"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        con.execute(f'DROP SCHEMA "{schema}" CASCADE')
        con.close()


def serving_store(kind: str, folder: Path) -> Iterator[Store]:
    """A new serving store with its schema, on SQLite in ``folder`` or on PostgreSQL (a new
    schema, dropped afterwards); for fixtures parametrised over both."""
    from riskstrat.store import Store

    urls = postgres_url() if kind == "postgresql" else None
    url = next(urls) if urls is not None else f"sqlite:///{folder / 'serving.db'}"
    store = Store(url)
    store.create_schema()
    try:
        yield store
    finally:
        store.dispose()
        if urls is not None:
            next(urls, None)


@pytest.fixture(
    name="url", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A serving store's URL, once on SQLite and once on PostgreSQL (a schema of its own,
    dropped afterwards): import it into a test module to use it as ``url``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serving.db'}"
        return
    urls = postgres_url()
    yield next(urls)
    next(urls, None)
