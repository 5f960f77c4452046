"""Monitoring results in the serving store (SQLite and PostgreSQL): stored per run and check
date, replaced on a rerun, read back whole; the published risks read for follow-up; and
revision 0006."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import inspect

from riskstrat.store import Store
from tests.support.postgres import serving_store
from tests.support.runs import make_run

JUL, OCT = date(2026, 7, 1), date(2026, 10, 1)
CHECK, LATER = date(2026, 11, 1), date(2026, 12, 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    yield from serving_store(request.param, tmp_path)


def _publish(store: Store, month: date, seed: int) -> int:
    scores, cohorts = make_run(50, seed)
    return store.runs.publish_run(
        month=month, extract_date=month, model_name="m", model_version="1", scores=scores,
        cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"note": "test"},
    )  # fmt: skip


def _payload(status: str) -> dict:
    return {
        "status": {"oe": status, "overall": status},
        "months": [{"month": "2026-07-01", "performance": {"overall": {"rows": 50}}}],
        "drift": [{"name": "age", "psi": 0.31, "status": {"psi": "red"}}],
    }


def test_results_round_trip_and_are_replaced_per_run_and_check_date(store):
    assert store.monitoring.latest() is None and store.monitoring.all() == []
    july = _publish(store, JUL, 1)
    args = {"run_id": july, "month": JUL, "model_name": "m", "model_version": "1"}
    store.monitoring.replace(check_date=CHECK, status="amber", payload=_payload("amber"), **args)
    store.monitoring.replace(check_date=CHECK, status="red", payload=_payload("red"), **args)
    store.monitoring.replace(check_date=LATER, status="green", payload=_payload("green"), **args)
    records = store.monitoring.all()
    assert [(r.check_date, r.status) for r in records] == [(CHECK, "red"), (LATER, "green")]
    first = records[0]
    assert first.payload == _payload("red") and first.run_id == july and first.month == JUL
    assert first.computed_at.tzinfo is not None
    latest = store.monitoring.latest()
    assert latest is not None and latest.check_date == LATER and latest.status == "green"


def test_published_risks_are_the_runs_people(store):
    july = _publish(store, JUL, 1)
    _publish(store, OCT, 2)
    risks = store.monitoring.published_risks(july)
    scores, _ = make_run(50, 1)
    assert list(risks.columns) == ["nhs_number", "pcn_code", "risk"]
    assert sorted(risks["nhs_number"]) == sorted(scores["nhs_number"])
    assert risks["risk"].sum() == pytest.approx(scores["risk"].sum())


def test_revision_0006_adds_the_table(store):
    tables = inspect(store.engine).get_table_names()
    assert "model_monitoring" in tables
    with store.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() >= "0006"
