"""Revision 0008: ``patient_scores.reasons`` and ``.contributions`` are JSON kept as text
(SQLite and PostgreSQL). A run stored as JSON before it reads the same after it; a run staged
after it (lists or JSON text) reads back as it was written; on PostgreSQL the columns are
``text``, so the server no longer parses each value, and the downgrade makes them ``json``
again with the values intact."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from sqlalchemy import inspect, text

from riskstrat.store import Store
from riskstrat.store.schema import holds_json, patient_scores
from tests.support.migrations import migrate
from tests.support.postgres import store_url  # noqa: F401 (the url fixture)
from tests.support.runs import make_run

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
REASONS = [
    {"group": "frailty", "text": "severe frailty (CFS 7; eFI 0.31)", "direction": "raises",
     "log_odds": 0.7163, "percentage_points": 3.703},
    {"group": "sex", "text": "female", "direction": "lowers", "log_odds": -0.0147,
     "percentage_points": -0.054},
]  # fmt: skip
CONTRIBUTIONS = {"frailty": 3.703, "sex": -0.054, "age": 0.1}


def _types(store: Store) -> dict[str, str]:
    return {
        c["name"]: str(c["type"]).lower()
        for c in inspect(store.engine).get_columns("patient_scores")
        if c["name"] in ("reasons", "contributions")
    }


def test_both_columns_are_marked_as_json_kept_as_text():
    assert holds_json(patient_scores, "reasons") and holds_json(patient_scores, "contributions")
    assert not holds_json(patient_scores, "nhs_number")


def test_revision_0008_keeps_stored_runs_and_new_runs_round_trip(url):
    old = Store(url)
    migrate(old, "upgrade", "0007")
    postgres = old.engine.dialect.name == "postgresql"
    if postgres:
        assert _types(old) == {"reasons": "json", "contributions": "json"}
    with old.engine.begin() as conn:  # a run as revision 0007 stored it, JSON columns
        conn.execute(
            text(
                "INSERT INTO score_runs (month, model_name, model_version, status, n_scored, "
                "n_type1_opt_outs_excluded, created_at, details) VALUES "
                "('2026-10-01', 'm', '1', 'published', 1, 0, '2026-10-02 00:00:00', '{}')"
            )
        )
        run = conn.execute(text("SELECT max(id) FROM score_runs")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO patient_scores (run_id, nhs_number, practice_code, pcn_code, risk, "
                "percentile, rank, reasons, contributions) VALUES "
                "(:run, '9990000018', 'A81001', 'U12345', 0.2, 99.0, 1, :reasons, :contributions)"
            ),
            {
                "run": run,
                "reasons": json.dumps(REASONS),
                "contributions": json.dumps(CONTRIBUTIONS),
            },
        )
    old.dispose()

    store = Store(url)
    try:
        store.create_schema()  # upgrades to head
        if postgres:
            assert _types(store) == {"reasons": "text", "contributions": "text"}
        before = store.scores.patient(run, "9990000018")
        assert before is not None
        assert before.reasons == REASONS and before.contributions == CONTRIBUTIONS

        # A run staged now: reasons given as lists (and JSON text, as score_frame writes)
        scores, cohorts = make_run(30, 3)
        scores["reasons"] = [REASONS] * 15 + [json.dumps(REASONS[:1])] * 15
        run_id = store.runs.publish_run(
            month=NOV, extract_date=NOV, model_name="m", model_version="1", scores=scores,
            cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
            details={},
        )  # fmt: skip
        first = store.scores.patient(run_id, scores.nhs_number.iloc[0])
        last = store.scores.patient(run_id, scores.nhs_number.iloc[-1])
        assert first is not None and last is not None
        assert first.reasons == REASONS and last.reasons == REASONS[:1]
        assert first.contributions == {"age": 1.0}
        with store.engine.connect() as conn:
            stored = conn.execute(
                text("SELECT reasons FROM patient_scores WHERE run_id = :run AND rank = 1"),
                {"run": run_id},
            ).scalar_one()
        assert isinstance(stored, str) and json.loads(stored) == REASONS  # text, valid JSON
        _, page = store.cohorts.page(run_id, "falls_review", limit=2)
        assert [s.reasons for _, s in page] == [REASONS, REASONS]

        migrate(store, "downgrade", "0007")
        if postgres:
            assert _types(store) == {"reasons": "json", "contributions": "json"}
        with store.engine.connect() as conn:
            back = conn.execute(
                text("SELECT reasons FROM patient_scores WHERE run_id = :run"), {"run": run}
            ).scalar_one()
        assert (json.loads(back) if isinstance(back, str) else back) == REASONS
    finally:
        store.dispose()
