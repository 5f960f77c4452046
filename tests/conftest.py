"""Fixtures shared across the test suite.

Builders that make data (extracts, OMOP CDMs, keys, published runs, model-card contexts)
live in ``tests/support/``; the fixtures here wrap them for tests. Test modules never import
from one another.

Markers (``pyproject.toml``): ``spark`` (a local Spark session, shared; also ``slow``), ``slow`` (a generated extract, a trained model, a browser, a
timed load; ``pytest -m "not slow"`` is the fast loop) and ``postgres`` (needs the server at
127.0.0.1:5432; skipped without it unless ``RISKSTRAT_REQUIRE_POSTGRES=1``). Every
``postgres`` test is also ``slow``: the fast loop needs no server, and ``make test`` runs the
PostgreSQL variants of every store test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from riskstrat.config import Settings, get_settings
from riskstrat.service.app import create_app
from tests.support.postgres import postgres_url
from tests.support.world import publish_world


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("postgres") or item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def spark(tmp_path_factory) -> Iterator[Any]:
    """One local Spark session for the whole run (Spark allows one per JVM, and starting
    one takes seconds): two cores, few shuffle partitions, stopped at the end."""
    from riskstrat.engines.spark import spark_session

    home = tmp_path_factory.mktemp("spark-home")
    settings = Settings(home=home, spark_master="local[2]", spark_shuffle_partitions=4)
    with spark_session(settings) as session:
        yield session


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Every test reads ``RISKSTRAT_*`` afresh: settings cached by one test (for example a
    RISKSTRAT_HOME set with monkeypatch) never leak into the next."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for a riskstrat home of this test's own (SQLite store, local MLflow)."""
    return Settings(home=tmp_path / "home")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings_on_each_store(request, tmp_path) -> Iterator[Settings]:
    """Settings whose serving store is SQLite, then a new PostgreSQL schema (dropped after)."""
    urls = postgres_url() if request.param == "postgresql" else None
    yield Settings(home=tmp_path / "home", database_url=next(urls) if urls else None)
    if urls is not None:
        next(urls, None)


def _serve(settings: Settings, identifier_kind: str = "nhs_number") -> Iterator[dict[str, Any]]:
    made = publish_world(settings, identifier_kind=identifier_kind)
    with TestClient(create_app(settings)) as client:
        yield {"client": client, **made}
    client.app.state.store.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def served(settings) -> Iterator[dict[str, Any]]:
    """A published run of 40 people in two PCNs (NHS numbers), a key per role for each PCN,
    and an HTTP client on the API: ``client``, ``settings``, ``scores``, ``run_id``."""
    yield from _serve(settings)


@pytest.fixture
def served_on_each_store(settings_on_each_store) -> Iterator[dict[str, Any]]:
    """``served``, on SQLite and on PostgreSQL."""
    yield from _serve(settings_on_each_store)


@pytest.fixture
def served_pseudonymous_on_each_store(settings_on_each_store) -> Iterator[dict[str, Any]]:
    """``served`` with people identified by pseudonyms, on SQLite and on PostgreSQL."""
    yield from _serve(settings_on_each_store, identifier_kind="pseudonym")
