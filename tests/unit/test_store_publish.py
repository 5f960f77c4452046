"""Publishing a run: staged, switched in one transaction, safe under failure and kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from riskstrat.store import RunInProgressError, Store, StoreSchemaError
from riskstrat.store.records import json_text
from riskstrat.store.runs import RunRepository
from tests.support.postgres import serving_store
from tests.support.runs import make_run
from tests.support.runs import publish_run as publish

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> Store:
    yield from serving_store(request.param, tmp_path)


def served(store: Store) -> tuple[int, int, int]:
    """What a reader sees: the latest run's id and its rows in each table."""
    run = store.runs.latest()
    assert run is not None
    total, _ = store.scores.page(run.id, limit=1)
    return run.id, total, len(store.cohorts.frame(run.id))


def test_publish_then_read(store):
    scores, cohorts = make_run(300, 1)
    run_id = publish(store, NOV, scores, cohorts)
    assert served(store) == (run_id, 300, 150)
    run = store.runs.latest()
    assert run.status == "published" and run.n_scored == 300 and run.details["note"] == "test"


def test_a_failure_while_staging_leaves_the_previous_run_served(store, monkeypatch):
    first = publish(store, NOV, *make_run(200, 1))
    scores, cohorts = make_run(400, 2)

    def broken(self, run_id, members, *, chunk_rows=10_000):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(RunRepository, "stage_cohorts", broken)
    with pytest.raises(OSError, match="injected"):
        publish(store, NOV, scores, cohorts)
    assert served(store) == (first, 200, 100)
    failed = store.runs.all()[-1]
    assert failed.status == "failed" and "disk full (injected)" in failed.error
    assert store.runs.row_counts(failed.id) == {"patient_scores": 0, "cohort_members": 0}


def test_a_chunk_the_database_refuses_stops_the_run_with_nothing_written_behind_it(store):
    """PostgreSQL stages chunks on several connections at once: when one is refused, the
    run fails only once every chunk under way has finished, so purging it leaves no row."""
    first = publish(store, NOV, *make_run(200, 1))
    scores, cohorts = make_run(400, 2)
    scores.loc[120, "nhs_number"] = scores.loc[10, "nhs_number"]  # the third chunk's
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        publish(store, NOV, scores, cohorts)
    assert served(store) == (first, 200, 100)
    failed = store.runs.all()[-1]
    assert failed.status == "failed"
    assert store.runs.row_counts(failed.id) == {"patient_scores": 0, "cohort_members": 0}
    # why, without the values the database quoted (PostgreSQL names the duplicate key)
    assert failed.error and scores.loc[10, "nhs_number"] not in failed.error


def test_a_failure_inside_the_switch_rolls_back(store):
    first = publish(store, NOV, *make_run(200, 1))
    scores, _ = make_run(120, 3)
    with pytest.raises(RuntimeError, match="expected 999"):
        run_id = store.runs.begin(
            month=NOV, extract_date=NOV, model_name="m", model_version="2",
            started_at=datetime.now(UTC),
        )  # fmt: skip
        store.runs.stage_scores(run_id, scores)
        store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=999)
    assert served(store) == (first, 200, 100)  # the old run was not retired


def test_rerunning_a_month_replaces_it_without_duplicates(store):
    scores, cohorts = make_run(250, 4)
    first = publish(store, NOV, scores, cohorts)
    second = publish(store, NOV, scores, cohorts)
    assert served(store) == (second, 250, 125)
    runs = {r.id: r.status for r in store.runs.all()}
    assert runs == {first: "superseded", second: "published"}
    assert store.runs.row_counts(first) == {"patient_scores": 0, "cohort_members": 0}
    a = store.scores.page(second, limit=1000)[1]
    assert [(p.nhs_number, p.risk, p.rank) for p in a] == [
        (n, r, k) for n, r, k in zip(scores.nhs_number, scores.risk, scores["rank"], strict=True)
    ]


def test_other_months_are_kept_and_previous_run_is_found(store):
    oct_id = publish(store, OCT, *make_run(50, 5))
    nov_id = publish(store, NOV, *make_run(60, 6))
    assert store.runs.latest().id == nov_id
    assert store.runs.previous(NOV).id == oct_id and store.runs.previous(OCT) is None
    assert store.runs.for_month(OCT).id == oct_id


def test_retention_prunes_old_months(store):
    ids = {m: publish(store, date(2026, m, 1), *make_run(20, m)) for m in range(5, 12)}
    store.runs.PURGE_CHUNK_PEOPLE = 15
    transactions = _transactions(store)
    removed = store.runs.prune(keep_months=3)
    assert sorted(removed) == sorted(ids[m] for m in (5, 6, 7, 8))
    # The old runs are retired in one transaction that deletes nothing; their rows then go
    # at most one chunk of people per transaction (two per run and table here: 15 + 5), or
    # on PostgreSQL one run's table per transaction, dropped whole.
    [retire] = [t for t in transactions if ("UPDATE", "score_runs") in {(v, n) for v, n, _ in t}]
    assert not any(verb in ("DELETE", "DROP") for verb, _, _ in retire)
    if _partitioned(store):
        drops = [t for t in transactions if any(verb == "DROP" for verb, _, _ in t)]
        assert all(len(t) == 1 for t in drops)
        assert sorted(t[0][1] for t in drops) == sorted(
            f"{table}_run_{ids[m]}" for m in (5, 6, 7, 8)
            for table in ("patient_scores", "cohort_members")
        )  # fmt: skip
        assert not any(
            verb == "DELETE" and name in ("patient_scores", "cohort_members")
            for t in transactions for verb, name, _ in t
        )  # fmt: skip
    else:
        chunks = [t for t in transactions if len(t) == 1 and t[0][1] == "patient_scores"]
        assert all(rows <= 15 for _, _, rows in (t[0] for t in chunks))
        assert sum(t[0][2] for t in chunks) == 4 * 20
    assert {r.month.month for r in store.runs.all()} == {9, 10, 11}
    assert store.runs.row_counts(ids[5]) == {"patient_scores": 0, "cohort_members": 0}
    with pytest.raises(ValueError):
        store.runs.prune(keep_months=0)


def test_a_live_staging_run_blocks_a_second_writer_for_the_month(store):
    store.runs.begin(
        month=NOV, extract_date=NOV, model_name="m", model_version="1",
        started_at=datetime.now(UTC),
    )  # fmt: skip
    with pytest.raises(RunInProgressError, match="still being written"):
        store.runs.begin(
            month=NOV, extract_date=NOV, model_name="m", model_version="1",
            started_at=datetime.now(UTC),
        )  # fmt: skip


def test_a_store_from_another_version_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE score_runs (id INTEGER PRIMARY KEY)")
    store = Store(f"sqlite:///{path}")
    with pytest.raises(StoreSchemaError, match="earlier riskstrat, before migrations"):
        store.create_schema()
    store.dispose()


WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, date
    sys.path.insert(0, {tests!r})
    from unit.test_store_publish import make_run
    from riskstrat.store import Store

    store = Store({url!r})
    scores, cohorts = make_run(4000, 9)
    run_id = store.runs.begin(month=date(2026, 11, 1), extract_date=date(2026, 11, 1),
                             model_name="m", model_version="2", started_at=datetime.now(UTC))
    print("staging", flush=True)
    store.runs.stage_scores(run_id, scores, chunk_rows=20)
    store.runs.stage_cohorts(run_id, cohorts, chunk_rows=20)
    print("switching", flush=True)
    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={{}}, expected_people=4000)
    print("published", flush=True)
    """
)


@pytest.mark.slow  # kills a writer process at three moments
@pytest.mark.parametrize("kill_after_s", [0.0, 0.3, 0.8, 1.5, None])
def test_a_killed_writer_leaves_the_previous_run_served(tmp_path, kill_after_s):
    """SIGKILL a publishing process at several moments: readers always see one complete run,
    and the next writer clears whatever was half-staged."""
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    store = Store(url)
    store.create_schema()
    first = publish(store, NOV, *make_run(200, 1))
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = WRITER.format(tests=tests_dir, url=url)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "staging"
    if kill_after_s is None:
        proc.wait(timeout=120)  # let it finish: the new run must then be served whole
    else:
        time.sleep(kill_after_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    said = proc.stdout.read().split()
    run_id, people, members = served(store)
    if run_id == first:
        assert (people, members) == (200, 100)
    else:  # the switch committed before the kill: the whole new run, nothing less
        assert (people, members) == (4000, 2000)
    # a new writer recovers anything the killed one left and can publish
    recovered = store.runs.recover_abandoned()
    if "switching" not in said and kill_after_s is not None:
        assert run_id == first and len(recovered) == 1  # killed while staging
    for r in recovered:
        run = store.runs.get(r)
        assert run.status == "failed" and "abandoned" in run.error
        assert store.runs.row_counts(r) == {"patient_scores": 0, "cohort_members": 0}
    assert not [r for r in store.runs.all() if r.status == "staging"]
    final = publish(store, NOV, *make_run(300, 2))
    assert served(store) == (final, 300, 150)
    store.dispose()


def test_stored_json_is_valid_json_for_numpy_values_nan_and_number_keys():
    # PostgreSQL's JSON type refuses NaN; numpy numbers and integer keys reach it from frames.
    text = json_text({"a": float("nan"), "b": np.float64(1.5), "c": np.int64(3), 4: [np.nan]})
    assert text == '{"a":null,"b":1.5,"c":3,"4":[null]}'


def _transactions(store: Store):
    """Record each committed transaction's statements as (verb, table, rows)."""
    from sqlalchemy import event

    done: list[list[tuple[str, str, int]]] = []
    current: list[tuple[str, str, int]] = []

    def executed(conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        verb = words[0].upper()
        table = ""
        if verb == "DELETE":
            table = words[2]
        elif verb == "UPDATE":
            table = words[1]
        elif verb == "DROP" and words[1].upper() == "TABLE":  # a run's own table (PostgreSQL)
            table = words[2].strip('"')
        if verb in ("DELETE", "UPDATE", "DROP"):
            current.append((verb, table, cursor.rowcount))

    def committed(conn):
        if current:
            done.append(list(current))
            current.clear()

    event.listen(store.engine, "after_cursor_execute", executed)
    event.listen(store.engine, "commit", committed)
    return done


def test_a_replaced_run_is_switched_first_then_deleted_a_chunk_per_transaction(store):
    """Re-scoring a month must not hold the serving database's write lock for the whole
    old run: the switch deletes nothing, and each later transaction deletes at most one
    chunk of people's rows (on SQLite, the API's audit writes wait for each one)."""
    scores, cohorts = make_run(250, 4)
    first = publish(store, NOV, scores, cohorts)
    store.runs.PURGE_CHUNK_PEOPLE = 60
    transactions = _transactions(store)
    second = publish(store, NOV, scores, cohorts)
    assert served(store) == (second, 250, 125)
    assert store.runs.row_counts(first) == {"patient_scores": 0, "cohort_members": 0}
    [switch] = [t for t in transactions if ("UPDATE", "score_runs") in {(v, n) for v, n, _ in t}]
    assert not any(verb in ("DELETE", "DROP") for verb, _, _ in switch)
    if _partitioned(store):  # the retired run's two tables, dropped whole, one per transaction
        drops = [t for t in transactions if any(verb == "DROP" for verb, _, _ in t)]
        assert [t[0][1] for t in drops] == [
            f"cohort_members_run_{first}",
            f"patient_scores_run_{first}",
        ]
        assert all(len(t) == 1 for t in drops)
        assert not any(verb == "DELETE" for t in transactions for verb, _, _ in t)
        return
    deletes = [t for t in transactions if any(verb == "DELETE" for verb, _, _ in t)]
    for t in deletes:
        assert len(t) == 1, "one chunk per transaction"
        assert t[0][2] <= 60
    score_chunks = [t[0][2] for t in deletes if t[0][1] == "patient_scores" and t[0][2] > 0]
    member_chunks = [t[0][2] for t in deletes if t[0][1] == "cohort_members" and t[0][2] > 0]
    assert sum(score_chunks) == 250 and len(score_chunks) == 5  # 60, 60, 60, 60, 10
    assert sum(member_chunks) == 125 and len(member_chunks) == 3


def _partitioned(store: Store) -> bool:
    return store.engine.dialect.name == "postgresql"


@pytest.fixture
def sqlite_store(tmp_path) -> Store:
    yield from serving_store("sqlite", tmp_path)


def test_a_retired_runs_rows_go_in_rank_order(sqlite_store):
    """A retired run's rows are deleted in the order they were staged (rank order), a run of
    consecutive ranks per transaction: those rows lie together in the table and its rank
    indexes, which made deleting a 735,000-person run 3x faster on SQLite than going by NHS
    number. Stopped after its first chunk of scores, the purge has taken the cohorts' rows
    and the 60 best-ranked people, and only them. (On PostgreSQL a run's rows are a table of
    their own, dropped whole: ``test_a_run_is_a_partition_of_its_own_on_postgresql``.)"""
    from sqlalchemy import event

    from riskstrat.store.schema import patient_scores

    store = sqlite_store
    scores, cohorts = make_run(250, 4)
    first = publish(store, NOV, scores, cohorts)
    publish(store, NOV, scores, cohorts)  # replaces it; its rows are purged below
    with store.engine.begin() as conn:  # put the retired run's rows back to delete them again
        conn.execute(patient_scores.insert(), [dict(r, run_id=first) for r in
                     _rows(store, patient_scores, store.runs.latest().id)])  # fmt: skip
    deleted_scores = []

    def stop_after_one_chunk(conn, cursor, statement, parameters, context, executemany):
        if statement.split()[:3] == ["DELETE", "FROM", "patient_scores"]:
            deleted_scores.append(statement)
            if len(deleted_scores) == 2:
                raise OSError("stopped (injected)")

    event.listen(store.engine, "before_cursor_execute", stop_after_one_chunk)
    try:
        with pytest.raises(OSError, match="injected"):
            store.runs.purge_rows([first], chunk_people=60)
    finally:
        event.remove(store.engine, "before_cursor_execute", stop_after_one_chunk)
    left = sorted(r["rank"] for r in _rows(store, patient_scores, first))
    assert left == list(range(61, 251))
    assert store.runs.row_counts(first)["cohort_members"] == 0
    assert store.runs.purge_rows([first], chunk_people=60) == 190
    assert store.runs.row_counts(first) == {"patient_scores": 0, "cohort_members": 0}
    assert store.runs.row_counts(store.runs.latest().id)["patient_scores"] == 250  # untouched


def _rows(store: Store, table, run_id: int) -> list[dict]:
    from sqlalchemy import select

    with store.engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().all()
    return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]


def test_rows_a_stopped_purge_left_are_deleted_before_the_next_run(store, monkeypatch, caplog):
    """If deleting a replaced run's rows fails after the switch, the new run is still
    published and served; the next run to begin deletes what was left."""
    scores, cohorts = make_run(200, 6)
    first = publish(store, NOV, scores, cohorts)

    def stops(run_ids, **kwargs):
        raise OSError("disk unplugged (injected)")

    with monkeypatch.context() as patched:
        patched.setattr(store.runs, "purge_rows", stops)
        second = publish(store, NOV, scores, cohorts)
    assert served(store) == (second, 200, 100)
    assert store.runs.row_counts(first) == {"patient_scores": 200, "cohort_members": 100}
    assert "deleting the rows of the runs it replaced failed (OSError)" in caplog.text
    assert not any(n in caplog.text for n in scores.nhs_number)
    assert store.runs.get(first).status == "superseded"
    publish(store, OCT, *make_run(30, 7))  # the next run begins: leftovers go first
    assert store.runs.row_counts(first) == {"patient_scores": 0, "cohort_members": 0}
    assert served(store)[0] == second and store.runs.row_counts(second)["patient_scores"] == 200


def test_a_failed_prune_after_publishing_does_not_fail_the_scoring(store, monkeypatch, caplog):
    """Scoring prunes the months leaving the retention window once its month is published.
    If that fails, the month stays published, scoring reports the failure by its type (never
    its text, which can quote rows) instead of failing, and the next prune finishes it."""
    from riskstrat.pipelines.score import prune_after_publish

    ids = {m: publish(store, date(2026, m, 1), *make_run(20, m)) for m in range(8, 12)}

    def stops(run_ids, **kwargs):
        raise OSError("could not delete the rows of 9990000018 (injected)")

    with (
        monkeypatch.context() as patched,
        caplog.at_level("WARNING", logger="riskstrat.pipelines.score"),
    ):
        patched.setattr(store.runs, "purge_rows", stops)
        assert prune_after_publish(store, keep_months=2) == ([], "OSError")
    assert "OSError" in caplog.text and "999" not in caplog.text
    assert store.runs.latest().id == ids[11] and store.runs.get(ids[11]).status == "published"
    assert store.runs.get(ids[8]).status == "superseded"
    pruned, error = prune_after_publish(store, keep_months=2)
    assert sorted(pruned) == [ids[8], ids[9]] and error is None
    assert {r.month.month for r in store.runs.all()} == {10, 11}


def test_only_retired_and_failed_runs_can_be_purged(store):
    run_id = publish(store, NOV, *make_run(20, 8))
    with pytest.raises(RuntimeError, match="is published"):
        store.runs.purge_rows([run_id])
    assert store.runs.row_counts(run_id)["patient_scores"] == 20


def test_a_prune_that_stops_part_way_is_finished_by_the_next(store, monkeypatch):
    ids = {m: publish(store, date(2026, m, 1), *make_run(20, m)) for m in range(8, 12)}

    def stops(run_ids, **kwargs):
        raise OSError("disk unplugged (injected)")

    with monkeypatch.context() as patched:
        patched.setattr(store.runs, "purge_rows", stops)
        with pytest.raises(OSError):
            store.runs.prune(keep_months=2)
    # retired, so no reader sees the old months, but not yet deleted
    assert (
        store.runs.get(ids[8]).status == "superseded"
        and store.runs.for_month(date(2026, 8, 1)) is None
    )
    assert store.runs.row_counts(ids[8])["patient_scores"] == 20
    assert sorted(store.runs.prune(keep_months=2)) == [ids[8], ids[9]]
    assert store.runs.get(ids[8]) is None and store.runs.row_counts(ids[8])["patient_scores"] == 0
    assert {r.month.month for r in store.runs.all()} == {10, 11}
