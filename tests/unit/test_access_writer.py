"""The shared audit writer: records of concurrent reads are committed together, each caller's
future completes only once its own record is committed, and a failed batch fails everyone
in it and keeps nothing. Each record carries its patients; the per-patient index is filled
after the fact, and every query of the trail sees every committed record."""

from __future__ import annotations

import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.store import Store
from riskstrat.store import audit as store_module
from riskstrat.store.audit import access_record, pseudonymise
from riskstrat.store.schema import access_log, access_patients
from tests.support.postgres import serving_store

KEY = "test-pseudonym-key"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    yield from serving_store(request.param, tmp_path)


def _indexed_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(access_patients)).scalar_one())


def _record(actor: str, nhs: list[str]):
    return access_record(actor=actor, route="GET /test", nhs_numbers=nhs, key=KEY, role="pcn_team")


def test_concurrent_records_share_a_commit_and_all_land(store, monkeypatch):
    people = synthetic_nhs_numbers(np.random.default_rng(5), 2100)
    real = store_module._insert_access
    calls: list[int] = []
    first_started, release = threading.Event(), threading.Event()

    def slow_first(conn, records):
        calls.append(len(records))
        if len(calls) == 1:
            first_started.set()
            assert release.wait(10)
        real(conn, records)

    monkeypatch.setattr(store_module, "_insert_access", slow_first)
    first = store.audit.submit(_record("user-0", people[:100]))
    assert first_started.wait(10)
    # While the first batch holds the writer, 20 more requests queue up.
    futures = [store.audit.submit(_record(f"user-{i}", people[i * 100 : (i + 1) * 100]))
               for i in range(1, 21)]  # fmt: skip
    assert not any(f.done() for f in [first, *futures])  # nothing acknowledged before commit
    release.set()
    for f in [first, *futures]:
        f.result(timeout=10)
    assert calls == [1, 20]  # 21 reads, two transactions
    fresh = Store(store.url)  # another connection sees every record and every patient
    try:
        records = fresh.audit.records(limit=100)
        assert [r["actor"] for r in records] == [f"user-{i}" for i in range(21)]
        assert all(r["n_patients"] == 100 == len(r["patients"]) for r in records)
        one = pseudonymise(people[250], KEY)
        assert [r["actor"] for r in fresh.audit.records(patient=one)] == ["user-2"]
    finally:
        fresh.dispose()


def test_a_failed_batch_fails_every_caller_and_keeps_nothing(store, monkeypatch):
    people = synthetic_nhs_numbers(np.random.default_rng(6), 20)
    real = store_module._insert_access
    state = {"fail": True}

    def flaky(conn, records):
        real(conn, records)  # written, then the transaction fails before commit
        if state["fail"]:
            raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(store_module, "_insert_access", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        store.audit.submit(_record("a", people[:10])).result(timeout=10)
    assert store.audit.records() == []
    state["fail"] = False  # the writer carries on with the next batch
    store.audit.submit(_record("b", people[10:])).result(timeout=10)
    assert [r["actor"] for r in store.audit.records()] == ["b"]


def test_many_threads_every_record_committed_once(store):
    people = synthetic_nhs_numbers(np.random.default_rng(7), 400)

    def read(i: int) -> None:
        store.audit.submit(_record(f"t{i}", people[i * 2 : i * 2 + 2])).result(timeout=20)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(200)))
    records = store.audit.records(limit=1000)
    assert sorted(r["actor"] for r in records) == sorted(f"t{i}" for i in range(200))
    assert sum(len(r["patients"]) for r in records) == 400


def test_dispose_commits_what_is_queued(store):
    people = synthetic_nhs_numbers(np.random.default_rng(8), 3)
    future = store.audit.submit(_record("last", people))
    store.dispose()
    future.result(timeout=10)
    fresh = Store(store.url)
    try:
        assert [r["actor"] for r in fresh.audit.records()] == ["last"]
    finally:
        fresh.dispose()


def test_a_read_commits_its_patients_with_its_record_and_queries_see_them(store):
    people = synthetic_nhs_numbers(np.random.default_rng(9), 300)
    store.audit.submit(_record("first", people[:100])).result(timeout=10)
    # Committed whole: the record holds its hundred patients; none is indexed yet.
    with store.engine.connect() as conn:
        row = conn.execute(select(access_log.c.patients, access_log.c.patients_pending)).one()
    assert sorted(row.patients.split()) == sorted(pseudonymise(n, KEY) for n in people[:100])
    assert row.patients_pending
    assert _indexed_rows(store) == 0
    # Listing the trail reads the patients from the record; only a patient query needs the
    # per-patient index.
    [listed] = store.audit.records()
    assert listed["patients"] == sorted(row.patients.split()) and _indexed_rows(store) == 0
    # A query indexes what is pending first, so it misses nothing committed.
    assert [r["actor"] for r in store.audit.records(patient=pseudonymise(people[7], KEY))] == [
        "first"
    ]
    assert _indexed_rows(store) == 100
    store.audit.submit(_record("second", people[50:300])).result(timeout=10)
    both = pseudonymise(people[60], KEY)
    assert [r["actor"] for r in store.audit.records(patient=both)] == ["first", "second"]
    assert store.audit.records(patient=pseudonymise(people[299], KEY))[0]["patients"] == sorted(
        pseudonymise(n, KEY) for n in people[50:300]
    )
    assert _indexed_rows(store) == 350
    assert store.audit.index() == 0  # nothing left pending


def test_indexing_in_small_transactions_and_twice_over_loses_and_repeats_nothing(store):
    people = synthetic_nhs_numbers(np.random.default_rng(10), 50)
    for i in range(10):
        store.audit.record(_record(f"u{i}", people[i * 5 : i * 5 + 5]))
    with store.engine.connect() as conn:
        rows = conn.execute(select(access_log.c.id, access_log.c.patients)).all()
    with store.engine.begin() as conn:  # as if a second catch-up had raced this one
        store_module._index_access_rows(conn, rows[:4])
    assert store.audit.index(records_per_transaction=3) == 6
    assert _indexed_rows(store) == 50
    for i, n in enumerate(people):
        assert [r["actor"] for r in store.audit.records(patient=pseudonymise(n, KEY))] == [
            f"u{i // 5}"
        ]


def test_a_store_upgraded_from_revision_0002_keeps_its_trail(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    config = Config()
    config.set_main_option(
        "script_location", str(Path(store_module.__file__).parent / "migrations")
    )
    with old.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    people = synthetic_nhs_numbers(np.random.default_rng(11), 4)
    earlier = [pseudonymise(n, KEY) for n in people[:2]]
    with old.engine.begin() as conn:  # a record as revision 0002 wrote it
        conn.exec_driver_sql(
            "INSERT INTO access_log (id, at, actor, route, n_patients) "
            "VALUES (1, '2026-11-30 09:00:00', 'before', 'GET /old', 2)"
        )
        conn.exec_driver_sql(
            "INSERT INTO access_patients (patient, access_id) VALUES (?, 1), (?, 1)", tuple(earlier)
        )
    old.dispose()
    store = Store(url)
    try:
        store.create_schema()
        store.audit.record(_record("after", people[1:]))
        assert [r["actor"] for r in store.audit.records(patient=earlier[1])] == ["before", "after"]
        assert store.audit.records(patient=earlier[0])[0]["patients"] == sorted(earlier)
        assert [r["actor"] for r in store.audit.records(patient=pseudonymise(people[3], KEY))] == [
            "after"
        ]
        # Downgrading would drop the column that holds pending patients: refused until indexed.
        store.audit.record(_record("pending", people[3:]))
        with store.engine.begin() as conn, pytest.raises(RuntimeError, match="1 access records"):
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        store.audit.index()
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        assert _indexed_rows(store) == 2 + 3 + 1
    finally:
        store.dispose()


def test_pseudonyms_are_the_keyed_hmac_and_stay_the_same_across_versions():
    people = synthetic_nhs_numbers(np.random.default_rng(12), 50)
    for key in (KEY, "another-deployment-key"):
        for n in people:
            expected = hmac.new(key.encode(), n.encode(), "sha256").hexdigest()[:32]
            assert pseudonymise(n, key) == expected
    assert pseudonymise(people[0], KEY) != pseudonymise(people[0], "another-deployment-key")
    # A trail written by an earlier version must stay searchable: the value is pinned.
    assert pseudonymise("9990000018", KEY) == "3eb4570168967ff04cfda4b4ae09e1eb"


def test_a_record_reads_back_as_written_and_filters_by_time(store):
    from datetime import timedelta

    people = synthetic_nhs_numbers(np.random.default_rng(13), 2)
    record = access_record(
        actor="who", route="GET /x", nhs_numbers=people, key=KEY, role="analyst",
        organisations=["U12345"], purpose="MDT", request_id="req-1",
    )  # fmt: skip
    store.audit.record(record)
    [back] = store.audit.records()
    assert back["at"] == record.at and back["at"].utcoffset() == timedelta(0)
    assert (back["actor"], back["role"], back["route"]) == ("who", "analyst", "GET /x")
    assert back["organisations"] == ["U12345"] and back["n_patients"] == 2
    assert (back["purpose"], back["request_id"]) == ("MDT", "req-1")
    second = timedelta(seconds=1)
    assert len(store.audit.records(since=record.at - second, until=record.at + second)) == 1
    assert store.audit.records(since=record.at + second) == []
    assert store.audit.records(until=record.at) == []
