"""The intervention cohort routes, on a store holding two hand-made monthly runs."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from riskstrat.cohorts.listing import cohort_items_json
from riskstrat.cohorts.select import load_cohort_config
from riskstrat.config import Settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.service.app import create_app
from riskstrat.store import Store
from tests.support.auth import add_fixed_key, bearer, fixed_key

TEAM = bearer(fixed_key(1))
COORD = bearer(fixed_key(2))
OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)


def _run(n: int, risk_scale: float, people: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    risk = np.sort(rng.beta(1, 20, size=n))[::-1] * risk_scale
    scores = pd.DataFrame(
        {
            "nhs_number": people,
            "practice_code": ["A81001" if i % 3 else "B82001" for i in range(n)],
            "pcn_code": ["U12345" if i % 3 else "U54321" for i in range(n)],
            "risk": risk,
            "percentile": np.linspace(100, 1, n),
            "rank": np.arange(1, n + 1),
            "reasons": [
                [{"group": "age", "text": "aged 80", "direction": "raises", "log_odds": 0.4,
                  "percentage_points": 1.5}]
            ] * n,
            "contributions": [{"age": 1.5 * risk_scale, "frailty": 0.2}] * n,
        }
    )  # fmt: skip
    members = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].iloc[::2].copy()
    members.insert(0, "intervention", "falls_review")
    members["expected_benefit"] = members["risk"] * 0.35
    members["rank"] = np.arange(1, len(members) + 1)
    members["criteria"] = [["aged_65_plus", "fall_in_last_12_months"]] * len(members)
    return scores, members


@pytest.fixture
def world(tmp_path):
    settings = Settings(home=tmp_path / "home")
    add_fixed_key(settings, "pcn_team", fixed_key(1))
    add_fixed_key(settings, "care_coordinator", fixed_key(2))
    people = synthetic_nhs_numbers(np.random.default_rng(1), 90)
    store = Store(settings.serving_database_url)
    store.create_schema()
    config = load_cohort_config()
    details = {
        "cohort_config": cohort_config_record(config),
        "cohorts": {"falls_review": {"eligible": 45, "served_within_lookback": 7}},
    }
    texts = {k: i["criteria"] for k, i in details["cohort_config"]["interventions"].items()}
    for month, scale in ((OCT, 1.0), (NOV, 2.0)):
        scores, members = _run(90, scale, people)
        if month == NOV:  # October stands for a run published before items were stored
            members = members.assign(item_json=cohort_items_json(members, scores, texts))
        store.runs.publish_run(
            month=month, extract_date=NOV, model_name="m", model_version=str(month.month),
            scores=scores, cohorts=members, n_type1_opt_outs_excluded=0,
            started_at=datetime.now(UTC), details=details,
        )  # fmt: skip
    store.dispose()
    with TestClient(create_app(settings)) as client:
        yield client, settings, scores, members


def test_index_lists_interventions_without_patients(world):
    client, *_ = world
    body = client.get("/api/v1/cohorts", headers=TEAM).json()
    keys = [i["key"] for i in body["interventions"]]
    assert keys == ["falls_review", "medication_review", "advance_care_planning"]
    falls = body["interventions"][0]
    assert falls["effect"] == 0.35 and falls["eligible"] == 45 and falls["lookback_days"] == 365
    assert "9" * 3 not in str(body).replace(body["run"]["published_at"], "")


def test_cohort_page_for_a_pcn_with_capacity(world):
    client, _, _, members = world
    pcn = members[members.pcn_code == "U12345"].sort_values("rank")
    body = client.get(
        "/api/v1/cohorts/falls_review",
        params={"pcn": "U12345", "capacity": 10, "page_size": 4, "page": 3},
        headers=TEAM,
    ).json()
    # capacity 10, pages of 4: page 3 holds people 9 and 10 of this PCN's list
    assert body["total"] == 10 and [i["nhs_number"] for i in body["items"]] == list(
        pcn.nhs_number.iloc[8:10]
    )
    summary = body["capacity_summary"]
    assert summary["eligible"] == len(pcn) and summary["capacity"] == 10
    top, nxt = pcn.risk.iloc[:10], pcn.risk.iloc[10:20]
    assert summary["listed"]["people"] == 10 and summary["next"]["first_rank"] == 11
    assert summary["listed"]["expected_admissions_90d"] == pytest.approx(top.sum(), abs=1e-3)
    assert summary["listed"]["expected_admissions_avoided"] == pytest.approx(
        0.35 * top.sum(), abs=1e-3
    )
    assert summary["next"]["people"] == len(nxt)
    assert summary["next"]["expected_admissions_90d"] == pytest.approx(nxt.sum(), abs=1e-3)
    item = body["items"][0]
    assert [c["text"] for c in item["eligible_because"]] == [
        "aged 65 or over",
        "a fall recorded in the last 12 months",
    ]
    beyond = client.get(
        "/api/v1/cohorts/falls_review", params={"capacity": 10, "page": 9}, headers=TEAM
    ).json()
    assert beyond["items"] == [] and beyond["total"] == 10


def test_stored_items_read_exactly_as_items_built_at_request_time(world):
    client, settings, _, _ = world
    params = {"pcn": "U12345", "page_size": 20, "capacity": 15}
    stored = client.get("/api/v1/cohorts/falls_review", params=params, headers=TEAM)
    store = Store(settings.serving_database_url)
    try:
        run_id = store.runs.latest().id
        with store.engine.begin() as conn:
            stored_items = conn.exec_driver_sql(
                "SELECT count(*) FROM cohort_members WHERE run_id = ? AND item_json IS NOT NULL",
                (run_id,),
            ).scalar_one()
            conn.exec_driver_sql(
                "UPDATE cohort_members SET item_json = NULL WHERE run_id = ?", (run_id,)
            )
        assert stored_items == 45  # the page above was read from stored items
    finally:
        store.dispose()
    built = client.get("/api/v1/cohorts/falls_review", params=params, headers=TEAM)
    assert stored.status_code == built.status_code == 200
    assert len(stored.json()["items"]) == 15
    assert stored.json() == built.json()
    assert stored.text == built.text  # byte for byte: same numbers, same order


def test_cohort_as_csv(world):
    client, _, _, members = world
    response = client.get(
        "/api/v1/cohorts/falls_review",
        params={"practice": "B82001", "format": "csv", "page_size": 500},
        headers=TEAM,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    frame = pd.read_csv(io.StringIO(response.text), dtype=str)
    expected = members[members.practice_code == "B82001"]
    assert len(frame) == len(expected)
    assert list(frame.nhs_number.str.replace(" ", "")) == list(expected.nhs_number)
    # the verb comes from the sign of the size (issue 24)
    assert frame.reasons.iloc[0] == "aged 80 (raises the risk by 1.5 points)"


def test_unknown_intervention_and_month(world):
    client, *_ = world
    response = client.get("/api/v1/cohorts/hip_review", headers=TEAM)
    assert response.status_code == 404 and "falls_review" in response.json()["detail"]
    assert client.get("/api/v1/cohorts/falls_review", params={"month": "2025-01"},
                      headers=TEAM).status_code == 404  # fmt: skip
    assert client.get("/api/v1/cohorts/falls_review", params={"month": "2026-13"},
                      headers=TEAM).status_code == 422  # fmt: skip
    older = client.get("/api/v1/cohorts/falls_review", params={"month": "2026-10"}, headers=TEAM)
    assert older.json()["run"]["month"] == "2026-10-01"


def test_patient_gains_interventions_and_what_changed(world):
    client, _, scores, members = world
    person = members.iloc[0].nhs_number
    body = client.get(f"/api/v1/patients/{person}/risk", headers=COORD).json()
    assert [e["intervention"] for e in body["eligible_interventions"]] == ["falls_review"]
    assert body["eligible_interventions"][0]["cohort_rank"] == 1
    changed = body["what_changed"]
    now = float(scores.set_index("nhs_number").risk[person])
    assert changed["previous_month"] == "2026-10-01" and changed["direction"] == "up"
    assert changed["risk_now"] == pytest.approx(now) and changed["risk_then"] == pytest.approx(
        now / 2
    )
    assert changed["reasons_moved"] == [
        {"group": "age", "label": "age", "text_now": "aged 80", "percentage_points_then": 1.5,
         "percentage_points_now": 3.0, "change_percentage_points": 1.5}
    ]  # fmt: skip
    outside = scores[~scores.nhs_number.isin(members.nhs_number)].iloc[0].nhs_number
    other = client.get(f"/api/v1/patients/{outside}/risk", headers=COORD).json()
    assert other["eligible_interventions"] == []


def test_cohort_reads_are_audited(world):
    client, settings, *_ = world
    client.get("/api/v1/cohorts/falls_review", params={"page_size": 7}, headers=TEAM)
    client.get("/api/v1/cohorts", headers=TEAM)  # no patients: not a patient-level read
    store = Store(settings.serving_database_url)
    records = store.audit.records()
    store.dispose()
    assert [(r["route"], r["n_patients"]) for r in records] == [
        ("GET /api/v1/cohorts/{intervention}", 7)
    ]
