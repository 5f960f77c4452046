"""The shared audit writer: records of concurrent reads are committed together, each caller's
future completes only once its own record is committed, and a failed batch fails everyone
in it and keeps nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from riskstrat import store as store_module
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.store import Store, access_record, pseudonymise

KEY = "test-pseudonym-key"


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    s.create_schema()
    yield s
    s.dispose()


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
    first = store.submit_access(_record("user-0", people[:100]))
    assert first_started.wait(10)
    # While the first batch holds the writer, 20 more requests queue up.
    futures = [store.submit_access(_record(f"user-{i}", people[i * 100 : (i + 1) * 100]))
               for i in range(1, 21)]  # fmt: skip
    assert not any(f.done() for f in [first, *futures])  # nothing acknowledged before commit
    release.set()
    for f in [first, *futures]:
        f.result(timeout=10)
    assert calls == [1, 20]  # 21 reads, two transactions
    fresh = Store(store.url)  # another connection sees every record and every patient
    try:
        records = fresh.access_records(limit=100)
        assert [r["actor"] for r in records] == [f"user-{i}" for i in range(21)]
        assert all(r["n_patients"] == 100 == len(r["patients"]) for r in records)
        one = pseudonymise(people[250], KEY)
        assert [r["actor"] for r in fresh.access_records(patient=one)] == ["user-2"]
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
        store.submit_access(_record("a", people[:10])).result(timeout=10)
    assert store.access_records() == []
    state["fail"] = False  # the writer carries on with the next batch
    store.submit_access(_record("b", people[10:])).result(timeout=10)
    assert [r["actor"] for r in store.access_records()] == ["b"]


def test_many_threads_every_record_committed_once(store):
    people = synthetic_nhs_numbers(np.random.default_rng(7), 400)

    def read(i: int) -> None:
        store.submit_access(_record(f"t{i}", people[i * 2 : i * 2 + 2])).result(timeout=20)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(200)))
    records = store.access_records(limit=1000)
    assert sorted(r["actor"] for r in records) == sorted(f"t{i}" for i in range(200))
    assert sum(len(r["patients"]) for r in records) == 400


def test_dispose_commits_what_is_queued(store):
    people = synthetic_nhs_numbers(np.random.default_rng(8), 3)
    future = store.submit_access(_record("last", people))
    store.dispose()
    future.result(timeout=10)
    fresh = Store(store.url)
    try:
        assert [r["actor"] for r in fresh.access_records()] == ["last"]
    finally:
        fresh.dispose()
