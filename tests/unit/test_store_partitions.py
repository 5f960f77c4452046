"""PostgreSQL keeps each run's rows in tables of their own (revision 0009,
``riskstrat.store.partitions``): staged bare, indexed and attached as the run's partition
before the switch, dropped whole when the run is retired. Readers query the shared tables as
before and read only the run's partition. A revision-0008 store's rows move into one
partition per run, and back again on downgrade."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from riskstrat.errors import ConflictError
from riskstrat.store import Store
from tests.support.migrations import migrate
from tests.support.postgres import postgres_url, serving_store
from tests.support.runs import make_run
from tests.support.runs import publish_run as publish

pytestmark = pytest.mark.postgres

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
TABLES = ("patient_scores", "cohort_members")


@pytest.fixture
def store(tmp_path) -> Store:
    yield from serving_store("postgresql", tmp_path)


def _catalog(store: Store, query: str, **params: object) -> list:
    """The rows of a question to PostgreSQL's catalog, asked in the store's schema."""
    with store.engine.connect() as conn:
        return list(conn.execute(text(query), params).all())


def _partition_of(store: Store, name: str) -> str | None:
    """What table ``name`` is: the bounds it is attached with, "bare" if it stands alone, or
    None if there is no such table."""
    rows = _catalog(
        store,
        "SELECT relispartition, pg_get_expr(relpartbound, oid) AS bound FROM pg_class "
        "WHERE oid = to_regclass(:name)",
        name=name,
    )
    if not rows:
        return None
    return rows[0].bound if rows[0].relispartition else "bare"


def _index_rows(store: Store, name: str) -> list:
    """The name and definition of each index of table ``name`` in the store's schema."""
    return _catalog(
        store,
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename = :name AND schemaname = current_schema()",
        name=name,
    )


def _indexes(store: Store, name: str) -> set[str]:
    """The indexed columns of table ``name``, each index as its column list."""
    return {r.indexdef.split("(", 1)[1].rstrip(")") for r in _index_rows(store, name)}


def _staged(store: Store, people: int, seed: int) -> tuple[int, pd.DataFrame]:
    """A November run of ``people`` staged (not sealed): its id and its cohort members."""
    scores, cohorts = make_run(people, seed)
    run_id = store.runs.begin(
        month=NOV, extract_date=NOV, model_name="m", model_version="1", started_at=datetime.now(UTC)
    )
    store.runs.stage_scores(run_id, scores)
    store.runs.stage_cohorts(run_id, cohorts)
    return run_id, cohorts


def test_a_run_is_staged_bare_and_published_as_a_partition_of_its_own(store):
    run_id, cohorts = _staged(store, 120, 3)
    # Staged: the rows are in the run's bare table, with no index, and no reader sees them.
    for table in TABLES:
        assert _partition_of(store, f"{table}_run_{run_id}") == "bare"
        assert _indexes(store, f"{table}_run_{run_id}") == set()
    assert store.runs.row_counts(run_id) == {"patient_scores": 0, "cohort_members": 0}
    # Sealed (the last of staging): attached and indexed, and still not served.
    store.runs.seal(run_id)
    assert _partition_of(store, f"patient_scores_run_{run_id}") == f"FOR VALUES IN ({run_id})"
    assert store.runs.status(run_id) == "staging" and store.runs.latest() is None

    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=120)
    assert store.runs.latest().id == run_id
    assert store.runs.row_counts(run_id) == {"patient_scores": 120, "cohort_members": len(cohorts)}
    for table in TABLES:
        assert _partition_of(store, f"{table}_run_{run_id}") == f"FOR VALUES IN ({run_id})"
    # The shared tables' key and indexes, built on the run's table.
    assert _indexes(store, f"patient_scores_run_{run_id}") == {
        "run_id, nhs_number", "run_id, rank", "run_id, pcn_code, rank",
        "run_id, practice_code, rank",
    }  # fmt: skip
    assert _indexes(store, f"cohort_members_run_{run_id}") == {
        "run_id, intervention, nhs_number", "run_id, intervention, rank",
        "run_id, intervention, pcn_code, rank", "run_id, intervention, practice_code, rank",
        "run_id, nhs_number",
    }  # fmt: skip
    # A reader's query of the shared table reads only the run's partition, by its index.
    with store.engine.connect() as conn:
        plan = "\n".join(
            conn.execute(
                text(
                    "EXPLAIN SELECT * FROM patient_scores WHERE run_id = :run "
                    "ORDER BY rank LIMIT 10"
                ),
                {"run": run_id},
            ).scalars()
        )
    assert f"patient_scores_run_{run_id}" in plan and "Index Scan" in plan
    page_total, page = store.scores.page(run_id, limit=5)
    assert page_total == 120 and [p.rank for p in page] == [1, 2, 3, 4, 5]


def test_a_seal_stopped_part_way_is_finished_with_each_key_and_index_once(store):
    run_id, _ = _staged(store, 90, 5)
    # A process killed part way through its seal: the key and one index built, not attached.
    name = f"patient_scores_run_{run_id}"
    with store.engine.begin() as conn:
        conn.execute(text(f'CREATE UNIQUE INDEX "{name}_pkey" ON {name} (run_id, nhs_number)'))
        conn.execute(
            text(f"CREATE INDEX ix_patient_scores_run_rank_{run_id} ON {name} (run_id, rank)")
        )
    assert _partition_of(store, name) == "bare"

    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=90)
    assert store.runs.latest().id == run_id
    for table, count in (("patient_scores", 4), ("cohort_members", 5)):
        partition = f"{table}_run_{run_id}"
        assert len(_index_rows(store, partition)) == count  # none built twice
        # each is the partition of one of the shared table's indexes (none made at attach)
        [(attached,)] = _catalog(
            store,
            "SELECT count(*) FROM pg_inherits JOIN pg_index ON indexrelid = inhrelid "
            "WHERE indrelid = to_regclass(:name)",
            name=partition,
        )
        assert attached == count
        # and the key is the partition's primary key
        assert _catalog(
            store,
            "SELECT conname, contype FROM pg_constraint WHERE conrelid = to_regclass(:name) "
            "AND contype IN ('p', 'u')",
            name=partition,
        ) == [(f"{partition}_pkey", "p")]


def test_replacing_a_month_drops_the_old_runs_tables_and_keeps_the_new(store):
    scores, cohorts = make_run(80, 4)
    first = publish(store, NOV, scores, cohorts)
    other_month = publish(store, OCT, scores, cohorts)
    second = publish(store, NOV, scores, cohorts)
    for table in TABLES:
        assert _partition_of(store, f"{table}_run_{first}") is None
        assert _partition_of(store, f"{table}_run_{second}") == f"FOR VALUES IN ({second})"
        assert _partition_of(store, f"{table}_run_{other_month}") == (
            f"FOR VALUES IN ({other_month})"
        )
    assert store.runs.row_counts(second)["patient_scores"] == 80


def test_a_row_of_another_run_is_refused_as_it_arrives(store):
    """A run's bare table checks, row by row, that its rows are the run's (so that attaching
    it need not read it again): a row of another run is refused there."""
    scores, cohorts = make_run(40, 6)
    before = publish(store, NOV, scores, cohorts)
    run_id, _ = _staged(store, 40, 7)
    refused = pytest.raises(DBAPIError, match=f"patient_scores_run_{run_id}_only")
    with refused, store.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE patient_scores_run_{run_id} SET run_id = :other WHERE rank = 1"),
            {"other": before},
        )
    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=40)
    assert store.runs.row_counts(run_id)["patient_scores"] == 40
    # the check has done its work: the attached partition keeps only its bounds
    for table in TABLES:
        assert not _catalog(
            store,
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:name) "
            "AND contype = 'c'",
            name=f"{table}_run_{run_id}",
        )


def test_a_failure_while_sealing_fails_the_run_and_drops_its_tables(store):
    """A bare table without its check (made by a riskstrat before the check) holding a row
    of another run cannot be attached as this run's partition: the seal adds the check,
    which finds the row; the run fails, its tables go, and the month's previous run is
    still served."""
    scores, cohorts = make_run(60, 5)
    before = publish(store, NOV, scores, cohorts)
    with pytest.raises(DBAPIError, match=r"violated by some row"):
        run_id = store.runs.begin(
            month=NOV, extract_date=NOV, model_name="m", model_version="2",
            started_at=datetime.now(UTC),
        )  # fmt: skip
        try:
            store.runs.stage_scores(run_id, scores)
            name = f"patient_scores_run_{run_id}"
            with store.engine.begin() as conn:  # a row that is not this run's
                conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_only"))
                conn.execute(
                    text(f"UPDATE {name} SET run_id = :other WHERE rank = 1"), {"other": before}
                )
            store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={})
        except BaseException as exc:
            store.runs.fail(run_id, type(exc).__name__)
            raise
    assert store.runs.status(run_id) == "failed"
    for table in TABLES:
        assert _partition_of(store, f"{table}_run_{run_id}") is None
    assert store.runs.latest().id == before
    assert store.runs.row_counts(before)["patient_scores"] == 60


def test_a_bare_table_without_its_check_is_still_sealed(store):
    """A bare table made without its check (a riskstrat before it had one, stopped after
    staging and upgraded before the seal) is checked and attached all the same."""
    run_id, cohorts = _staged(store, 50, 8)
    for table in TABLES:
        name = f"{table}_run_{run_id}"
        with store.engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_only"))
    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=50)
    assert store.runs.row_counts(run_id) == {"patient_scores": 50, "cohort_members": len(cohorts)}
    for table in TABLES:
        assert _partition_of(store, f"{table}_run_{run_id}") == f"FOR VALUES IN ({run_id})"


def test_a_sealed_runs_statistics_come_from_a_small_sample(store):
    """The planner's statistics of a run's table are taken at the seal with a statistics
    target of ``STATISTICS_TARGET``: a histogram of that many buckets, not the server's
    default of 100 (its sample ten times the size, for the same plans)."""
    from riskstrat.store.partitions import STATISTICS_TARGET

    run_id, _ = _staged(store, 150, 9)
    store.runs.seal(run_id)
    [(bounds,)] = _catalog(
        store,
        "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats "
        "WHERE schemaname = current_schema() AND tablename = :name AND attname = 'rank'",
        name=f"patient_scores_run_{run_id}",
    )
    assert bounds == STATISTICS_TARGET + 1


def test_a_bare_table_left_by_a_stopped_run_is_dropped_by_the_next(store):
    """A run whose process stopped after staging (its bare tables are not attached, so no
    count of the shared tables finds them) is failed and its tables dropped when the next
    run begins."""
    scores, _ = make_run(40, 6)
    run_id = store.runs.begin(
        month=NOV, extract_date=NOV, model_name="m", model_version="1", started_at=datetime.now(UTC)
    )
    store.runs.stage_scores(run_id, scores)
    with store.engine.begin() as conn:  # as if its process had died
        conn.execute(text("UPDATE score_runs SET pid = 999999999 WHERE id = :id"), {"id": run_id})
    assert store.runs.recover_abandoned() == [run_id]
    assert _partition_of(store, f"patient_scores_run_{run_id}") is None
    assert store.runs.status(run_id) == "failed"
    # and a failed run whose tables were left behind (a drop that stopped) is found too
    failed = store.runs.begin(
        month=OCT, extract_date=OCT, model_name="m", model_version="1", started_at=datetime.now(UTC)
    )
    store.runs.stage_scores(failed, scores)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE score_runs SET status = 'failed' WHERE id = :id"), {"id": failed})
    assert store.runs.purge_leftovers() == [failed]
    assert _partition_of(store, f"patient_scores_run_{failed}") is None


def test_publishing_a_staging_run_twice_is_refused_without_touching_it(store):
    scores, cohorts = make_run(30, 7)
    run_id = publish(store, NOV, scores, cohorts)
    with pytest.raises(ConflictError):
        store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={})
    assert store.runs.row_counts(run_id)["patient_scores"] == 30


def test_revision_0009_moves_each_runs_rows_into_a_partition_and_back():
    urls = postgres_url()
    url = next(urls)
    try:
        old = Store(url)
        migrate(old, "upgrade", "0008")
        with old.engine.begin() as conn:  # two runs as revision 0008 stored them
            runs = []
            for month, n in (("2026-10-01", 3), ("2026-11-01", 2)):
                conn.execute(
                    text(
                        "INSERT INTO score_runs (month, model_name, model_version, status, "
                        "n_scored, n_type1_opt_outs_excluded, created_at, details) VALUES "
                        f"('{month}', 'm', '1', 'published', {n}, 0, '2026-11-02', '{{}}')"
                    )
                )
                run = conn.execute(text("SELECT max(id) FROM score_runs")).scalar_one()
                runs.append(run)
                for rank in range(1, n + 1):
                    conn.execute(
                        text(
                            "INSERT INTO patient_scores (run_id, nhs_number, practice_code, "
                            "pcn_code, risk, percentile, rank, reasons, contributions) VALUES "
                            "(:run, :nhs, 'A81001', 'U12345', 0.5, 90.0, :rank, '[]', '{}')"
                        ),
                        {"run": run, "nhs": f"99900000{rank:02d}", "rank": rank},
                    )
                conn.execute(
                    text(
                        "INSERT INTO cohort_members (run_id, intervention, nhs_number, "
                        "practice_code, pcn_code, risk, rank, criteria) VALUES "
                        "(:run, 'falls_review', '9990000001', 'A81001', 'U12345', 0.5, 1, :c)"
                    ),
                    {"run": run, "c": json.dumps(["aged 65+"])},
                )
        old.dispose()

        store = Store(url)
        store.create_schema()  # 0009
        for run, n in zip(runs, (3, 2), strict=True):
            for table in TABLES:
                assert _partition_of(store, f"{table}_run_{run}") == f"FOR VALUES IN ({run})"
            assert store.runs.row_counts(run) == {"patient_scores": n, "cohort_members": 1}
        assert store.scores.patient(runs[0], "9990000002").rank == 2
        # a new run after the migration gets its own partition; retiring the old one drops it
        new = publish(store, date(2026, 11, 1), *make_run(25, 8))
        assert _partition_of(store, f"patient_scores_run_{new}") == f"FOR VALUES IN ({new})"
        assert _partition_of(store, f"patient_scores_run_{runs[1]}") is None

        migrate(store, "downgrade", "0008")
        assert _partition_of(store, "patient_scores") == "bare"  # a plain table again
        assert store.runs.row_counts(runs[0]) == {"patient_scores": 3, "cohort_members": 1}
        assert store.runs.row_counts(new)["patient_scores"] == 25
        assert "ix_patient_scores_run_pcn_rank" in {
            r.indexname for r in _index_rows(store, "patient_scores")
        }
        migrate(store, "upgrade", "head")
        assert _partition_of(store, f"patient_scores_run_{new}") == f"FOR VALUES IN ({new})"
        store.dispose()
    finally:
        next(urls, None)


def test_a_drop_behind_a_long_read_gives_up_and_the_next_run_finishes_it(store, monkeypatch):
    """Dropping a retired run's table locks the shared table for a moment; behind a long
    query (here, an open transaction that has read it) it waits DROP_LOCK_TIMEOUT at most,
    instead of making every API read queue behind it. The new run is published and served
    meanwhile, and the next run's start drops what was left."""
    import psycopg

    from riskstrat.store import partitions

    monkeypatch.setattr(partitions, "DROP_LOCK_TIMEOUT", "200ms")
    scores, cohorts = make_run(50, 9)
    first = publish(store, NOV, scores, cohorts)
    url = store.engine.url
    reader = psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database,
        options=url.query["options"],
    )  # fmt: skip
    try:
        reader.execute("SELECT count(*) FROM patient_scores").fetchone()  # holds its lock
        second = publish(store, NOV, scores, cohorts)  # the drop of the first run gives up
        assert store.runs.latest().id == second
        assert _partition_of(store, f"cohort_members_run_{first}") is None
        assert _partition_of(store, f"patient_scores_run_{first}") is not None
    finally:
        reader.close()
    assert store.runs.purge_leftovers() == [first]
    assert _partition_of(store, f"patient_scores_run_{first}") is None
