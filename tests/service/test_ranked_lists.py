"""A list ranked by another model (advance care planning by 12-month mortality risk): the API
items and intervention say which model and version ranked it, each person's ranking risk and
reasons, and the bed days the top of the list is expected to save; the pages show both risks
and both models' reasons, the source of the bed days, and a warning when the list fell back
to admission risk; the downloads carry the ranking columns and say what ranked the list."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from riskstrat.config import Settings
from riskstrat.service.app import create_app
from riskstrat.store import Store
from tests.support.auth import add_fixed_key, bearer, fixed_key
from tests.support.ranked import (
    LABEL,
    MORTALITY,
    MORTALITY_VERSION,
    PCN,
    PER_EVENT,
    publish_ranked,
)
from tests.support.world import sign_in

TEAM, COORD = fixed_key(1), fixed_key(2)
ACP = "/api/v1/cohorts/advance_care_planning"


def _client(tmp_path, *, fell_back: bool):
    settings = Settings(home=tmp_path / "home")
    made = publish_ranked(settings, fell_back=fell_back)
    add_fixed_key(settings, "pcn_team", TEAM, pcns=(PCN,))
    add_fixed_key(settings, "care_coordinator", COORD, pcns=(PCN,))
    client = TestClient(create_app(settings))
    return client, settings, made


@pytest.fixture
def ranked(tmp_path):
    client, settings, made = _client(tmp_path, fell_back=False)
    with client:
        acp = made["members"][made["members"].intervention == "advance_care_planning"]
        yield client, settings, acp.sort_values("rank").reset_index(drop=True), made["scores"]
    client.app.state.store.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def fell_back(tmp_path):
    client, settings, _ = _client(tmp_path, fell_back=True)
    with client:
        yield client, settings
    client.app.state.store.dispose()  # type: ignore[attr-defined]


def _mortality(acp: pd.DataFrame) -> list[float]:
    return [r["risk"] for r in acp["ranking"]]


def test_api_items_and_intervention_carry_the_ranking_model(ranked):
    client, _, acp, _ = ranked
    body = client.get(ACP, params={"page_size": 4}, headers=bearer(TEAM)).json()
    info = body["intervention"]
    assert info["ranking"] == {"model": MORTALITY, "version": MORTALITY_VERSION, "label": LABEL,
                               "fell_back": False}  # fmt: skip
    assert info["bed_days"]["per_event"] == PER_EVENT and info["bed_days"]["source"]
    items = body["items"]
    assert [i["nhs_number"] for i in items] == list(acp.nhs_number[:4])
    first = items[0]
    assert first["ranking"]["risk"] == pytest.approx(0.81)
    assert first["ranking"]["expected_bed_days"] == pytest.approx(0.81 * PER_EVENT)
    assert first["ranking"]["reasons"][0]["text"] == "severe frailty"
    assert first["reasons"][0]["text"] == "aged 80"  # the admission reasons stay
    assert first["risk"] == pytest.approx(acp.risk[0])
    # ranked by mortality, which here runs opposite to admission risk
    assert [i["ranking"]["risk"] for i in items] == sorted(
        (i["ranking"]["risk"] for i in items), reverse=True
    )
    assert [i["risk"] for i in items] == sorted(i["risk"] for i in items)
    falls = client.get("/api/v1/cohorts/falls_review", params={"page_size": 2},
                       headers=bearer(TEAM)).json()  # fmt: skip
    assert falls["intervention"]["ranking"] is None and falls["intervention"]["bed_days"] is None
    assert all(i["ranking"] is None for i in falls["items"])


def test_capacity_summary_gives_the_bed_days_of_each_tranche(ranked):
    client, settings, acp, _ = ranked
    summary = client.get(ACP, params={"capacity": 3}, headers=bearer(TEAM)).json()[
        "capacity_summary"
    ]
    mortality = _mortality(acp)
    listed, nxt = summary["listed"], summary["next"]
    assert listed["expected_bed_days_saved"] == pytest.approx(PER_EVENT * sum(mortality[:3]))
    assert nxt["expected_bed_days_saved"] == pytest.approx(PER_EVENT * sum(mortality[3:6]))
    assert listed["expected_admissions_90d"] == pytest.approx(acp.risk[:3].sum(), abs=1e-3)
    assert listed["expected_admissions_avoided"] is None
    words = summary["listed_in_words"]
    assert words.startswith(  # 5 x (0.81 + 0.77 + 0.73) = 11.55 days
        "Reaching these 3 people with advance care planning is expected to save about 12 days "
        "in hospital (about 385 per 100 reached), assuming it saves 5 bed days for each person "
        "who dies within the year with a plan in place"
    )
    assert f"(each person's {LABEL} x 5 days)" in words
    assert "No effect on emergency admissions is claimed" in words
    assert "days in hospital" in summary["next_in_words"]
    assert summary["bed_days_source"].startswith("Product brief")
    # With the top person marked done and hidden, the tranches move on together: the
    # mortality risks stay with their people.
    store = Store(settings.serving_database_url)
    store.marks.record(person=acp.nhs_number[0], intervention="advance_care_planning",
                       status="reviewed", by="t", pcn_code=PCN, identifier_kind="nhs_number")  # fmt: skip
    store.dispose()
    hidden = client.get(ACP, params={"capacity": 3, "hide_done": True},
                        headers=bearer(TEAM)).json()["capacity_summary"]  # fmt: skip
    assert hidden["listed"]["expected_bed_days_saved"] == pytest.approx(
        PER_EVENT * sum(mortality[1:4])
    )
    assert hidden["listed"]["expected_admissions_90d"] == pytest.approx(
        acp.risk[1:4].sum(), abs=1e-3
    )
    falls = client.get("/api/v1/cohorts/falls_review", params={"capacity": 3},
                       headers=bearer(TEAM)).json()["capacity_summary"]  # fmt: skip
    assert falls["listed"]["expected_bed_days_saved"] is None and falls["bed_days_source"] is None


def test_csv_has_the_ranking_columns_only_for_the_ranked_list(ranked):
    client, _, acp, _ = ranked
    got = client.get(ACP, params={"format": "csv", "page_size": 5}, headers=bearer(TEAM))
    frame = pd.read_csv(io.StringIO(got.text), dtype={"nhs_number": str})
    assert {"ranking_risk_percent", "expected_bed_days_saved", "ranking_reasons"} <= set(
        frame.columns
    )
    assert list(frame.ranking_risk_percent) == [round(100 * r, 1) for r in _mortality(acp)[:5]]
    assert frame.ranking_reasons[0] == "severe frailty (raises the risk by 6.0 points)"
    assert frame.reasons[0] == "aged 80 (raises the risk by 1.0 points)"
    falls = client.get("/api/v1/cohorts/falls_review", params={"format": "csv"},
                       headers=bearer(TEAM))  # fmt: skip
    assert "ranking_risk_percent" not in pd.read_csv(io.StringIO(falls.text)).columns
    sign_in(client, TEAM)
    web = client.get("/cohorts/download", params={"intervention": "advance_care_planning",
                                                  "capacity": 4, "format": "csv"})  # fmt: skip
    web_frame = pd.read_csv(io.BytesIO(web.content), encoding="utf-8-sig")
    assert list(web_frame.expected_bed_days_saved) == pytest.approx(
        [round(PER_EVENT * r, 2) for r in _mortality(acp)[:4]]
    )
    web_falls = client.get("/cohorts/download", params={"capacity": 4, "format": "csv"})
    assert "ranking_reasons" not in web_falls.content.decode("utf-8-sig").splitlines()[0]


def test_the_page_shows_both_risks_and_both_models_reasons(ranked):
    client, _, acp, _ = ranked
    sign_in(client, TEAM)
    page = client.get("/cohorts", params={"intervention": "advance_care_planning",
                                          "capacity": 5}).text  # fmt: skip
    assert f"Ranked by {LABEL} ({MORTALITY} v{MORTALITY_VERSION})" in page
    assert 'id="ranking-fell-back"' not in page
    assert "12-month mortality risk and its main reasons</th>" in page
    assert "Emergency admission risk (90 days)</th>" in page
    rows = re.findall(r"<tr><td class=\"num\">.*?</tr>", page, flags=re.S)
    assert len(rows) == 5
    for row, (_, person) in zip(rows, acp.head(5).iterrows(), strict=True):
        assert f"/patients/{person.nhs_number}" in row
        assert f"<strong>{100 * person.ranking['risk']:.1f}%</strong>" in row
        assert f"{100 * person.risk:.1f}%" in row
        assert "severe frailty (raises the risk by 6.0 points)" in row
        assert "aged 80 (raises the risk by 1.0 points)" in row
        assert f"about {PER_EVENT * person.ranking['risk']:.1f} days" in row
    # the expected benefit in bed days, with where the figure comes from
    days = PER_EVENT * sum(_mortality(acp)[:5])
    assert re.search(rf'id="bed-days-listed"><div class="big">{days:.1f}</div>', page)
    assert 'id="bed-days-source"' in page and "Source: Product brief" in page
    assert "Reaching these 5 people with advance care planning" in page
    falls = client.get("/cohorts", params={"capacity": 5}).text
    assert "mortality" not in falls and 'id="bed-days-source"' not in falls


def test_the_patient_page_and_api_show_the_ranking_of_a_membership(ranked):
    client, _, acp, _ = ranked
    person = acp.iloc[0]
    api = client.get(f"/api/v1/patients/{person.nhs_number}/risk", headers=bearer(COORD)).json()
    [eligible] = [e for e in api["eligible_interventions"]
                  if e["intervention"] == "advance_care_planning"]  # fmt: skip
    assert eligible["ranking"]["risk"] == pytest.approx(0.81)
    assert eligible["ranking"]["reasons"][0]["text"] == "severe frailty"
    sign_in(client, COORD)
    page = client.get(f"/patients/{person.nhs_number}").text
    cell = re.search(r'<div id="ranking-advance_care_planning">(.*?)</div>', page, flags=re.S)
    assert cell is not None
    assert f"12-month mortality risk: 81.0%</strong> ({MORTALITY} v{MORTALITY_VERSION})" in (
        cell.group(1)
    )
    assert "<li>severe frailty (raises the risk by 6.0 points)</li>" in cell.group(1)
    assert "about 4.1 days in hospital saved" in page  # 0.81 x 5 = 4.05
    assert "aged 80" in page  # the admission reasons, above


def test_the_excel_about_sheet_says_what_ranked_the_list(ranked):
    client, _, acp, _ = ranked
    sign_in(client, TEAM)
    got = client.get("/cohorts/download", params={"intervention": "advance_care_planning",
                                                  "capacity": 4, "format": "xlsx"})  # fmt: skip
    book = load_workbook(io.BytesIO(got.content))
    about = {r[0].value: r[1].value for r in book["about"].iter_rows(min_row=2)}
    assert about["ranked by model"] == f"{MORTALITY} version {MORTALITY_VERSION} ({LABEL})"
    days = PER_EVENT * sum(_mortality(acp)[:4])
    assert days == pytest.approx(15.0)  # 5 x (0.81 + 0.77 + 0.73 + 0.69)
    assert about["expected benefit"].startswith(
        "Reaching these 4 people with advance care planning is expected to save about 15 "
        "days in hospital"
    )
    assert about["expected benefit source"].startswith("Product brief")
    assert "5 bed days saved for each person" in about["effect assumed"]
    assert "emergency admission in the 90 days" in about["caveats"]
    assert f"ranked by the {LABEL} of another model ({MORTALITY})" in about["caveats"]
    header = [c.value for c in book["cohort"][1]]
    assert header[-3:] == ["ranking_risk_percent", "expected_bed_days_saved", "ranking_reasons"]


def test_a_list_that_fell_back_says_so(fell_back):
    client, _ = fell_back
    body = client.get(ACP, params={"capacity": 3}, headers=bearer(TEAM)).json()
    assert body["intervention"]["ranking"]["fell_back"] is True
    assert body["intervention"]["ranked_by"] == f"admission risk ({MORTALITY} has no champion yet)"
    assert all(i["ranking"] is None for i in body["items"])
    summary = body["capacity_summary"]
    assert summary["listed"]["expected_bed_days_saved"] is None
    assert summary["bed_days_source"] is None
    assert "ranked by the risk of an emergency admission" in summary["listed_in_words"]
    sign_in(client, TEAM)
    page = client.get("/cohorts", params={"intervention": "advance_care_planning"}).text
    warning = re.search(r'<p class="error" id="ranking-fell-back">(.*?)</p>', page, flags=re.S)
    assert warning is not None and "ranked by admission risk" in warning.group(1)
    assert f"its model ({MORTALITY}) had no champion" in warning.group(1)
    assert "Ranked by admission risk" in page and 'id="bed-days-listed"' not in page
    csv = client.get("/cohorts/download", params={"intervention": "advance_care_planning",
                                                  "format": "csv"})  # fmt: skip
    assert "ranking_risk_percent" not in csv.content.decode("utf-8-sig").splitlines()[0]
    xlsx = client.get("/cohorts/download", params={"intervention": "advance_care_planning",
                                                   "format": "xlsx"})  # fmt: skip
    book = load_workbook(io.BytesIO(xlsx.content))
    about = {r[0].value: r[1].value for r in book["about"].iter_rows(min_row=2)}
    assert about["ranked by model"].startswith(f"{MORTALITY} had no champion")
    assert "expected benefit source" not in about
    assert "another model" not in about["caveats"]
