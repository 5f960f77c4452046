"""A list ranked by another model, in numbers and words: the bed days each tranche of the list
is expected to save (ranking risks x the days per outcome), said with the assumption; the
ranking columns only in ranked lists; and the "about" rows of a ranked list."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from riskstrat.cohorts.listing import (
    LISTING_COLUMNS,
    RANKING_COLUMNS,
    about_rows,
    listing_columns,
    ranking_model_words,
)
from riskstrat.cohorts.select import capacity_summary, load_cohort_config
from riskstrat.cohorts.words import bed_days_in_words, days_text
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.store.records import RunInfo

RISKS = [0.1, 0.2, 0.3, 0.4, 0.5]
MORTALITY = [0.9, 0.8, 0.5, 0.2, 0.1]


def test_each_tranche_saves_its_ranking_risks_times_the_days():
    got = capacity_summary(
        RISKS, capacity=2, effect=None, intervention_label="advance care planning",
        served_by="ADVANCE_CARE_PLAN", ranking_risks=MORTALITY, bed_days_per_event=5,
        ranking_label="12-month mortality risk",
    )  # fmt: skip
    assert got["listed"]["expected_bed_days_saved"] == pytest.approx(5 * 1.7)
    assert got["next"]["expected_bed_days_saved"] == pytest.approx(5 * 0.7)
    assert got["listed"]["expected_admissions_90d"] == pytest.approx(0.3)  # admission risk kept
    assert got["listed"]["expected_admissions_avoided"] is None
    assert got["listed_in_words"] == (
        "Reaching these 2 people with advance care planning is expected to save about 8.5 days "
        "in hospital (about 425 per 100 reached), assuming it saves 5 bed days for each person "
        "who dies within the year with a plan in place (each person's 12-month mortality risk "
        "x 5 days). No effect on emergency admissions is claimed."
    )
    assert got["next_in_words"].startswith("Reaching these 2 people")
    beyond = capacity_summary(RISKS, capacity=4, effect=None, ranking_risks=MORTALITY,
                              bed_days_per_event=5)  # fmt: skip
    assert beyond["next"]["people"] == 1
    assert beyond["next"]["expected_bed_days_saved"] == pytest.approx(0.5)


def test_no_bed_days_without_every_ranking_risk_or_the_days():
    # a list that fell back (no ranking risks), or a tranche with a member not ranked
    fell = capacity_summary(RISKS, capacity=2, effect=None, served_by="ADVANCE_CARE_PLAN",
                            ranking_risks=[None] * 5, bed_days_per_event=5)  # fmt: skip
    assert "expected_bed_days_saved" not in fell["listed"]
    assert "ranked by the risk of an emergency admission" in fell["listed_in_words"]
    partial = capacity_summary(RISKS, capacity=2, effect=None,
                               ranking_risks=[0.9, 0.8, None, 0.2, 0.1], bed_days_per_event=5)  # fmt: skip
    assert partial["listed"]["expected_bed_days_saved"] == pytest.approx(8.5)
    assert "expected_bed_days_saved" not in partial["next"]
    no_days = capacity_summary(RISKS, capacity=2, effect=0.35, ranking_risks=MORTALITY)
    assert "expected_bed_days_saved" not in no_days["listed"]
    assert no_days["listed_in_words"].startswith("Reviewing these 2 people")


def test_bed_days_in_words_at_the_edges():
    assert days_text(0) == "0" and days_text(0.01) == "less than 0.1" and days_text(2.44) == "2.4"
    assert days_text(41.5) == "42" and days_text(1250) == "1,250"
    assert bed_days_in_words(0.0, 0, intervention_label="x", per_event=5,
                             ranking_label="r").startswith("Nobody is in this part")  # fmt: skip
    one = bed_days_in_words(0.01, 1, intervention_label="x", per_event=5, ranking_label="r")
    assert one.startswith("Reaching this person with x is expected to save less than 0.1 days")
    assert "who has the outcome the r is about" in one  # no intervention code: generic words
    capped = bed_days_in_words(99.0, 2, intervention_label="x", per_event=5, ranking_label="r")
    assert "save about 10 days" in capped  # never more than everyone's days
    for bad in (0.0, -1.0, 400.0):
        with pytest.raises(ValueError, match="per_event"):
            bed_days_in_words(1.0, 2, intervention_label="x", per_event=bad, ranking_label="r")


def test_ranking_columns_only_for_ranked_lists():
    assert not set(RANKING_COLUMNS) & set(LISTING_COLUMNS)
    assert listing_columns() == LISTING_COLUMNS
    assert listing_columns("pseudonym", ranked=True)[-3:] == RANKING_COLUMNS
    assert listing_columns("pseudonym", ranked=True)[1] == "pseudonym"


def _run(**ranking_args) -> RunInfo:
    record = cohort_config_record(load_cohort_config(), **ranking_args)
    return RunInfo(
        id=1, month=date(2026, 12, 1), extract_date=date(2026, 12, 1), model_name="m",
        model_version="7", status="published", n_scored=10, n_type1_opt_outs_excluded=0,
        created_at=datetime(2026, 12, 2, tzinfo=UTC), published_at=None, duration_seconds=None,
        details={"cohort_config": record},
    )  # fmt: skip


def test_about_rows_of_a_ranked_list_without_its_ranking_risks():
    loaded: dict = {"riskstrat-death-12m": SimpleNamespace(info=SimpleNamespace(version="3"))}
    rows = dict(about_rows(run=_run(ranking_models=loaded), intervention="advance_care_planning",
                           listed_for="PCN U1", risks=[0.2, 0.1]))  # fmt: skip
    assert rows["ranked by model"] == "riskstrat-death-12m version 3 (12-month mortality risk)"
    # the CLI export does not pass the ranking risks: the rows point to the column instead
    assert rows["expected benefit"].startswith("each person's expected_bed_days_saved")
    assert rows["expected benefit source"].startswith("Product brief")
    falls = dict(about_rows(run=_run(ranking_models=loaded), intervention="falls_review",
                            listed_for="PCN U1", risks=[0.2]))  # fmt: skip
    assert "ranked by model" not in falls and "another model" not in falls["caveats"]
    # a record with no version (not ranked by that model) claims no ranking model
    unranked = dict(about_rows(run=_run(), intervention="advance_care_planning",
                               listed_for="PCN U1", risks=[0.2]))  # fmt: skip
    assert "ranked by model" not in unranked and "days in hospital" in unranked["expected benefit"]
    assert ranking_model_words({"model": "m", "label": "r", "fell_back": True}).startswith(
        "m had no champion when this run was scored"
    )
