"""Outcomes after a run: who was admitted and reached, and expected against observed."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskstrat.cohorts.outcomes import outcome_table, summarise_outcomes
from riskstrat.cohorts.select import default_cohorts_file, load_cohort_config, poisson_ci
from riskstrat.data.contract import INTERVENTION_CODES
from riskstrat.data.extract import validate_extract
from riskstrat.features.labels import outcomes_after
from riskstrat.nhs_number import sorted_synthetic_nhs_numbers
from tests.support.extracts import write_extract

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_cohort_config(default_cohorts_file())

INDEX = date(2026, 6, 1)  # the window is [2026-06-01, 2026-08-30)
NUMBERS = [str(n) for n in sorted_synthetic_nhs_numbers(np.random.default_rng(21), 10)]
A, B, C, D, E, F, G, H, J, NOT_IN_EXTRACT = NUMBERS  # ascending
OTHER_PRACTICE = {H}
LEFT = {H}  # registered elsewhere before the index date: still followed


def day(offset: int) -> str:
    return (INDEX + timedelta(days=offset)).isoformat()


def _patient(nhs: str) -> dict[str, str]:
    other = nhs in OTHER_PRACTICE
    return {
        "nhs_number": nhs,
        "date_of_birth": "1945-03-01",
        "sex": "F",
        "ethnic_category": "A",
        "lsoa_code": "E01000001",
        "imd_decile": "4",
        "practice_code": "B82001" if other else "A81001",
        "pcn_code": "U54321" if other else "U12345",
        "registered_from": "2000-01-01",
        "registered_to": "2026-01-01" if nhs in LEFT else "",
        "date_of_death": "",
        "type1_opt_out": "false",
    }


def _admission(nhs: str, offset: int, method: str = "emergency") -> dict[str, str]:
    return {
        "nhs_number": nhs,
        "setting": "inpatient",
        "admission_method": method,
        "start_date": day(offset),
        "end_date": day(offset + 2),
        "primary_diagnosis": "",
        "attended": "",
    }


def _observation(nhs: str, offset: int, code: str) -> dict[str, str]:
    return {"nhs_number": nhs, "observed_on": day(offset), "code": code, "value": ""}


def tables() -> dict[str, list[dict[str, str]]]:
    activity = [
        _admission(A, 0),  # day 0 counts
        _admission(B, 90),  # day 90 does not
        _admission(C, 89),
        _admission(D, 5, method="elective"),  # not an emergency
        _admission(E, -1),  # before the index date
        _admission(G, 40),
        _admission(G, 50),  # two admissions: admitted once
        _admission(H, 10),  # left the practice, still followed
        {
            "nhs_number": J,
            "setting": "ae",
            "admission_method": "",
            "start_date": day(3),
            "end_date": day(3),
            "primary_diagnosis": "",
            "attended": "",
        },
    ]
    observations = [
        _observation(A, 10, "FALLS_ASSESSMENT"),
        _observation(B, -1, "FALLS_ASSESSMENT"),  # before the index date
        _observation(D, 30, "MEDICATION_REVIEW"),
        _observation(E, 89, "MEDICATION_REVIEW"),
        _observation(E, 90, "FALLS_ASSESSMENT"),  # after the window
        _observation(G, 0, "ADVANCE_CARE_PLAN"),
        _observation(J, 20, "FALLS_ASSESSMENT"),
        _observation(C, 20, "FALL"),  # not an intervention code
    ]
    people = [A, B, C, D, E, F, G, H, J]
    return {
        "patients": [_patient(n) for n in people],
        "activity": activity,
        "conditions": [],
        "medications": [],
        "observations": observations,
    }


# What the extract says happened to each person in the window (by hand).
EXPECTED_FOLLOW_UP = {
    #      admitted, falls assessment, medication review, advance care plan
    A: (1, 1, 0, 0),
    B: (0, 0, 0, 0),
    C: (1, 0, 0, 0),
    D: (0, 0, 1, 0),
    E: (0, 0, 1, 0),
    F: (0, 0, 0, 0),
    G: (1, 0, 0, 1),
    H: (1, 0, 0, 0),
    J: (0, 1, 0, 0),
    NOT_IN_EXTRACT: (0, 0, 0, 0),
}
DELIVERED = [f"delivered_{c.lower()}" for c in INTERVENTION_CODES]


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    root = write_extract(tmp_path_factory.mktemp("outcomes") / "extract", tables())
    with validate_extract(root, max_reject_share=0.0) as extract:
        assert sum(extract.summary.rows_rejected.values()) == 0
        full = outcomes_after(
            extract.con,
            index_date=INDEX,
            nhs_numbers=list(EXPECTED_FOLLOW_UP),
            delivered_codes=list(INTERVENTION_CODES),
        )
        short = outcomes_after(
            extract.con,
            index_date=INDEX,
            nhs_numbers=[A, C, G],
            delivered_codes=["FALLS_ASSESSMENT"],
            horizon_days=30,
        )
        with pytest.raises(ValueError, match="not an intervention code"):
            outcomes_after(
                extract.con, index_date=INDEX, nhs_numbers=[A], delivered_codes=["X'; DROP"]
            )
        with pytest.raises(ValueError, match="horizon_days"):
            outcomes_after(
                extract.con, index_date=INDEX, nhs_numbers=[A], delivered_codes=[], horizon_days=0
            )
    return full, short


def test_outcomes_after_flags_admissions_and_delivery_in_the_window(followed):
    full, _ = followed
    assert list(full.columns) == ["nhs_number", "admitted", *DELIVERED]
    assert full.nhs_number.tolist() == sorted(EXPECTED_FOLLOW_UP)
    got = {
        row.nhs_number: tuple(int(row[c]) for c in ["admitted", *DELIVERED])
        for _, row in full.iterrows()
    }
    assert got == EXPECTED_FOLLOW_UP


def test_outcomes_after_with_a_shorter_horizon_and_one_code(followed):
    _, short = followed
    assert list(short.columns) == ["nhs_number", "admitted", "delivered_falls_assessment"]
    got = {r.nhs_number: (r.admitted, r.delivered_falls_assessment) for r in short.itertuples()}
    # A: admitted day 0, assessed day 10; C: admitted day 89; G: admitted day 40 and 50
    assert got == {A: (1, 1), C: (0, 0), G: (0, 0)}


# -- expected against observed ------------------------------------------------------------

# intervention, nhs_number, risk; practice from the patient. Admitted / delivered as above.
MEMBERS = [
    ("falls_review", A, 0.30),  # delivered, admitted
    ("falls_review", J, 0.40),  # delivered, not admitted
    ("falls_review", B, 0.20),  # assessed before the index date: not delivered
    ("falls_review", C, 0.40),  # admitted
    ("falls_review", E, 0.50),  # assessed on day 90: not delivered
    ("falls_review", F, 0.10),
    ("falls_review", H, 0.25),  # other practice, admitted
    ("medication_review", D, 0.35),  # delivered, not admitted
    ("medication_review", E, 0.50),  # delivered, not admitted
    ("medication_review", G, 0.60),  # admitted
    ("medication_review", F, 0.10),
    ("advance_care_planning", G, 0.60),  # delivered, admitted
    ("advance_care_planning", C, 0.40),  # admitted
]


def members() -> pd.DataFrame:
    rows = [
        {
            "intervention": key,
            "nhs_number": nhs,
            "practice_code": "B82001" if nhs in OTHER_PRACTICE else "A81001",
            "pcn_code": "U54321" if nhs in OTHER_PRACTICE else "U12345",
            "risk": risk,
        }
        for key, nhs, risk in MEMBERS
    ]
    return pd.DataFrame(rows)


def test_outcome_table(followed):
    full, _ = followed
    table = outcome_table(members(), full, CONFIG)
    assert list(table.columns) == [
        "intervention",
        "practice_code",
        "pcn_code",
        "delivered",
        "people",
        "expected",
        "observed",
    ]
    got = {
        (r["intervention"], r["practice_code"], r["pcn_code"], bool(r["delivered"])): (
            r["people"],
            round(r["expected"], 9),
            r["observed"],
        )
        for r in table.to_dict(orient="records")
    }
    assert got == {
        # A (0.30, admitted) and J (0.40)
        ("falls_review", "A81001", "U12345", True): (2, 0.70, 1),
        # B 0.20, C 0.40 (admitted), E 0.50, F 0.10
        ("falls_review", "A81001", "U12345", False): (4, 1.20, 1),
        ("falls_review", "B82001", "U54321", False): (1, 0.25, 1),  # H
        ("medication_review", "A81001", "U12345", True): (2, 0.85, 0),  # D, E
        ("medication_review", "A81001", "U12345", False): (2, 0.70, 1),  # G (admitted), F
        ("advance_care_planning", "A81001", "U12345", True): (1, 0.60, 1),  # G
        ("advance_care_planning", "A81001", "U12345", False): (1, 0.40, 1),  # C
    }
    assert table.observed.dtype.kind == "i" and table.people.dtype.kind == "i"


def test_outcome_table_needs_a_follow_up_row_for_every_member(followed):
    full, _ = followed
    with pytest.raises(ValueError, match="no follow-up row"):
        outcome_table(members(), full[full.nhs_number != G], CONFIG)


def _by_intervention(summary: pd.DataFrame) -> dict[str, dict]:
    return {r["intervention"]: r for r in summary.to_dict(orient="records")}


def test_summarise_outcomes_by_intervention(followed):
    full, _ = followed
    summary = _by_intervention(summarise_outcomes(outcome_table(members(), full, CONFIG), CONFIG))
    assert set(summary) == set(CONFIG.interventions)

    # falls review: delivered A, J: expected 0.70, observed 1;
    # not delivered B, C, E, F, H: expected 1.45, observed 2
    falls = summary["falls_review"]
    exp_d, obs_d, exp_n, obs_n = 0.70, 1, 1.45, 2
    low_d, high_d = poisson_ci(obs_d)
    low_n, high_n = poisson_ci(obs_n)
    assert (falls["delivered_people"], falls["not_delivered_people"]) == (2, 5)
    assert falls["delivered_expected"] == pytest.approx(exp_d)
    assert falls["not_delivered_expected"] == pytest.approx(exp_n)
    assert (falls["delivered_observed"], falls["not_delivered_observed"]) == (obs_d, obs_n)
    assert falls["delivered_oe"] == pytest.approx(obs_d / exp_d)
    assert falls["delivered_oe_low"] == pytest.approx(low_d / exp_d)
    assert falls["delivered_oe_high"] == pytest.approx(high_d / exp_d)
    assert falls["not_delivered_oe"] == pytest.approx(obs_n / exp_n)
    assert falls["not_delivered_oe_low"] == pytest.approx(low_n / exp_n)
    assert falls["not_delivered_oe_high"] == pytest.approx(high_n / exp_n)
    assert falls["avoided_vs_expected"] == pytest.approx(exp_d - obs_d)  # -0.30
    assert falls["avoided_vs_expected_low"] == pytest.approx(exp_d - high_d)
    assert falls["avoided_vs_expected_high"] == pytest.approx(exp_d - low_d)
    # 0.70 x (2 / 1.45) - 1 = -0.0345
    assert falls["avoided_vs_not_delivered"] == pytest.approx(exp_d * obs_n / exp_n - obs_d)
    assert falls["avoided_vs_not_delivered"] == pytest.approx(-0.034483, abs=1e-6)
    assert falls["expected_avoided_by_effect"] == pytest.approx(0.70 * 0.35)

    # medication review: delivered D, E: expected 0.85, observed 0; not G, F: 0.70, 1
    meds = summary["medication_review"]
    assert (meds["delivered_people"], meds["not_delivered_people"]) == (2, 2)
    assert meds["delivered_oe"] == 0.0 and meds["delivered_oe_low"] == 0.0
    assert meds["delivered_oe_high"] == pytest.approx(3.689 / 0.85, abs=1e-3)
    assert meds["not_delivered_oe"] == pytest.approx(1 / 0.70)
    assert meds["avoided_vs_expected"] == pytest.approx(0.85)
    assert meds["avoided_vs_expected_low"] == pytest.approx(0.85 - 3.689, abs=1e-3)
    assert meds["avoided_vs_expected_high"] == pytest.approx(0.85)
    assert meds["avoided_vs_not_delivered"] == pytest.approx(0.85 / 0.70)  # x O/E - 0
    assert meds["expected_avoided_by_effect"] == pytest.approx(0.85 * 0.25)

    # advance care planning: delivered G 0.60 (admitted); not C 0.40 (admitted); no effect
    acp = summary["advance_care_planning"]
    assert acp["delivered_oe"] == pytest.approx(1 / 0.60)
    assert acp["not_delivered_oe"] == pytest.approx(2.5)
    assert acp["avoided_vs_expected"] == pytest.approx(-0.40)
    assert acp["avoided_vs_not_delivered"] == pytest.approx(0.60 * 2.5 - 1)
    assert pd.isna(acp["expected_avoided_by_effect"])  # None; NaN in a float column


def test_summarise_outcomes_by_practice(followed):
    full, _ = followed
    table = outcome_table(members(), full, CONFIG)
    summary = summarise_outcomes(table, CONFIG, by=("intervention", "practice_code"))
    rows = {(r["intervention"], r["practice_code"]): r for r in summary.to_dict("records")}
    assert set(rows) == {
        ("advance_care_planning", "A81001"),
        ("falls_review", "A81001"),
        ("falls_review", "B82001"),
        ("medication_review", "A81001"),
    }
    a81 = rows[("falls_review", "A81001")]
    assert (a81["delivered_people"], a81["not_delivered_people"]) == (2, 4)
    assert a81["not_delivered_expected"] == pytest.approx(1.20)
    assert a81["avoided_vs_not_delivered"] == pytest.approx(0.70 * (1 / 1.20) - 1)
    b82 = rows[("falls_review", "B82001")]  # only H, not reached
    assert (b82["delivered_people"], b82["not_delivered_people"]) == (0, 1)
    assert pd.isna(b82["delivered_oe"])
    assert b82["not_delivered_oe"] == pytest.approx(1 / 0.25)
    assert pd.isna(b82["avoided_vs_not_delivered"])
    assert b82["expected_avoided_by_effect"] == 0.0


def test_avoided_vs_expected_is_not_estimated_when_nobody_was_reached(followed):
    """Nobody in B82001 received a falls review, so there is nothing to estimate.

    ``avoided_vs_not_delivered`` is None there, but ``avoided_vs_expected`` reports 0 with
    a confidence interval of (-3.689, 0) admissions "avoided" among zero people: the exact
    Poisson interval for 0 events is applied to an expected count of 0.
    """
    full, _ = followed
    table = outcome_table(members(), full, CONFIG)
    summary = summarise_outcomes(table, CONFIG, by=("intervention", "practice_code"))
    b82 = summary[summary.practice_code == "B82001"].iloc[0]
    assert b82["delivered_people"] == 0
    assert pd.isna(b82["avoided_vs_expected_low"]), (
        "avoided_vs_expected_low should be None for a group with no delivered people, got "
        f"{b82['avoided_vs_expected_low']}"
    )


# -- the marks teams made on the lists ----------------------------------------------------

# Latest marks: falls review A reviewed (admitted, 0.30), J reviewed (0.40), B declined,
# C contacted; medication review G not appropriate. Everyone else is unmarked.
MARKS = pd.DataFrame(
    [
        ("falls_review", A, "reviewed"),
        ("falls_review", J, "reviewed"),
        ("falls_review", B, "declined"),
        ("falls_review", C, "contacted"),
        ("medication_review", G, "not_appropriate"),
        ("advance_care_planning", A, "reviewed"),  # A is not on that list: not counted
    ],
    columns=["intervention", "nhs_number", "status"],
)


def test_outcomes_by_the_marks_on_the_lists(followed):
    from riskstrat.cohorts.outcomes import MARK_GROUPS, mark_table, summarise_marks

    full, _ = followed
    summary = _by_intervention(summarise_marks(mark_table(members(), full, MARKS)))
    assert set(summary) == set(CONFIG.interventions)
    falls = summary["falls_review"]
    counts = {g: falls[f"{g}_people"] for g in MARK_GROUPS}
    assert counts == {
        "reviewed": 2, "declined": 1, "not_appropriate": 0, "contacted": 1, "unmarked": 3,
    }  # fmt: skip
    # reviewed A (0.30, admitted) and J (0.40); the rest B, C (admitted), E, F, H (admitted)
    assert falls["reviewed_expected"] == pytest.approx(0.70) and falls["reviewed_observed"] == 1
    assert falls["reviewed_oe"] == pytest.approx(1 / 0.70)
    low, high = poisson_ci(1)
    assert (falls["reviewed_oe_low"], falls["reviewed_oe_high"]) == pytest.approx(
        (low / 0.70, high / 0.70)
    )
    assert falls["rest_people"] == 5 and falls["rest_expected"] == pytest.approx(1.45)
    assert falls["rest_observed"] == 2 and falls["rest_oe"] == pytest.approx(2 / 1.45)
    meds = summary["medication_review"]
    assert (meds["not_appropriate_people"], meds["unmarked_people"]) == (1, 3)
    assert meds["reviewed_people"] == 0 and pd.isna(meds["reviewed_oe"])  # nobody reviewed
    assert meds["rest_people"] == 4 and meds["rest_observed"] == 1
    acp = summary["advance_care_planning"]
    assert (acp["reviewed_people"], acp["unmarked_people"]) == (0, 2)
    no_marks = summarise_marks(mark_table(members(), full, MARKS.iloc[:0]))
    assert (no_marks["unmarked_people"] == no_marks["rest_people"]).all()
    assert no_marks["rest_people"].sum() == len(members())
    with pytest.raises(ValueError, match="unknown mark statuses"):
        mark_table(members(), full, MARKS.assign(status="done"))
