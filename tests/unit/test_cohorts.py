"""Intervention cohorts on tiny hand-made frames, with the real criteria file."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml

from riskstrat.cohorts.select import (
    Criterion,
    Intervention,
    build_cohort,
    build_cohorts,
    capacity_summary,
    check_columns,
    default_cohorts_file,
    evaluate_condition,
    load_cohort_config,
    oe_ratio,
    poisson_ci,
    served_counts,
    what_changed,
)
from riskstrat.explain.reasons import group_contributions, group_matrix
from riskstrat.features.build import feature_columns
from riskstrat.modelling.model import Calibrator
from riskstrat.nhs_number import is_valid_nhs_number, sorted_synthetic_nhs_numbers

ROOT = Path(__file__).resolve().parents[2]
COHORTS_FILE = default_cohorts_file()
CONFIG = load_cohort_config(COHORTS_FILE)

# Synthetic NHS numbers (999 range), ascending.
NHS = [str(n) for n in sorted_synthetic_nhs_numbers(np.random.default_rng(11), 8)]
DAYS_SINCE = (
    "days_since_falls_assessment",
    "days_since_medication_review",
    "days_since_advance_care_plan",
)


def person(nhs: str = NHS[0], **values: Any) -> dict[str, Any]:
    """One person with every column the criteria read: nothing recorded, risk 5%."""
    row: dict[str, Any] = {c: 0.0 for c in CONFIG.columns()}
    row |= {c: np.nan for c in DAYS_SINCE}
    row |= {"cfs_latest": np.nan, "bmi_latest": np.nan, "risk": 0.05}
    row |= {"nhs_number": nhs, "practice_code": "A81001", "pcn_code": "U12345"}
    unknown = set(values) - set(row)
    assert not unknown, f"not a column of the scoring frame: {unknown}"
    return row | values


def frame(*people: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(people))


def criteria_of(intervention: str, **values: Any) -> list[str] | None:
    """The criteria listed for one person, or None when they are not in the cohort."""
    members = build_cohort(frame(person(**values)), CONFIG.get(intervention))
    assert len(members) <= 1
    return None if members.empty else list(members["criteria"].iloc[0])


def test_synthetic_numbers_are_valid_and_in_the_999_range():
    assert all(n.startswith("999") and is_valid_nhs_number(n) for n in NHS)
    assert sorted(NHS) == NHS and len(set(NHS)) == len(NHS)


# -- configuration ------------------------------------------------------------------------


def test_the_real_config_loads_with_version_and_digest():
    raw = COHORTS_FILE.read_bytes()
    assert CONFIG.version == yaml.safe_load(raw)["version"] != ""
    assert CONFIG.digest == hashlib.sha256(raw).hexdigest()[:16]
    assert set(CONFIG.interventions) == {
        "falls_review",
        "medication_review",
        "advance_care_planning",
    }
    falls = CONFIG.get("falls_review")
    assert falls.key == "falls_review" and falls.effect == 0.35
    assert falls.served_column == "days_since_falls_assessment" and falls.lookback_days == 365
    assert CONFIG.get("medication_review").effect == 0.25
    acp = CONFIG.get("advance_care_planning")
    assert acp.effect is None and acp.lookback_days is None
    assert acp.ranked_by == "12-month mortality risk (expected bed days saved)"
    assert acp.rank_by is not None and acp.rank_by.model == "riskstrat-death-12m"
    assert acp.bed_days is not None and acp.bed_days.per_event == 5
    assert CONFIG.model == "riskstrat-emergency-admission-90d"
    assert CONFIG.ranking_models() == ["riskstrat-death-12m"]
    assert falls.ranked_by == "expected admissions avoided"
    assert set(DAYS_SINCE) | {"risk", "age_years", "emergency_admissions_180d"} <= CONFIG.columns()
    with pytest.raises(KeyError, match="unknown intervention 'nope'"):
        CONFIG.get("nope")


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = COHORTS_FILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / "cohorts.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_a_copy_of_the_config_loads_and_a_changed_file_changes_the_digest(tmp_path):
    same = _write_variant(tmp_path, 'version: "2026.12-1"', 'version: "2026.12-1"')
    assert load_cohort_config(same).digest == CONFIG.digest
    bumped = _write_variant(tmp_path, 'version: "2026.12-1"', 'version: "2026.12-9"')
    changed = load_cohort_config(bumped)
    assert changed.version == "2026.12-9" and changed.digest != CONFIG.digest


@pytest.mark.parametrize(
    "bad",
    [
        "age_years => 65",
        "import os",
        "age_years >= sixty-five",
        "Age_years >= 65",
        "age_years >= 65; import os",
        "__import__('os').system('true') >= 1",
        "age_years",
    ],
)
def test_a_bad_condition_string_is_rejected_naming_the_file(tmp_path, bad):
    path = _write_variant(tmp_path, "when: age_years >= 65", f'when: "{bad}"')
    with pytest.raises(ValueError) as info:
        load_cohort_config(path)
    assert str(path) in str(info.value)
    assert "is not a condition" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # an unknown key on an intervention
        ("    effect: 0.35\n", "    effect: 0.35\n    colour: blue\n"),
        # an unknown top-level key
        ('version: "2026.12-1"\n', 'version: "2026.12-1"\nowner: someone\n'),
        # an unknown key on a criterion
        ("            text: aged 65 or over\n", "            text: aged 65 or over\n            x: 1\n"),
        # an unknown intervention code
        ("served_by: FALLS_ASSESSMENT", "served_by: FALLS_CLINIC"),
        # an empty any: and a nested condition that is not all:/any:
        ("                - any:\n                    - falls_risk_drug_classes_90d >= 1",
         "                - some:\n                    - falls_risk_drug_classes_90d >= 1"),
        # an effect outside (0, 1)
        ("effect: 0.25", "effect: 1.5"),
    ],
)  # fmt: skip
def test_unknown_keys_and_bad_values_are_rejected_naming_the_file(tmp_path, old, new):
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(ValueError) as info:
        load_cohort_config(path)
    assert str(path) in str(info.value)


def test_duplicate_criterion_keys_are_rejected(tmp_path):
    path = _write_variant(tmp_path, "key: mobility_or_gait_problem", "key: aged_65_plus")
    with pytest.raises(ValueError, match="criterion keys must be unique"):
        load_cohort_config(path)


def test_a_criterion_checks_its_condition():
    ok = Criterion(key="k", text="t", when={"all": ["a >= 1", {"any": ["b == 0", "c < -2.5"]}]})
    assert ok.when == {"all": ["a >= 1", {"any": ["b == 0", "c < -2.5"]}]}
    bads: list[Any] = ["import os", {"all": []}, {"none": ["a >= 1"]}, 3, {"all": ["a"], "x": []}]
    for bad in bads:
        with pytest.raises(ValueError):
            Criterion(key="k", text="t", when=bad)


def test_check_columns_names_what_is_missing():
    scores = frame(person()).drop(columns=["efi", "days_since_medication_review"])
    with pytest.raises(ValueError, match="days_since_medication_review, efi"):
        check_columns(CONFIG, list(scores.columns))
    with pytest.raises(ValueError, match="efi"):
        build_cohorts(scores, CONFIG)


# -- evaluate_condition -------------------------------------------------------------------


X = pd.DataFrame(
    {
        "x": [1.0, 2.0, 3.0, np.nan],
        "y": [1, 0, 1, 1],
        "z": [-3.0, -1.0, np.nan, -5.0],
    }
)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("x >= 2", [False, True, True, False]),
        ("x > 2", [False, False, True, False]),
        ("x <= 2", [True, True, False, False]),
        ("x < 2", [True, False, False, False]),
        ("x == 2", [False, True, False, False]),
        ("x != 2", [True, False, True, False]),  # NaN is not "not 2": missing never holds
        ("x>=2.5", [False, False, True, False]),
        ("z < -2.5", [True, False, False, True]),
        ("z == -1", [False, True, False, False]),
    ],
)
def test_each_operator(condition, expected):
    got = evaluate_condition(X, condition)
    assert got.dtype == bool and got.tolist() == expected


def test_nested_all_and_any():
    cond = {"all": ["x >= 1", {"any": ["y == 0", "z < -2"]}]}
    # row 0: x 1, z -3 -> yes; row 1: y 0 -> yes; row 2: y 1, z NaN -> no; row 3: x NaN -> no
    assert evaluate_condition(X, cond).tolist() == [True, True, False, False]
    assert evaluate_condition(X, {"any": ["x > 2", "z < -4"]}).tolist() == [
        False,
        False,
        True,
        True,
    ]
    assert evaluate_condition(X, {"all": ["x >= 1", "x < 3"]}).tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert evaluate_condition(X, {"any": [{"all": ["y == 1", "x < 2"]}, "x == 3"]}).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_missing_values_never_satisfy_a_condition():
    missing = pd.DataFrame(
        {"m": pd.Series([np.nan, None, pd.NA, "not a number"], dtype=object)}, index=[5, 6, 7, 8]
    )
    for op in (">=", ">", "<=", "<", "==", "!="):
        assert not evaluate_condition(missing, f"m {op} 0").any(), op
    assert not evaluate_condition(missing, {"any": ["m == 0", "m != 0"]}).any()
    nullable = pd.DataFrame({"m": pd.array([1, None, 3], dtype="Int64")})
    assert evaluate_condition(nullable, "m != 2").tolist() == [True, False, True]


def test_a_condition_on_a_missing_column_fails_naming_it():
    with pytest.raises(KeyError, match="'nope'"):
        evaluate_condition(X, "nope >= 1")


# -- falls_review -------------------------------------------------------------------------

FALLS_RISK_FACTORS = [
    "falls_risk_drug_classes_90d",
    "ltc_parkinsons",
    "ltc_stroke_tia",
    "ltc_dementia",
    "ltc_osteoporosis",
    "ltc_epilepsy",
    "visual_impairment",
    "alcohol_misuse",
]


def test_falls_review_age_65_boundary():
    assert criteria_of("falls_review", age_years=64, falls_365d=1) is None
    assert criteria_of("falls_review", age_years=65, falls_365d=1) == [
        "aged_65_plus",
        "fall_in_last_12_months",
    ]
    assert criteria_of("falls_review", age_years=np.nan, falls_365d=1) is None


def test_falls_review_age_50_to_64_needs_a_falls_risk_factor():
    drug = {"falls_risk_drug_classes_90d": 1, "falls_365d": 1}
    assert criteria_of("falls_review", age_years=49, **drug) is None
    assert criteria_of("falls_review", age_years=50, **drug) == [
        "aged_50_64_with_falls_risk_factor",
        "fall_in_last_12_months",
    ]
    assert criteria_of("falls_review", age_years=64, **drug) == [
        "aged_50_64_with_falls_risk_factor",
        "fall_in_last_12_months",
    ]
    # at 65 the 50-64 route no longer holds: only the age route is listed
    assert criteria_of("falls_review", age_years=65, **drug) == [
        "aged_65_plus",
        "fall_in_last_12_months",
    ]
    assert criteria_of("falls_review", age_years=55, falls_365d=1) is None
    assert criteria_of("falls_review", age_years=55, falls_365d=1, ltc_copd=1) is None


@pytest.mark.parametrize("factor", FALLS_RISK_FACTORS)
def test_each_falls_risk_factor_qualifies_at_55(factor):
    assert criteria_of("falls_review", age_years=55, falls_365d=1, **{factor: 1}) == [
        "aged_50_64_with_falls_risk_factor",
        "fall_in_last_12_months",
    ]
    assert criteria_of("falls_review", age_years=49, falls_365d=1, **{factor: 1}) is None


def test_falls_review_needs_an_indication():
    assert criteria_of("falls_review", age_years=65) is None
    assert criteria_of("falls_review", age_years=80, falls_180d=3) is None  # not falls_365d
    assert criteria_of("falls_review", age_years=65, efi=0.24) is None
    assert criteria_of("falls_review", age_years=65, efi=0.25) == [
        "aged_65_plus",
        "moderate_or_severe_frailty",
    ]
    assert criteria_of("falls_review", age_years=65, cfs_latest=5) is None
    assert criteria_of("falls_review", age_years=65, cfs_latest=6) == [
        "aged_65_plus",
        "moderate_or_severe_frailty",
    ]
    assert criteria_of("falls_review", age_years=65, mobility_problem=1) == [
        "aged_65_plus",
        "mobility_or_gait_problem",
    ]


def test_falls_review_lists_every_criterion_that_held():
    got = criteria_of(
        "falls_review", age_years=70, falls_365d=2, efi=0.3, cfs_latest=7, mobility_problem=1
    )
    assert got == [
        "aged_65_plus",
        "fall_in_last_12_months",
        "moderate_or_severe_frailty",
        "mobility_or_gait_problem",
    ]


# -- medication_review --------------------------------------------------------------------


def test_medication_review_priority_groups():
    assert criteria_of("medication_review", age_years=80) is None
    assert criteria_of("medication_review", distinct_medicines_90d=9) is None
    assert criteria_of("medication_review", distinct_medicines_90d=10) == ["complex_polypharmacy"]
    assert criteria_of("medication_review", care_home=1) == ["care_home_resident"]
    for drug in ("opioid_90d", "benzodiazepine_90d", "z_drug_90d"):
        assert criteria_of("medication_review", **{drug: 1}) == [
            "addictive_pain_or_sedative_medicines"
        ], drug


@pytest.mark.parametrize(
    "extra",
    ["lives_alone", "social_isolation", "housebound", "emergency_admissions_90d", "falls_180d"],
)
def test_severe_frailty_needs_isolation_or_a_recent_event(extra):
    key = ["severe_frailty_with_isolation_or_recent_event"]
    assert criteria_of("medication_review", efi=0.37) is None
    assert criteria_of("medication_review", cfs_latest=8) is None
    assert criteria_of("medication_review", efi=0.37, **{extra: 1}) == key
    assert criteria_of("medication_review", efi=0.36, **{extra: 1}) is None
    assert criteria_of("medication_review", cfs_latest=7, **{extra: 1}) == key
    assert criteria_of("medication_review", cfs_latest=6, **{extra: 1}) is None
    assert criteria_of("medication_review", **{extra: 1}) is None


def test_medication_review_lists_every_criterion_that_held():
    got = criteria_of(
        "medication_review",
        care_home=1,
        distinct_medicines_90d=14,
        cfs_latest=8,
        housebound=1,
        z_drug_90d=1,
    )
    assert got == [
        "care_home_resident",
        "complex_polypharmacy",
        "severe_frailty_with_isolation_or_recent_event",
        "addictive_pain_or_sedative_medicines",
    ]
    # a recent emergency admission is only a 'recent event' alongside severe frailty
    assert criteria_of("medication_review", emergency_admissions_90d=2, opioid_90d=1) == [
        "addictive_pain_or_sedative_medicines"
    ]


# -- advance_care_planning ----------------------------------------------------------------

ADVANCED_CONDITIONS = [
    "ltc_heart_failure",
    "ltc_copd",
    "ltc_ckd",
    "ltc_dementia",
    "ltc_cancer",
    "ltc_liver_disease",
]


def test_advance_care_planning_indicators():
    acp = "advance_care_planning"
    assert criteria_of(acp, age_years=90, risk=0.9) is None
    assert criteria_of(acp, emergency_admissions_180d=1) is None
    assert criteria_of(acp, emergency_admissions_180d=2) == ["two_unplanned_admissions_in_6_months"]
    assert criteria_of(acp, emergency_admissions_90d=3) is None  # 180d is what counts
    assert criteria_of(acp, bmi_latest=20) is None
    assert criteria_of(acp, bmi_latest=19.9) == ["weight_loss_or_low_bmi"]
    assert criteria_of(acp, weight_loss=1) == ["weight_loss_or_low_bmi"]
    assert criteria_of(acp, ltc_palliative=1) == ["palliative_care_register"]
    for dependent in ("care_home", "home_care_package", "has_carer"):
        assert criteria_of(acp, **{dependent: 1}) == ["care_home_or_dependent"], dependent


@pytest.mark.parametrize("condition", ADVANCED_CONDITIONS)
def test_advanced_condition_needs_a_risk_of_ten_percent(condition):
    acp = "advance_care_planning"
    assert criteria_of(acp, risk=0.099, **{condition: 1}) is None
    assert criteria_of(acp, risk=0.10, **{condition: 1}) == ["advanced_condition_with_high_risk"]
    assert criteria_of(acp, risk=0.10) is None
    assert criteria_of(acp, risk=np.nan, **{condition: 1}) is None


def test_advance_care_planning_lists_every_criterion_that_held():
    got = criteria_of(
        "advance_care_planning",
        emergency_admissions_180d=3,
        has_carer=1,
        bmi_latest=18,
        ltc_palliative=1,
        ltc_cancer=1,
        risk=0.4,
    )
    assert got == [
        "two_unplanned_admissions_in_6_months",
        "care_home_or_dependent",
        "weight_loss_or_low_bmi",
        "palliative_care_register",
        "advanced_condition_with_high_risk",
    ]


# -- look-back ----------------------------------------------------------------------------

ELIGIBLE = {
    "falls_review": {"age_years": 70, "falls_365d": 1},
    "medication_review": {"distinct_medicines_90d": 12},
    "advance_care_planning": {"ltc_palliative": 1},
}


@pytest.mark.parametrize(
    ("intervention", "column"),
    [
        ("falls_review", "days_since_falls_assessment"),
        ("medication_review", "days_since_medication_review"),
    ],
)
def test_a_review_in_the_last_365_days_serves_the_person(intervention, column):
    values = ELIGIBLE[intervention]
    assert criteria_of(intervention, **values) is not None  # never reviewed
    assert criteria_of(intervention, **values, **{column: 0}) is None
    assert criteria_of(intervention, **values, **{column: 364}) is None
    assert criteria_of(intervention, **values, **{column: 365}) is None
    assert criteria_of(intervention, **values, **{column: 366}) is not None
    assert criteria_of(intervention, **values, **{column: 2000}) is not None
    # only the intervention's own code serves it
    others = {c: 10 for c in DAYS_SINCE if c != column}
    assert criteria_of(intervention, **values, **others) is not None


def test_any_advance_care_plan_on_record_serves_the_person():
    values = ELIGIBLE["advance_care_planning"]
    assert criteria_of("advance_care_planning", **values) is not None
    for days in (0, 364, 366, 2000):
        assert (
            criteria_of("advance_care_planning", **values, days_since_advance_care_plan=days)
            is None
        ), days
    others = {"days_since_falls_assessment": 5, "days_since_medication_review": 5}
    assert criteria_of("advance_care_planning", **values, **others) is not None


def test_served_counts():
    scores = frame(
        person(NHS[0], days_since_falls_assessment=365, days_since_advance_care_plan=3000),
        person(NHS[1], days_since_falls_assessment=366, days_since_medication_review=1),
        person(NHS[2]),
    )
    assert served_counts(scores, CONFIG) == {
        "falls_review": 1,
        "medication_review": 1,
        "advance_care_planning": 1,
    }


# -- ranking ------------------------------------------------------------------------------


def test_ranking_by_risk_with_ties_by_nhs_number():
    base = (
        ELIGIBLE["falls_review"] | ELIGIBLE["medication_review"] | ELIGIBLE["advance_care_planning"]
    )
    risks = {NHS[5]: 0.2, NHS[1]: 0.5, NHS[3]: 0.2, NHS[0]: 0.1, NHS[4]: 0.2, NHS[2]: 0.7}
    scores = frame(*(person(n, **base, risk=r) for n, r in risks.items()))
    order = [NHS[2], NHS[1], NHS[3], NHS[4], NHS[5], NHS[0]]
    for key, effect in (
        ("falls_review", 0.35),
        ("medication_review", 0.25),
        ("advance_care_planning", None),
    ):
        members = build_cohort(scores, CONFIG.get(key))
        assert list(members.columns) == [
            "intervention",
            "nhs_number",
            "practice_code",
            "pcn_code",
            "risk",
            "criteria",
            "expected_benefit",
            "ranking_risk",
            "expected_bed_days",
            "rank",
        ]
        assert members.nhs_number.tolist() == order, key
        assert members["rank"].tolist() == [1, 2, 3, 4, 5, 6]
        assert members.index.tolist() == [0, 1, 2, 3, 4, 5]
        assert (members.intervention == key).all()
        assert members.risk.tolist() == [risks[n] for n in order]
        if effect is None:
            assert members.expected_benefit.isna().all()
        else:
            np.testing.assert_allclose(
                members.expected_benefit, [risks[n] * effect for n in order], rtol=1e-12
            )


def test_a_list_with_rank_by_is_ranked_by_that_models_risk_with_bed_days():
    base = {"age_years": 80, "ltc_palliative": 1, "care_home": 1}
    admission = {NHS[0]: 0.1, NHS[1]: 0.5, NHS[2]: 0.3}
    scores = frame(*(person(n, **base, risk=r) for n, r in admission.items()))
    mortality = np.array([0.6, 0.05, 0.2])  # the scores' rows: NHS[0], NHS[1], NHS[2]
    acp = CONFIG.get("advance_care_planning")
    members = build_cohort(scores, acp, {"riskstrat-death-12m": mortality})
    assert members.nhs_number.tolist() == [NHS[0], NHS[2], NHS[1]]  # by mortality
    assert members.ranking_risk.tolist() == [0.6, 0.2, 0.05]
    np.testing.assert_allclose(members.expected_bed_days, [3.0, 1.0, 0.25])
    assert members.risk.tolist() == [0.1, 0.3, 0.5]  # the admission risk is kept
    assert members.expected_benefit.isna().all()  # no admissions effect claimed
    # Without that model's risks (no champion), the list falls back to admission risk.
    fallback = build_cohort(scores, acp, {})
    assert fallback.nhs_number.tolist() == [NHS[1], NHS[2], NHS[0]]
    assert fallback.ranking_risk.isna().all() and fallback.expected_bed_days.isna().all()
    # Other lists never read another model's risks.
    falls = build_cohort(scores, CONFIG.get("falls_review"), {"riskstrat-death-12m": mortality})
    assert falls.ranking_risk.isna().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"effect": 0.3}, "not both"),
        ({"rank_by": None}, "bed_days needs rank_by"),
    ],
)
def test_bed_days_go_with_a_ranking_model_and_no_admissions_effect(change, message):
    raw = CONFIG.get("advance_care_planning").model_dump(exclude={"key"}) | change
    with pytest.raises(ValueError, match=message):
        Intervention.model_validate(raw)


def test_criteria_stay_with_their_person_after_ranking():
    scores = frame(
        person(NHS[0], age_years=70, falls_365d=1, risk=0.1),
        person(NHS[1], age_years=80, efi=0.4, risk=0.6),
        person(NHS[2], age_years=60, falls_365d=1, risk=0.9),  # no falls risk factor
        person(NHS[3], age_years=55, ltc_epilepsy=1, mobility_problem=1, risk=0.3),
        person(NHS[4], age_years=90, falls_365d=1, days_since_falls_assessment=30, risk=0.8),
    )
    members = build_cohort(scores, CONFIG.get("falls_review"))
    got = dict(zip(members.nhs_number, members.criteria, strict=True))
    assert members.nhs_number.tolist() == [NHS[1], NHS[3], NHS[0]]
    assert got == {
        NHS[1]: ["aged_65_plus", "moderate_or_severe_frailty"],
        NHS[3]: ["aged_50_64_with_falls_risk_factor", "mobility_or_gait_problem"],
        NHS[0]: ["aged_65_plus", "fall_in_last_12_months"],
    }


def test_build_cohorts_stacks_every_intervention_and_empty_cohorts_work():
    scores = frame(
        person(NHS[0], age_years=70, falls_365d=1, opioid_90d=1, risk=0.2),
        person(NHS[1], care_home=1, risk=0.4),
        person(NHS[2], risk=0.9),
    )
    cohorts = build_cohorts(scores, CONFIG)
    assert cohorts[["intervention", "nhs_number", "rank"]].values.tolist() == [
        ["falls_review", NHS[0], 1],
        ["medication_review", NHS[1], 1],
        ["medication_review", NHS[0], 2],
        ["advance_care_planning", NHS[1], 1],
    ]
    assert cohorts.criteria.tolist() == [
        ["aged_65_plus", "fall_in_last_12_months"],
        ["care_home_resident"],
        ["addictive_pain_or_sedative_medicines"],
        ["care_home_or_dependent"],
    ]
    nobody = build_cohort(frame(person(NHS[2])), CONFIG.get("falls_review"))
    assert nobody.empty and "rank" in nobody.columns and "criteria" in nobody.columns


# -- capacity -----------------------------------------------------------------------------

RISKS = [0.5, 0.4, 0.3, 0.2, 0.1]


def test_capacity_summary_arithmetic():
    got = capacity_summary(RISKS, capacity=2, effect=0.35)
    assert got["eligible"] == 5 and got["capacity"] == 2
    assert got["listed"] == {
        "first_rank": 1,
        "people": 2,
        "expected_admissions_90d": pytest.approx(0.9),
        "expected_admissions_avoided": pytest.approx(0.9 * 0.35),
    }
    assert got["next"] == {
        "first_rank": 3,
        "people": 2,
        "expected_admissions_90d": pytest.approx(0.5),
        "expected_admissions_avoided": pytest.approx(0.5 * 0.35),
    }
    # a partial next tranche
    three = capacity_summary(RISKS, capacity=3, effect=0.25)
    assert three["listed"]["people"] == 3
    assert three["listed"]["expected_admissions_90d"] == pytest.approx(1.2)
    assert three["listed"]["expected_admissions_avoided"] == pytest.approx(0.3)
    assert three["next"]["first_rank"] == 4 and three["next"]["people"] == 2
    assert three["next"]["expected_admissions_90d"] == pytest.approx(0.3)
    assert three["next"]["expected_admissions_avoided"] == pytest.approx(0.075)


def test_capacity_larger_than_the_list():
    got = capacity_summary(RISKS, capacity=10, effect=0.35)
    assert got["eligible"] == 5 and got["capacity"] == 10
    assert got["listed"]["people"] == 5
    assert got["listed"]["expected_admissions_90d"] == pytest.approx(1.5)
    assert got["listed"]["expected_admissions_avoided"] == pytest.approx(0.525)
    assert got["next"] == {
        "first_rank": 11,
        "people": 0,
        "expected_admissions_90d": 0.0,
        "expected_admissions_avoided": 0.0,
    }
    empty = capacity_summary([], capacity=5, effect=0.35)
    assert empty["eligible"] == 0 and empty["listed"]["people"] == 0
    assert empty["listed"]["expected_admissions_90d"] == 0.0


def test_capacity_with_no_claimed_effect_and_bad_capacity():
    got = capacity_summary(RISKS, capacity=2, effect=None)
    assert got["listed"]["expected_admissions_90d"] == pytest.approx(0.9)
    assert got["listed"]["expected_admissions_avoided"] is None
    assert got["next"]["expected_admissions_avoided"] is None
    for bad in (0, -1):
        with pytest.raises(ValueError, match="capacity"):
            capacity_summary(RISKS, capacity=bad, effect=0.35)


def test_capacity_rounds_to_three_decimals():
    got = capacity_summary([0.12345, 0.1], capacity=1, effect=0.35)
    assert got["listed"]["expected_admissions_90d"] == 0.123
    assert got["listed"]["expected_admissions_avoided"] == 0.043  # 0.0432075


# -- what changed -------------------------------------------------------------------------


def test_what_changed_reports_the_groups_that_moved_most():
    got = what_changed(
        risk_now=0.18,
        contributions_now={"a": 3.0, "b": 1.0, "c": 0.5, "d": 2.0},
        risk_then=0.12,
        contributions_then={"a": 1.0, "b": 1.02, "c": 1.5, "e": 0.7},
    )
    assert got["risk_then"] == 0.12 and got["risk_now"] == 0.18
    assert got["change_percentage_points"] == pytest.approx(6.0)
    assert got["direction"] == "up"
    # a +2.0 and d +2.0 (ties by name), c -1.0; e -0.7 is fourth; b -0.02 is too small
    assert got["reasons_moved"] == [
        {
            "group": "a",
            "percentage_points_then": 1.0,
            "percentage_points_now": 3.0,
            "change_percentage_points": 2.0,
        },
        {
            "group": "d",  # only in this month
            "percentage_points_then": 0.0,
            "percentage_points_now": 2.0,
            "change_percentage_points": 2.0,
        },
        {
            "group": "c",
            "percentage_points_then": 1.5,
            "percentage_points_now": 0.5,
            "change_percentage_points": -1.0,
        },
    ]
    everything = what_changed(
        risk_now=0.18,
        contributions_now={"a": 3.0, "b": 1.0, "c": 0.5, "d": 2.0},
        risk_then=0.12,
        contributions_then={"a": 1.0, "b": 1.02, "c": 1.5, "e": 0.7},
        top=10,
    )
    assert [m["group"] for m in everything["reasons_moved"]] == ["a", "d", "c", "e"]
    assert everything["reasons_moved"][-1] == {
        "group": "e",  # only in the earlier month
        "percentage_points_then": 0.7,
        "percentage_points_now": 0.0,
        "change_percentage_points": -0.7,
    }


def test_what_changed_direction():
    down = what_changed(
        risk_now=0.07, contributions_now={}, risk_then=0.10, contributions_then={"a": 1.0}
    )
    assert down["direction"] == "down"
    assert down["change_percentage_points"] == pytest.approx(-3.0)
    assert [m["group"] for m in down["reasons_moved"]] == ["a"]
    same = what_changed(
        risk_now=0.1004, contributions_now={"a": 1.0}, risk_then=0.1, contributions_then={"a": 1.0}
    )
    assert same["direction"] == "unchanged" and same["reasons_moved"] == []
    assert same["change_percentage_points"] == pytest.approx(0.04)
    up = what_changed(risk_now=0.1006, contributions_now={}, risk_then=0.1, contributions_then={})
    assert up["direction"] == "up" and up["change_percentage_points"] == pytest.approx(0.06)


def test_a_change_of_exactly_the_threshold_is_reported_whatever_the_values():
    """Published sizes have 3 decimals; a move of exactly 0.050 points meets the default
    ``min_change_percentage_points=0.05`` (``>=``). 0.35 -> 0.40 is reported, but
    0.30 -> 0.35 is not, because 0.35 - 0.30 == 0.04999999999999993 in floating point."""
    for then, now in ((0.35, 0.40), (0.30, 0.35), (1.25, 1.20)):
        got = what_changed(
            risk_now=0.1,
            contributions_now={"a": now},
            risk_then=0.1,
            contributions_then={"a": then},
        )
        assert [m["group"] for m in got["reasons_moved"]] == ["a"], (
            f"a move from {then} to {now} points (exactly the 0.05 threshold) was not reported"
        )


# -- O/E and Poisson intervals ------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "low", "high"),
    [
        (0, 0.0, 3.689),
        (1, 0.0253, 5.572),
        (2, 0.242, 7.225),
        (5, 1.623, 11.668),
        (10, 4.795, 18.390),
    ],
)
def test_poisson_ci_matches_garwood(observed, low, high):
    got_low, got_high = poisson_ci(observed)
    assert got_low == pytest.approx(low, abs=1e-3)
    assert got_high == pytest.approx(high, abs=1e-3)


def test_poisson_ci_level():
    low, high = poisson_ci(0, level=0.90)
    assert low == 0.0 and high == pytest.approx(-math.log(0.05), abs=1e-9)


def test_oe_ratio():
    got = oe_ratio(10, 5.0)
    assert got["oe"] == pytest.approx(2.0)
    assert got["oe_low"] == pytest.approx(4.795 / 5, abs=1e-3)
    assert got["oe_high"] == pytest.approx(18.390 / 5, abs=1e-3)
    zero = oe_ratio(0, 2.0)
    assert zero["oe"] == 0.0 and zero["oe_low"] == 0.0
    assert zero["oe_high"] == pytest.approx(3.689 / 2, abs=1e-3)
    none = {"oe": None, "oe_low": None, "oe_high": None}
    assert oe_ratio(0, 0.0) == none
    assert oe_ratio(3, 0.0) == none
    assert oe_ratio(3, float("nan")) == none


# -- grouped contributions add up to the (calibrated) log-odds ----------------------------

MODEL_FEATURES = [
    "age_years",
    "emergency_admissions_365d",
    "days_since_last_emergency_admission",
    "distinct_medicines_90d",
    "opioid_90d",
    "lives_alone",
    "ltc_copd",
    "ltc_heart_failure",
    "falls_365d",
    "bmi_latest",
    "efi",
]


@pytest.fixture(scope="module")
def tiny_model():
    assert set(MODEL_FEATURES) <= set(feature_columns())
    group_matrix(MODEL_FEATURES)  # every feature has a reason group
    rng = np.random.default_rng(7)
    n = 600
    X = pd.DataFrame(rng.poisson(0.5, size=(n, len(MODEL_FEATURES))).astype(float))
    X.columns = MODEL_FEATURES
    X["age_years"] = rng.integers(18, 100, n).astype(float)
    X["efi"] = rng.uniform(0, 0.5, n).round(2)
    X["bmi_latest"] = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(15, 40, n))
    X["days_since_last_emergency_admission"] = np.where(
        X.emergency_admissions_365d > 0, rng.integers(1, 365, n), np.nan
    )
    logit = -2.5 + 0.8 * X.emergency_admissions_365d + 0.02 * (X.age_years - 60) + 2 * X.efi
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 7, "seed": 3},
        lgb.Dataset(X, label=y),
        num_boost_round=15,
    )
    return booster, X.head(50)


def test_grouped_contributions_sum_to_the_raw_log_odds(tiny_model):
    booster, X = tiny_model
    raw = booster.predict(X, raw_score=True)
    gc = group_contributions(booster, X)
    assert gc.log_odds.shape == (len(X), len(gc.groups))
    np.testing.assert_allclose(gc.base_log_odds + gc.log_odds.sum(axis=1), raw, atol=1e-6)
    np.testing.assert_allclose(gc.risk, booster.predict(X), atol=1e-9)


def test_grouped_contributions_sum_to_the_platt_calibrated_log_odds(tiny_model):
    booster, X = tiny_model
    a, b = 0.8, -0.4
    calibrator = Calibrator(method="platt", a=a, b=b)
    raw = booster.predict(X, raw_score=True)
    gc = group_contributions(booster, X, calibrator=calibrator)
    np.testing.assert_allclose(gc.base_log_odds + gc.log_odds.sum(axis=1), a * raw + b, atol=1e-6)
    np.testing.assert_allclose(gc.risk, 1 / (1 + np.exp(-(a * raw + b))), atol=1e-9)
    # a group's size in points is how much lower the calibrated risk is without it
    j = 0
    without = 1 / (1 + np.exp(-(a * raw + b - gc.log_odds[:, j])))
    np.testing.assert_allclose(gc.percentage_points[:, j], 100 * (gc.risk - without), atol=1e-9)


def test_a_missing_or_invalid_cohort_file_is_a_riskstrat_error(tmp_path):
    from riskstrat.errors import ConfigError, MissingFileError

    with pytest.raises(MissingFileError, match="no cohort configuration at"):
        load_cohort_config(tmp_path / "absent.yaml")
    path = _write_variant(tmp_path, "effect: 0.25", "effect: 1.5")
    with pytest.raises(ConfigError) as info:
        load_cohort_config(path)
    assert info.value.hint is not None and "shows every field" in info.value.hint
