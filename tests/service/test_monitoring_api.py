"""``GET /api/v1/monitoring``: analysts only; the latest result and the history, as stored by
``riskstrat monitor``; the analyst page shows the status and a banner when red."""

from __future__ import annotations

from datetime import date

import pytest

from tests.support.auth import bearer
from tests.support.world import MONTH, PCNS, key_for

ANALYST = bearer(key_for("analyst", PCNS[0]))


def _payload(status: str) -> dict:
    return {
        "status": {"auroc": "green", "oe": status, "feature_psi": "green", "overall": status},
        "months": [],
        "drift": [],
        "rejects": [],
        "notes": ["No published month's 90-day outcomes have matured."],
    }


def _store_result(served, status: str, check_date: date) -> None:
    served["client"].app.state.store.monitoring.replace(
        run_id=served["run_id"], month=MONTH, check_date=check_date, model_name="m",
        model_version="3", status=status, payload=_payload(status),
    )  # fmt: skip


@pytest.mark.parametrize("role", ["pcn_team", "care_coordinator", "admin"])
def test_only_analysts_read_monitoring(served, role):
    response = served["client"].get("/api/v1/monitoring", headers=bearer(key_for(role, PCNS[0])))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


def test_no_result_yet(served):
    response = served["client"].get("/api/v1/monitoring", headers=ANALYST)
    assert response.status_code == 200
    assert response.json() == {"latest": None, "history": []}


def test_latest_and_history(served):
    _store_result(served, "amber", date(2026, 12, 1))
    _store_result(served, "red", date(2027, 1, 1))
    body = served["client"].get("/api/v1/monitoring", headers=ANALYST).json()
    assert [h["status"] for h in body["history"]] == ["amber", "red"]
    latest = body["latest"]
    assert latest["status"] == "red" and latest["check_date"] == "2027-01-01"
    assert latest["checks"] == {"auroc": "green", "oe": "red", "feature_psi": "green"}
    assert latest["run_id"] == served["run_id"] and latest["month"] == MONTH.isoformat()
    assert latest["payload"]["notes"] == _payload("red")["notes"]
    assert set(latest) == {"run_id", "month", "check_date", "model_name", "model_version",
                           "status", "checks", "computed_at", "payload"}  # fmt: skip


def _fake_champion(served, monkeypatch) -> None:
    from datetime import UTC, datetime

    from riskstrat.modelling.registry import ModelVersionInfo

    info = ModelVersionInfo(name="m", version="3", aliases=("champion",), run_id=None,
                            created_at=datetime(2026, 11, 1, tzinfo=UTC),
                            metrics={"validation_auroc": 0.8}, tags={})  # fmt: skip
    registry = served["client"].app.state.registry
    monkeypatch.setattr(registry, "describe", lambda *a, **k: info)


def test_the_model_page_shows_the_status_and_a_banner_when_red(served, monkeypatch):
    from tests.support.world import sign_in

    client = served["client"]
    _fake_champion(served, monkeypatch)
    sign_in(client, key_for("analyst", PCNS[0]))
    page = client.get("/model").text
    assert "No monitoring yet" in page and "monitoring-red" not in page
    _store_result(served, "amber", date(2026, 12, 1))
    page = client.get("/model").text
    assert 'overall <strong class="status-amber">amber</strong>' in page
    assert "monitoring-red" not in page
    _store_result(served, "red", date(2027, 1, 1))
    page = client.get("/model").text
    assert 'id="monitoring-red"' in page and "Monitoring is red</strong> (oe)" in page
