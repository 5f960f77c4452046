"""The database's own copy of a run's rows (what ``riskstrat bench`` sets beside the stage):
the run's rows written into empty tables shaped as the store's, then dropped."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from riskstrat.store import Store, floor
from riskstrat.store.floor import copy_run
from tests.support.postgres import serving_store
from tests.support.runs import make_run, publish_run

NOV = date(2026, 11, 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> Store:
    yield from serving_store(request.param, tmp_path)


def publish(store: Store, n: int, seed: int) -> int:
    return publish_run(store, NOV, *make_run(n, seed))


def counts(store: Store) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("score_runs", "patient_scores", "cohort_members")
        )


def test_the_copy_writes_one_runs_rows_and_leaves_nothing_behind(store, tmp_path):
    publish(store, 120, 1)
    run_id = publish(store, 300, 2)  # the same month again: the first is superseded
    before = counts(store)
    tables_before = sorted(inspect(store.engine).get_table_names())
    files_before = sorted(p.name for p in tmp_path.iterdir())

    copied = copy_run(store.engine, run_id)

    assert (copied.people, copied.members) == (300, 150)  # that run's rows, no other's
    assert copied.scores_seconds > 0 and copied.cohorts_seconds > 0
    # then deleted from the copy as a prune deletes a month, and only from the copy
    assert copied.purge_seconds > 0
    assert counts(store) == before  # the store itself untouched
    assert sorted(inspect(store.engine).get_table_names()) == tables_before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no copy left
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"),
                {"name": f"riskstrat_floor_{os.getpid()}"},
            ).scalar_one()
        assert left == 0
    store.dispose()


def test_the_copy_has_the_stores_indexes_and_keys(store, monkeypatch):
    """The copy is as indexed and keyed as the store the staging writes to: otherwise it
    would set a floor the staging could never reach."""
    run_id = publish(store, 50, 3)
    seen = {}
    real_copy = floor._copy

    def looking(conn, copy, run):
        found = real_copy(conn, copy, run)
        for table in ("patient_scores", "cohort_members"):  # the copy's purge emptied it
            seen[f"{table} rows left"] = conn.exec_driver_sql(
                f'SELECT count(*) FROM "{copy}"."{table}"'
            ).scalar_one()
        look = inspect(conn)
        for table in ("patient_scores", "cohort_members"):
            seen[table] = (
                sorted(tuple(i["column_names"]) for i in look.get_indexes(table, schema=copy)),
                look.get_pk_constraint(table, schema=copy)["constrained_columns"],
                [f["referred_table"] for f in look.get_foreign_keys(table, schema=copy)],
            )
        return found

    monkeypatch.setattr(floor, "_copy", looking)
    copy_run(store.engine, run_id)
    look = inspect(store.engine)
    for table in ("patient_scores", "cohort_members"):
        assert len(seen[table][0]) >= 3
        assert seen[table] == (
            sorted(tuple(i["column_names"]) for i in look.get_indexes(table)),
            look.get_pk_constraint(table)["constrained_columns"],
            [f["referred_table"] for f in look.get_foreign_keys(table)],
        )
        assert seen[f"{table} rows left"] == 0
    store.dispose()


def test_a_copy_left_by_a_killed_process_is_cleared_first(store, tmp_path):
    run_id = publish(store, 40, 4)
    name = f"riskstrat_floor_{os.getpid()}"
    if store.engine.dialect.name == "sqlite":
        left = Path(f"{store.engine.url.database}.{name}")
        left.write_bytes(b"half a copy, not a database")  # killed while writing it
    else:
        with store.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
            conn.execute(text(f'CREATE TABLE "{name}".patient_scores (x integer)'))
    try:
        assert copy_run(store.engine, run_id).people == 40
        if store.engine.dialect.name == "sqlite":
            assert not left.exists()
    finally:  # a failing copy must not leave the schema in the shared test database
        if store.engine.dialect.name == "postgresql":
            with store.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        store.dispose()


def test_a_store_in_memory_has_no_copy_beside_it():
    store = Store("sqlite://")
    with pytest.raises(ValueError, match="kept in a file"):
        copy_run(store.engine, 1)
    store.dispose()
