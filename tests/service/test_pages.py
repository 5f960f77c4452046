"""The web pages through HTTP: sign-in, roles, scope, audit, downloads."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from riskstrat.store import Store
from tests.support.world import PCNS, key_for, sign_in


@pytest.fixture
def site(served):
    return served["client"], served["settings"], served["scores"]


def test_pages_need_a_session(site):
    client, *_ = site
    for path in ("/cohorts", "/patients/9990000123", "/model"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    page = client.get("/login")
    assert page.status_code == 200 and '<label for="key">' in page.text
    assert "style-src 'unsafe-inline'" in page.headers["content-security-policy"]


def test_a_wrong_key_does_not_sign_in(site):
    client, *_ = site
    response = client.post("/login", content="key=rsk_000000000000_nope",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 401 and "not recognised" in response.text
    assert "riskstrat_session" not in response.headers.get("set-cookie", "")


def test_cohort_page_shows_only_my_pcn_and_is_audited(site):
    client, settings, scores = site
    sign_in(client, key_for("pcn_team", PCNS[0]))
    page = client.get("/cohorts", params={"capacity": 5})
    assert page.status_code == 200
    mine = scores[scores.pcn_code == PCNS[0]].sort_values("rank")
    theirs = scores[scores.pcn_code == PCNS[1]]
    for n in mine.nhs_number.iloc[:5]:
        assert f"/patients/{n}" in page.text
    assert not any(n in page.text for n in theirs.nhs_number)
    assert "expected admissions avoided" in page.text
    csv = client.get("/cohorts/download", params={"capacity": 5, "format": "csv"})
    frame = pd.read_csv(io.BytesIO(csv.content), dtype=str, encoding="utf-8-sig")
    assert list(frame.nhs_number.str.replace(" ", "")) == list(mine.nhs_number.iloc[:5])
    xlsx = client.get("/cohorts/download", params={"capacity": 5, "format": "xlsx"})
    assert xlsx.content[:2] == b"PK"
    store = Store(settings.serving_database_url)
    routes = [r["route"] for r in store.audit.records()]
    store.dispose()
    assert routes == [
        "GET /cohorts (page)",
        "GET /cohorts/download (csv)",
        "GET /cohorts/download (xlsx)",
    ]


def test_patient_page_in_and_out_of_scope(site):
    client, _settings, scores = site
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    mine = scores[scores.pcn_code == PCNS[0]].iloc[0]
    theirs = scores[scores.pcn_code == PCNS[1]].iloc[0]
    page = client.get(f"/patients/{mine.nhs_number}")
    assert page.status_code == 200 and f"{100 * mine.risk:.1f}%" in page.text
    assert "aged 80" in page.text and "Falls review" in page.text
    other = client.get(f"/patients/{theirs.nhs_number}")
    assert other.status_code == 404 and theirs.nhs_number not in other.text
    # Care coordinators see their PCNs' lists (issue 24: they mark people on them), but not
    # the downloads or the model page, which are other roles' pages.
    assert client.get("/cohorts").status_code == 200
    assert client.get("/cohorts/download").status_code == 403
    assert client.get("/model").status_code == 403


def test_sign_out_ends_the_session(site):
    client, *_ = site
    sign_in(client, key_for("pcn_team", PCNS[0]))
    assert client.get("/cohorts").status_code == 200
    client.post("/logout")
    assert client.get("/cohorts", follow_redirects=False).status_code == 303
