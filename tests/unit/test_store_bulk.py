"""PostgreSQL's bulk path (``riskstrat.store.bulk``): Arrow rows by binary COPY. Each column
goes at the width its table declares; a stream's rows are committed only once all its parts
are in; a failed copy is told by its rule, never by the row it quotes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
from adbc_driver_manager import IntegrityError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from riskstrat.errors import failure_message
from riskstrat.store import Store, bulk, partitions
from riskstrat.store.records import arrow_rows
from riskstrat.store.schema import holds_json, patient_scores
from tests.support.migrations import migrate
from tests.support.postgres import postgres_url, serving_store
from tests.support.runs import make_run

NOV = date(2026, 11, 1)


def _rows(**columns: pa.Array) -> pa.Table:
    return pa.table(columns)


def test_each_column_goes_at_its_declared_width_and_text_as_it_is():
    rows = _rows(
        run_id=pa.array([7, 7], pa.int64()),
        rank=pa.array([1, 2], pa.int64()),
        risk=pa.array([0.25, 0.5], pa.float32()),
        nhs_number=pa.array(["9990000018", "9990000026"], pa.large_string()),
    )
    cast = bulk.arrow_for(patient_scores, rows)
    assert cast.schema.types == [pa.int32(), pa.int32(), pa.float64(), pa.large_string()]
    assert cast.column("rank").to_pylist() == [1, 2]
    assert cast.column("risk").to_pylist() == [0.25, 0.5]
    assert cast.column_names == rows.column_names


def test_a_number_too_wide_for_its_column_is_refused_not_wrapped():
    rows = _rows(rank=pa.array([2**31], pa.int64()))
    with pytest.raises(pa.ArrowInvalid):
        bulk.arrow_for(patient_scores, rows)


def test_the_driver_connects_with_the_stores_own_parameters():
    url = make_url(
        "postgresql+psycopg://riskstrat:p%40ss@db.example:5433/serving"
        "?options=-csearch_path%3Dicb&sslmode=require"
    )
    assert bulk.libpq_uri(url) == (
        "postgresql://riskstrat:p%40ss@db.example:5433/serving"
        "?options=-csearch_path%3Dicb&sslmode=require"
    )


@pytest.fixture
def store(tmp_path) -> Store:
    yield from serving_store("postgresql", tmp_path)


def _begin(store: Store) -> int:
    return store.runs.begin(
        month=NOV, extract_date=NOV, model_name="m", model_version="1", started_at=datetime.now(UTC)
    )


def _bare_rows(store: Store, run_id: int) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(text(f"SELECT count(*) FROM patient_scores_run_{run_id}")).scalar_one()
        )


@pytest.mark.postgres
def test_a_run_staged_on_two_streams_holds_every_row_once_with_its_values(store):
    scores, cohorts = make_run(230, 5)
    run_id = _begin(store)
    store.runs.stage_scores(run_id, scores, chunk_rows=40)  # 6 parts, 3 a stream
    store.runs.stage_cohorts(run_id, cohorts, chunk_rows=40)
    store.runs.publish(run_id, n_type1_opt_outs_excluded=0, details={}, expected_people=230)
    with store.engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT nhs_number, rank, risk, reasons FROM patient_scores "
                "WHERE run_id = :run ORDER BY rank"
            ),
            {"run": run_id},
        ).all()
    assert [r.nhs_number for r in stored] == list(scores["nhs_number"])
    assert [r.rank for r in stored] == list(range(1, 231))
    assert [r.risk for r in stored] == list(scores["risk"])  # float64 kept exactly
    assert stored[0].reasons.startswith('[{"group":"age"')
    assert store.runs.row_counts(run_id)["cohort_members"] == len(cohorts)


@pytest.mark.postgres
def test_a_streams_rows_are_committed_only_once_all_its_parts_are_in(store):
    scores, _ = make_run(60, 6)
    run_id = _begin(store)
    bad = scores.copy()
    bad.loc[35, "pcn_code"] = None  # NOT NULL: the second of three parts fails
    encode = [holds_json(patient_scores, c) for c in scores.columns]
    made: list[int] = []

    def part(start: int) -> pa.Table:
        made.append(start)
        return arrow_rows(
            bad.iloc[start : start + 20], list(scores.columns), encode, {"run_id": run_id}
        )

    with store.engine.begin() as conn:
        partitions.create_bare(conn, patient_scores, run_id)
    with pytest.raises(IntegrityError) as raised:
        bulk.copy_rows(
            store.engine,
            patient_scores,
            [lambda s=s: part(s) for s in (0, 20, 40)],
            into=f"patient_scores_run_{run_id}",
            streams=1,
        )
    assert made == [0, 20]  # the third part is never made
    assert _bare_rows(store, run_id) == 0  # the first part's rows went back with the second's
    message = failure_message(raised.value)
    assert "not-null" in message and "pcn_code" in message
    # the failing row (an NHS number among its values) is not in what a person sees
    assert bad.loc[35, "nhs_number"] not in message and "Failing row" not in message
    assert bad.loc[35, "nhs_number"] in str(raised.value)  # the driver's own text quotes it


@pytest.mark.postgres
def test_a_failed_stage_fails_the_run_and_leaves_no_rows_behind(store):
    scores, _ = make_run(100, 7)
    scores.loc[77, "practice_code"] = None
    run_id = _begin(store)
    with pytest.raises(IntegrityError) as raised:
        store.runs.stage_scores(run_id, scores, chunk_rows=25)
    store.runs.fail(run_id, failure_message(raised.value))  # as the score pipeline does
    assert store.runs.status(run_id) == "failed"
    with store.engine.connect() as conn:
        assert not partitions.exists(conn, patient_scores, run_id)
    details = str(store.runs.get(run_id).details)
    assert "not-null" in details and scores.loc[77, "nhs_number"] not in details


@pytest.mark.postgres
def test_a_store_at_an_earlier_revision_takes_the_rows_into_its_shared_table():
    """A store not yet partitioned (revision 0008, on its way to be upgraded) is copied into
    its shared table, key and foreign key checked as the rows arrive."""
    urls = postgres_url()
    store = Store(next(urls))
    try:
        migrate(store, "upgrade", "0008")
        scores, _ = make_run(70, 8)
        run_id = _begin(store)
        store.runs.stage_scores(run_id, scores, chunk_rows=30)
        with store.engine.connect() as conn:
            assert not partitions.exists(conn, patient_scores, run_id)
            stored = conn.execute(
                text("SELECT nhs_number FROM patient_scores WHERE run_id = :run ORDER BY rank"),
                {"run": run_id},
            ).scalars()
            assert list(stored) == list(scores["nhs_number"])
        # the shared table's key is checked as the rows arrive: the same people again fail
        with pytest.raises(IntegrityError) as raised:
            store.runs.stage_scores(run_id, scores.head(5))
        assert "duplicate key" in failure_message(raised.value)
        assert scores["nhs_number"].iloc[0] not in failure_message(raised.value)
    finally:
        store.dispose()
        next(urls, None)
