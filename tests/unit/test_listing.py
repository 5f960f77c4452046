"""Lists as a PCN team reads them (issue 24): ranks within the practice, expected benefit in
words with its assumption (advance care planning explained, not '–'), and the "about" sheet
in every Excel list, the web download's included."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from riskstrat.cohorts.listing import (
    LISTING_COLUMNS,
    about_rows,
    benefit_in_words,
    cohort_items_json,
    listing_frame,
    no_effect_in_words,
    practice_ranks,
)
from riskstrat.cohorts.select import capacity_summary, load_cohort_config
from riskstrat.cohorts.words import intervention_label, person_benefit_in_words
from riskstrat.config import Settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.service.app import create_app
from riskstrat.store import Store
from riskstrat.store.records import CohortMember, PatientScore
from tests.support.auth import add_fixed_key, bearer, fixed_key
from tests.support.world import PCNS, key_for, sign_in

# ---- benefit in words --------------------------------------------------------------------


def test_benefit_below_one_admission_is_a_chance_with_its_assumption():
    words = benefit_in_words(0.327, 10, intervention_label="falls review", effect=0.35)
    assert words == (
        "Reviewing these 10 people gives about 1 in 3 chance of avoiding one emergency "
        "admission in the next 90 days (about 3.3 per 100 reviewed), assuming falls review "
        "cuts the emergency admission rate by 35% among people who receive it."
    )


def test_benefit_of_one_or_more_admissions_is_a_count():
    words = benefit_in_words(2.4, 30, intervention_label="falls review", effect=0.35)
    assert words.startswith(
        "Reviewing these 30 people is expected to avoid about 2 emergency admissions in the "
        "next 90 days (about 8 per 100 reviewed)"
    )
    one = benefit_in_words(1.2, 1, intervention_label="structured medication review", effect=0.25)
    assert one.startswith("Reviewing this person is expected to avoid about 1 emergency admission")
    assert "25%" in one


@pytest.mark.parametrize("avoided", [-3.0, 0.0, 1e-6, 0.05, 0.9, 1.0, 9.9, 10.0, 55.0])
@pytest.mark.parametrize("people", [1, 10, 100])
def test_benefit_is_never_impossible(avoided, people):
    words = benefit_in_words(avoided, people, intervention_label="x", effect=0.35)
    per100 = re.search(r"\((about |fewer than )?([\d.]+|none) per 100", words)
    assert per100 is not None, words
    if per100.group(2) != "none":
        assert 0 < float(per100.group(2)) <= 100
    count = re.search(r"avoid about ([\d,]+) emergency", words)
    if count:
        assert 1 <= int(count.group(1).replace(",", "")) <= people
    assert "35%" in words


def test_benefit_with_nobody_and_a_bad_effect():
    assert "Nobody" in benefit_in_words(0.0, 0, intervention_label="x", effect=0.35)
    for bad in (0.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="effect"):
            benefit_in_words(1.0, 10, intervention_label="x", effect=bad)


def test_advance_care_planning_says_what_its_evidence_is_about():
    words = no_effect_in_words(
        2.6, 10, intervention_label="advance care planning", served_by="ADVANCE_CARE_PLAN"
    )
    assert words.startswith(
        "No effect on emergency admissions is claimed for advance care planning: its "
        "evidence is about fewer days in hospital in the last months of life"
    )
    assert "ranked by the risk of an emergency admission" in words
    assert words.endswith("are expected to have about 3 emergency admissions in the next 90 days "
                          "between them.")  # fmt: skip
    assert "–" not in words
    below = no_effect_in_words(0.45, 3, intervention_label="x")
    assert "about 1 in 2 chance of an emergency admission among these 3 people" in below
    assert person_benefit_in_words(None).startswith("not estimated: no effect on admissions")
    assert person_benefit_in_words(0.327).startswith("about 1 in 3 chance")


def test_capacity_summary_says_it_in_words():
    got = capacity_summary([0.5, 0.4, 0.3, 0.2], capacity=2, effect=0.35,
                           intervention_label="falls review")  # fmt: skip
    assert got["listed_in_words"].startswith("Reviewing these 2 people gives about 1 in 3 chance")
    assert "falls review cuts" in got["listed_in_words"]
    acp = capacity_summary([0.5, 0.4], capacity=1, effect=None,
                           intervention_label="advance care planning",
                           served_by="ADVANCE_CARE_PLAN")  # fmt: skip
    assert (
        "days in hospital" in acp["listed_in_words"] and "days in hospital" in acp["next_in_words"]
    )
    assert (
        intervention_label("Falls review (multifactorial falls risk assessment)") == "falls review"
    )
    assert intervention_label("COPD review") == "COPD review"


# ---- practice ranks ----------------------------------------------------------------------


def test_practice_ranks():
    codes = ["A1", "B2", "A1", "A1", "B2"]
    assert practice_ranks(codes) == [1, 1, 2, 3, 2]
    assert practice_ranks(codes[:2], offset=20, one_practice=True) == [21, 22]
    assert practice_ranks(codes, offset=5) == [None] * 5


def _members(n: int = 6) -> list[tuple[CohortMember, PatientScore]]:
    people = synthetic_nhs_numbers(np.random.default_rng(2), n)
    out = []
    for i, person in enumerate(people):
        practice = "A11111" if i % 3 else "B22222"
        member = CohortMember("falls_review", person, practice, "U11111", 0.5 - 0.05 * i,
                              (0.5 - 0.05 * i) * 0.35, i + 1, ["aged_65_plus"])  # fmt: skip
        reasons = [
            {
                "group": "medicines",
                "text": "5 medicines issued in the last 90 days",
                "direction": "lowers",
                "log_odds": -0.1,
                "percentage_points": -0.02,
            }
        ]
        score = PatientScore(person, practice, "U11111", member.risk, 90.0, i + 1, reasons, {})
        out.append((member, score))
    return out


def test_listing_frame_ranks_within_the_practice_and_words_each_row():
    rows = _members()
    frame = listing_frame(rows, {"aged_65_plus": "aged 65 or over"})
    assert tuple(frame.columns) == LISTING_COLUMNS
    assert list(frame["rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(frame["practice_code"]) == ["B22222", "A11111", "A11111", "B22222", "A11111",
                                            "A11111"]  # fmt: skip
    assert list(frame["practice_rank"]) == [1, 1, 2, 2, 3, 4]
    assert frame["reasons"][0] == (
        "5 medicines issued in the last 90 days (lowers the risk by less than 0.1 points)"
    )
    assert frame["expected_benefit_in_words"][0].startswith("about 1 in 6 chance")
    one = listing_frame(rows[1:3], {}, offset=10, one_practice=True)
    assert list(one["practice_rank"]) == [11, 12]
    hidden = listing_frame(rows, {}, ranks_known=False)
    assert hidden["practice_rank"].isna().all()


def test_items_written_at_publication_hold_the_rank_within_the_practice():
    rows = _members()
    cohorts = pd.DataFrame(
        [
            {
                "intervention": m.intervention,
                "nhs_number": m.nhs_number,
                "practice_code": m.practice_code,
                "pcn_code": m.pcn_code,
                "risk": m.risk,
                "expected_benefit": m.expected_benefit,
                "rank": m.rank,
                "criteria": m.criteria,
            }
            for m, _ in rows
        ]
    ).iloc[::-1]  # fmt: skip  (any order in; each practice counted in rank order)
    scores = pd.DataFrame({"nhs_number": [m.nhs_number for m, _ in rows], "percentile": 50.0,
                           "reasons": [[]] * len(rows)})  # fmt: skip
    items = [json.loads(i) for i in cohort_items_json(cohorts, scores, {})]
    got = {i["nhs_number"]: i["practice_rank"] for i in items}
    assert [got[m.nhs_number] for m, _ in rows] == [1, 1, 2, 2, 3, 4]


# ---- a world of one PCN with two practices: API, pages and downloads ---------------------

TEAM = bearer(fixed_key(1))


@pytest.fixture
def two_practices(tmp_path):
    settings = Settings(home=tmp_path / "home")
    add_fixed_key(settings, "pcn_team", fixed_key(1), pcns=("U11111",))
    n = 30
    people = synthetic_nhs_numbers(np.random.default_rng(8), n)
    scores = pd.DataFrame(
        {
            "nhs_number": people,
            "practice_code": ["A11111" if i % 3 else "B22222" for i in range(n)],
            "pcn_code": "U11111",
            "risk": np.linspace(0.6, 0.02, n),
            "percentile": np.linspace(100, 3, n),
            "rank": np.arange(1, n + 1),
            "reasons": [[{"group": "age", "text": "aged 80", "direction": "raises",
                          "log_odds": 0.2, "percentage_points": 1.0}]] * n,
            "contributions": [{"age": 1.0}] * n,
        }
    )  # fmt: skip
    falls = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].copy()
    falls.insert(0, "intervention", "falls_review")
    falls["expected_benefit"], falls["rank"] = falls["risk"] * 0.35, np.arange(1, n + 1)
    falls["criteria"] = [["aged_65_plus"]] * n
    acp = falls.iloc[:8].copy()
    acp["intervention"], acp["expected_benefit"] = "advance_care_planning", np.nan
    acp["rank"], acp["criteria"] = np.arange(1, 9), [["palliative_care_register"]] * 8
    members = pd.concat([falls, acp], ignore_index=True)
    config = cohort_config_record(load_cohort_config())
    texts = {k: i["criteria"] for k, i in config["interventions"].items()}
    members = members.assign(item_json=cohort_items_json(members, scores, texts))
    store = Store(settings.serving_database_url)
    store.create_schema()
    store.runs.publish_run(
        month=date(2026, 11, 1), extract_date=date(2026, 11, 1), model_name="emergency_90d",
        model_version="7", scores=scores, cohorts=members, n_type1_opt_outs_excluded=0,
        started_at=datetime.now(UTC), details={"cohort_config": config},
    )  # fmt: skip
    store.dispose()
    with TestClient(create_app(settings)) as client:
        yield client, settings, falls


def _expected_practice_ranks(falls: pd.DataFrame) -> dict[str, int]:
    ranked = falls.sort_values("rank")
    return dict(zip(ranked.nhs_number, ranked.groupby("practice_code").cumcount() + 1, strict=True))


def test_api_items_carry_the_rank_within_the_practice(two_practices):
    client, settings, falls = two_practices
    expected = _expected_practice_ranks(falls)
    whole = client.get("/api/v1/cohorts/falls_review", params={"page_size": 7, "page": 2},
                       headers=TEAM).json()  # fmt: skip
    assert [i["practice_rank"] for i in whole["items"]] == [
        expected[i["nhs_number"]] for i in whole["items"]
    ]
    assert [i["cohort_rank"] for i in whole["items"]] == list(range(8, 15))  # kept as it was
    one = client.get("/api/v1/cohorts/falls_review",
                     params={"practice": "A11111", "page_size": 5, "page": 2},
                     headers=TEAM).json()  # fmt: skip
    assert [i["practice_rank"] for i in one["items"]] == [6, 7, 8, 9, 10]
    assert all(expected[i["nhs_number"]] == i["practice_rank"] for i in one["items"])
    # a run stored before items held it: known for a practice's list, and built alike
    store = Store(settings.serving_database_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cohort_members SET item_json = NULL")
    store.dispose()
    built = client.get("/api/v1/cohorts/falls_review",
                       params={"practice": "A11111", "page_size": 5, "page": 2},
                       headers=TEAM).json()  # fmt: skip
    assert built["items"] == one["items"]
    csv = client.get("/api/v1/cohorts/falls_review",
                     params={"practice": "B22222", "format": "csv"}, headers=TEAM)  # fmt: skip
    frame = pd.read_csv(io.StringIO(csv.text))
    assert list(frame["practice_rank"]) == list(range(1, len(frame) + 1))


def test_api_capacity_summary_in_words_and_acp_explained(two_practices):
    client, *_ = two_practices
    falls = client.get("/api/v1/cohorts/falls_review", params={"capacity": 10},
                       headers=TEAM).json()["capacity_summary"]  # fmt: skip
    assert falls["listed_in_words"].startswith("Reviewing these 10 people is expected to avoid")
    assert (
        "assuming falls review cuts the emergency admission rate by 35%" in falls["listed_in_words"]
    )
    acp = client.get("/api/v1/cohorts/advance_care_planning", params={"capacity": 5},
                     headers=TEAM).json()  # fmt: skip
    assert acp["capacity_summary"]["listed"]["expected_admissions_avoided"] is None
    assert (
        "days in hospital in the last months of life" in acp["capacity_summary"]["listed_in_words"]
    )


def test_pages_show_the_practice_rank_and_benefit_in_words(two_practices):
    client, _, falls = two_practices
    sign_in(client, fixed_key(1))
    page = client.get("/cohorts", params={"practice": "A11111", "capacity": 4})
    assert page.status_code == 200
    assert "Rank in practice" in page.text
    cells = re.findall(r'<tr><td class="num">(\d+)</td><td class="num">(\d+)</td>', page.text)
    assert [int(p) for p, _ in cells] == [1, 2, 3, 4]
    assert [int(r) for _, r in cells] == list(falls[falls.practice_code == "A11111"]["rank"][:4])
    assert "Reviewing these 4 people" in page.text and "per 100 reviewed" in page.text
    acp = client.get("/cohorts", params={"intervention": "advance_care_planning"})
    assert "not estimated: no admissions effect is claimed" in acp.text
    assert "days in hospital in the last months of life" in acp.text
    assert ">–<" not in acp.text.replace('<div class="big">–</div>', "")


def test_the_web_excel_download_carries_the_about_sheet(two_practices):
    client, settings, _ = two_practices
    sign_in(client, fixed_key(1))
    got = client.get("/cohorts/download", params={"practice": "B22222", "capacity": 5,
                                                  "format": "xlsx"})  # fmt: skip
    assert got.status_code == 200
    book = load_workbook(io.BytesIO(got.content))
    assert book.sheetnames == ["cohort", "about"]
    header = [c.value for c in book["cohort"][1]]
    ranks = [
        row[header.index("practice_rank")].value for row in book["cohort"].iter_rows(min_row=2)
    ]
    assert ranks == [1, 2, 3, 4, 5]
    about = {r[0].value: r[1].value for r in book["about"].iter_rows(min_row=2)}
    store = Store(settings.serving_database_url)
    run = store.runs.latest()
    store.dispose()
    assert about["cohort"].startswith("Falls review")
    assert about["list for"] == "practice B22222"
    assert about["month (index date)"] == "2026-11-01" and about["run id"] == str(run.id)
    assert about["model name"] == "emergency_90d" and about["model version"] == "7"
    assert about["cohort configuration version"] == run.cohort_config_version != ""
    assert "aged 65 or over" in about["criteria"]
    assert "not a diagnosis" in about["caveats"]
    assert about["identifiers"].startswith("NHS numbers")
    assert about["expected benefit"].startswith("Reviewing these 5 people")
    assert "not a falls risk prediction" in about["note"]


def test_about_rows_for_a_pseudonymous_reidentified_list(two_practices):
    _, settings, _ = two_practices
    store = Store(settings.serving_database_url)
    run = store.runs.latest()
    store.dispose()
    rows = dict(
        about_rows(
            run=run,
            intervention="advance_care_planning",
            listed_for="PCN U11111",
            risks=[0.5, 0.4],
            identifier_kind="pseudonym",
            reidentified=True,
            exported_at=datetime(2026, 11, 3, 9, 30, tzinfo=UTC),
        )
    )
    assert rows["effect assumed"] == "none claimed"
    assert "days in hospital" in rows["expected benefit"]
    assert "pseudonyms" in rows["identifiers"] and "direct care" in rows["re-identified"]
    assert rows["exported at (UTC)"] == "2026-11-03 09:30"


def test_the_served_world_download_has_the_about_sheet_too(served):
    client = served["client"]
    sign_in(client, key_for("pcn_team", PCNS[0]))
    got = client.get("/cohorts/download", params={"capacity": 3, "format": "xlsx"})
    book = load_workbook(io.BytesIO(got.content))
    about = {r[0].value: r[1].value for r in book["about"].iter_rows(min_row=2)}
    assert about["list for"] == f"PCN {PCNS[0]}" and about["people listed"] == "3"
