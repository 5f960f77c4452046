"""``cohort_members.ranking`` in the serving store (SQLite and PostgreSQL): revision 0007 adds
the column to a store at 0006, keeping what was there (null); a run staged with rankings
reads them back on pages and memberships; and ``ranking_risks`` reads that model's risks in
rank order, narrowed like ``risks``."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import inspect, text

from riskstrat.store import Store
from tests.support.migrations import migrate
from tests.support.postgres import store_url  # noqa: F401 (the url fixture)
from tests.support.runs import make_run

NOV, DEC = date(2026, 11, 1), date(2026, 12, 1)


def _ranked(cohorts: pd.DataFrame) -> pd.DataFrame:
    """The cohort as an ACP list ranked by mortality: every other member by a risk that falls
    with rank, and a falls list beside it with no ranking."""
    acp = cohorts.copy()
    acp["intervention"] = "advance_care_planning"
    acp["expected_benefit"] = None
    mortality = [round(0.9 - 0.03 * i, 2) for i in range(len(acp))]
    acp["ranking"] = [
        {"model": "riskstrat-death-12m", "version": "3", "label": "12-month mortality risk",
         "risk": r, "expected_bed_days": 5 * r,
         "reasons": [{"group": "frailty", "text": "severe frailty", "direction": "raises",
                      "log_odds": 0.5, "percentage_points": 6.0}]}
        for r in mortality
    ]  # fmt: skip
    falls = cohorts.assign(ranking=None)
    return pd.concat([falls, acp], ignore_index=True)


def _publish(store: Store, month: date, cohorts: pd.DataFrame, scores: pd.DataFrame) -> int:
    return store.runs.publish_run(
        month=month, extract_date=month, model_name="m", model_version="1", scores=scores,
        cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"note": "test"},
    )  # fmt: skip


def test_revision_0007_adds_the_ranking_and_rankings_round_trip(url):
    old = Store(url)
    migrate(old, "upgrade", "0006")
    columns = {c["name"] for c in inspect(old.engine).get_columns("cohort_members")}
    assert "ranking" not in columns
    scores, cohorts = make_run(40, 1)
    with old.engine.begin() as conn:  # a run as revision 0006 stored it, with no ranking
        conn.execute(
            text(
                "INSERT INTO score_runs (month, model_name, model_version, status, n_scored, "
                "n_type1_opt_outs_excluded, created_at, details) VALUES "
                "('2026-10-01', 'm', '1', 'published', 0, 0, '2026-10-02 00:00:00', '{}')"
            )
        )
        run = conn.execute(text("SELECT max(id) FROM score_runs")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO cohort_members (run_id, intervention, nhs_number, practice_code, "
                "pcn_code, risk, expected_benefit, rank, criteria) VALUES "
                "(:run, 'falls_review', '9990000018', 'A81001', 'U12345', 0.2, 0.07, 1, "
                "'[\"aged_65_plus\"]')"
            ),
            {"run": run},
        )
    old.dispose()

    store = Store(url)
    try:
        store.create_schema()  # upgrades to head
        columns = {c["name"] for c in inspect(store.engine).get_columns("cohort_members")}
        assert "ranking" in columns
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() >= (
                "0007"
            )
        [before] = store.cohorts.memberships(run, "9990000018")
        assert before.ranking is None  # what was there reads as it did
        assert store.cohorts.ranking_risks(run, "falls_review") == [None]

        run_id = _publish(store, NOV, _ranked(cohorts), scores)
        acp = _ranked(cohorts).query("intervention == 'advance_care_planning'")
        total, rows = store.cohorts.page(run_id, "advance_care_planning", limit=3)
        assert total == len(acp)
        assert [m.ranking for m, _ in rows] == list(acp["ranking"].iloc[:3])
        _, falls = store.cohorts.page(run_id, "falls_review", limit=3)
        assert [m.ranking for m, _ in falls] == [None, None, None]
        person = acp.nhs_number.iloc[1]
        by_key = {m.intervention: m for m in store.cohorts.memberships(run_id, person)}
        assert by_key["advance_care_planning"].ranking == acp["ranking"].iloc[1]
        assert by_key["falls_review"].ranking is None

        mortality = [r["risk"] for r in acp["ranking"]]
        assert store.cohorts.ranking_risks(run_id, "advance_care_planning") == pytest.approx(
            mortality
        )
        assert store.cohorts.ranking_risks(run_id, "advance_care_planning", limit=4) == (
            pytest.approx(mortality[:4])
        )
        practice = acp.practice_code.iloc[0]
        mine = [r["risk"] for r, p in zip(acp["ranking"], acp.practice_code, strict=True)
                if p == practice]  # fmt: skip
        assert store.cohorts.ranking_risks(
            run_id, "advance_care_planning", practice_code=practice
        ) == pytest.approx(mine)
        assert store.cohorts.ranking_risks(run_id, "falls_review", limit=2) == [None, None]
        assert store.cohorts.ranking_risks(run_id, "advance_care_planning", pcn_codes=[]) == []
    finally:
        store.dispose()
