"""The API through its HTTP interface, on a store filled with a synthetic published run."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from riskstrat.config import Settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.service.app import create_app
from riskstrat.store import Store
from riskstrat.store.audit import pseudonymise
from tests.support.auth import add_fixed_key, bearer, fixed_key

TEAM = bearer(fixed_key(1))
COORD = bearer(fixed_key(2))
ANALYST = bearer(fixed_key(3))
TOKEN = fixed_key(1)


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(home=tmp_path / "home")
    for n, role in ((1, "pcn_team"), (2, "care_coordinator"), (3, "analyst")):
        add_fixed_key(settings, role, fixed_key(n))
    return settings


@pytest.fixture
def client(settings) -> TestClient:
    with TestClient(create_app(settings)) as c:
        yield c


def _scores(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk = rng.beta(1, 30, size=n)
    frame = pd.DataFrame(
        {
            "nhs_number": synthetic_nhs_numbers(rng, n),
            "practice_code": rng.choice(["A81001", "A81002", "B82001"], size=n),
            "risk": risk,
        }
    )
    frame["pcn_code"] = np.where(frame.practice_code.str.startswith("A"), "U12345", "U54321")
    frame["rank"] = frame.risk.rank(method="first", ascending=False).astype(int)
    frame["percentile"] = frame.risk.rank(method="max", pct=True) * 100
    frame["reasons"] = [
        [
            {
                "group": "age",
                "text": "aged 80",
                "direction": "raises",
                "log_odds": 0.5,
                "percentage_points": 1.2,
            }
        ]
    ] * n
    frame["contributions"] = [{"age": 1.2}] * n
    return frame


def _publish(settings: Settings, scores: pd.DataFrame, month=date(2026, 11, 1)) -> int:
    store = Store(settings.serving_database_url)
    store.create_schema()
    run_id = store.runs.publish_run(
        month=month,
        extract_date=date(2026, 11, 1),
        model_name="m",
        model_version="3",
        scores=scores,
        n_type1_opt_outs_excluded=2,
        started_at=datetime.now(UTC),
        details={},
    )
    store.dispose()
    return run_id


def test_health_needs_no_token(client):
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(
    "path", ["/api/v1/risk-list", "/api/v1/patients/9998336376/risk", "/api/v1/models/current"]
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_every_data_route_needs_the_token(client, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_empty_store_says_no_run_yet(client):
    response = client.get("/api/v1/risk-list", headers=TEAM)
    assert response.status_code == 404 and "riskstrat score" in response.json()["detail"]
    assert client.get("/api/v1/patients/9998336376/risk", headers=COORD).status_code == 404


def test_no_champion_model_is_404(client):
    response = client.get("/api/v1/models/current", headers=ANALYST)
    assert response.status_code == 404 and "riskstrat train" in response.json()["detail"]


def test_cohort_is_ranked_and_paged(client, settings):
    scores = _scores(120)
    _publish(settings, scores)
    pcn = scores[scores.pcn_code == "U12345"].sort_values("risk", ascending=False)
    first = client.get("/api/v1/risk-list", params={"pcn": "U12345", "page_size": 25}, headers=TEAM)
    assert first.status_code == 200
    body = first.json()
    assert body["total"] == len(pcn) and body["page"] == 1 and body["page_size"] == 25
    assert [i["nhs_number"] for i in body["items"]] == list(pcn.nhs_number[:25])
    risks = [i["risk"] for i in body["items"]]
    assert risks == sorted(risks, reverse=True)
    assert all(i["pcn_code"] == "U12345" and i["reasons"] for i in body["items"])
    second = client.get(
        "/api/v1/risk-list", params={"pcn": "U12345", "page_size": 25, "page": 2}, headers=TEAM
    ).json()
    assert [i["nhs_number"] for i in second["items"]] == list(pcn.nhs_number[25:50])
    beyond = client.get("/api/v1/risk-list", params={"pcn": "U12345", "page": 99}, headers=TEAM)
    assert beyond.status_code == 200 and beyond.json()["items"] == []


def test_cohort_for_a_practice(client, settings):
    scores = _scores(60)
    _publish(settings, scores)
    body = client.get("/api/v1/risk-list", params={"practice": "B82001"}, headers=TEAM).json()
    assert body["total"] == int((scores.practice_code == "B82001").sum())
    assert {i["practice_code"] for i in body["items"]} == {"B82001"}


@pytest.mark.parametrize(
    "params",
    [{"pcn": "12345"}, {"practice": "a81001"}, {"page": 0}, {"page_size": 0}, {"page_size": 501}],
)
def test_cohort_rejects_bad_parameters(client, settings, params):
    _publish(settings, _scores(10))
    assert client.get("/api/v1/risk-list", params=params, headers=TEAM).status_code == 422


def test_latest_run_is_served(client, settings):
    _publish(settings, _scores(10, seed=1), month=date(2026, 10, 1))
    newer = _scores(12, seed=2)
    run_id = _publish(settings, newer, month=date(2026, 11, 1))
    body = client.get("/api/v1/risk-list", headers=TEAM).json()
    assert body["run"]["run_id"] == run_id and body["total"] == 12


def test_patient_risk(client, settings):
    scores = _scores(30)
    _publish(settings, scores)
    person = scores.iloc[7]
    body = client.get(f"/api/v1/patients/{person.nhs_number}/risk", headers=COORD).json()
    assert body["risk"] == pytest.approx(person.risk)
    assert body["rank"] == person["rank"] and body["percentile"] == pytest.approx(person.percentile)
    assert body["run"]["model_version"] == "3" and body["reasons"][0]["text"] == "aged 80"


@pytest.mark.parametrize("bad", ["123", "99983363760", "999833637X"])
def test_malformed_nhs_number_is_422(client, settings, bad):
    _publish(settings, _scores(5))
    assert client.get(f"/api/v1/patients/{bad}/risk", headers=COORD).status_code == 422


@pytest.mark.parametrize("bad", ["9998336377", "9990000000"])
def test_nhs_number_with_a_wrong_check_digit_is_404_and_says_so(client, settings, bad):
    # Ten digits is the documented shape; a failing Modulus 11 check means no such person.
    _publish(settings, _scores(5))
    response = client.get(f"/api/v1/patients/{bad}/risk", headers=COORD)
    assert response.status_code == 404 and "Modulus 11" in response.json()["detail"]


def test_unknown_patient_is_404(client, settings):
    scores = _scores(5)
    _publish(settings, scores)
    rng = np.random.default_rng(99)
    unknown = next(n for n in synthetic_nhs_numbers(rng, 50) if n not in set(scores.nhs_number))
    assert client.get(f"/api/v1/patients/{unknown}/risk", headers=COORD).status_code == 404


def test_patient_level_reads_are_recorded_without_nhs_numbers(client, settings):
    scores = _scores(20)
    _publish(settings, scores)
    person = scores.iloc[0].nhs_number
    client.get(f"/api/v1/patients/{person}/risk", headers={**COORD, "X-Purpose": "MDT"})
    client.get("/api/v1/risk-list", params={"page_size": 5}, headers=TEAM)
    client.get("/api/v1/patients/9998336377/risk", headers=COORD)  # invalid: no data, no record
    store = Store(settings.serving_database_url)
    records = store.audit.records()
    store.dispose()
    assert [r["route"] for r in records] == [
        "GET /api/v1/patients/{nhs_number}/risk",
        "GET /api/v1/risk-list",
    ]
    key = settings.pseudonym_key.get_secret_value()
    assert records[0]["patients"] == [pseudonymise(person, key)]
    assert records[0]["purpose"] == "MDT" and records[1]["n_patients"] == 5
    assert person not in str(records)


def test_openapi_docs_are_served(client):
    spec = client.get("/openapi.json").json()
    assert "/api/v1/patients/{nhs_number}/risk" in spec["paths"]
    assert client.get("/docs").status_code == 200
