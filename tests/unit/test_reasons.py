"""Every reason template against every kind of value it can receive: the words agree with the
value (bands, counts, classes) and with the sign of the contribution, no percentage is
impossible, and no template is left unfilled (issue 24)."""

from __future__ import annotations

import itertools
import math
import re

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from riskstrat.cohorts.words import (
    chance_words,
    percent_text,
    percentile_words,
    points_words,
)
from riskstrat.explain.reasons import explain_with_contributions, group_matrix
from riskstrat.explain.wording import (
    CFS_BANDS,
    DRUG_NAMES,
    NOTABLE_DRUGS,
    REASON_GROUPS,
    cfs_band,
    efi_band,
)
from riskstrat.features.build import feature_columns

#: Every kind of value a feature can hold: missing, zero, the edges of the bands, large,
#: negative (never valid, and still worded sensibly) and fractional.
VALUE_KINDS = (None, float("nan"), 0, 1, 2, 0.12, 0.24, 0.36, 0.37, 1.0, 6, 8, 9, 12, 120,
               400, 800, 10_000, -1, 2.5)  # fmt: skip
BAND_WORDS = ("fit", "very mild frailty", "mild frailty", "moderate frailty", "severe frailty",
              "very severe frailty", "terminally ill")  # fmt: skip


def _unfilled(text: str) -> bool:
    return bool(re.search(r"[{}]|\bNone\b|\bnan\b|\binf\b|%\(|\$\{", text))


def _values(group, value):
    return dict.fromkeys(group.features, value)


@pytest.mark.parametrize("group", REASON_GROUPS, ids=lambda g: g.key)
def test_every_template_fills_for_every_kind_of_value_and_sign(group):
    for value, raises in itertools.product(VALUE_KINDS, (True, False)):
        for contrib in (
            {},
            dict.fromkeys(group.features, 0.4),
            dict.fromkeys(group.features, -0.4),
        ):
            text = group.phrase(_values(group, value), contrib, raises)
            assert isinstance(text, str) and text.strip(), (group.key, value)
            assert not _unfilled(text), (group.key, value, text)
            assert not re.search(r"(?<![\d.])-\d", text), (group.key, value, text)  # no "-1 falls"
            assert not re.search(r"\b0 (months?|days?|years?)\b", text), (group.key, text)
            for number in re.findall(r"(\d+(?:\.\d+)?)%", text):
                assert 0 <= float(number) <= 100, text


def _phrase(key, values, contrib=None, raises=True):
    group = next(g for g in REASON_GROUPS if g.key == key)
    return group.phrase(values, contrib or {}, raises)


@pytest.mark.parametrize("cfs", range(1, 10))
@pytest.mark.parametrize("efi", [None, 0.05, 0.20, 0.30, 0.50])
def test_frailty_is_banded_by_the_measure_beside_it(cfs, efi):
    text = _phrase("frailty", {"cfs_latest": float(cfs), "efi": efi})
    band = CFS_BANDS[cfs]
    assert text.startswith(f"{band} (CFS {cfs}")
    # no other band's words beside it ('moderate frailty' next to CFS 8 was seen)
    others = [w for w in BAND_WORDS if w != band and w not in band]
    assert not any(re.search(rf"(?<!very ){w}", text) for w in others if w not in band), text
    if efi is not None:
        assert f"eFI {efi:.2f}" in text and efi_band(efi) not in text.replace(band, "")


def test_frailty_in_words_for_cfs_8_and_for_the_efi_alone():
    assert (
        _phrase("frailty", {"cfs_latest": 8.0, "efi": 0.30})
        == "very severe frailty (CFS 8; eFI 0.30)"
    )
    assert _phrase("frailty", {"cfs_latest": None, "efi": 0.31}) == "moderate frailty (eFI 0.31)"
    assert _phrase("frailty", {"cfs_latest": None, "efi": None}) == "no frailty measure recorded"
    # not on the scale: never banded, and said so
    assert "not on the 1-9 scale" in _phrase("frailty", {"cfs_latest": 12.0, "efi": 0.1})
    assert "frailty" not in _phrase("frailty", {"cfs_latest": 12.0, "efi": 0.1}).split(";")[0][:4]
    assert [cfs_band(c) for c in (1, 3, 4, 5, 6, 7, 8, 9)] == [
        "fit", "fit", "very mild frailty", "mild frailty", "moderate frailty", "severe frailty",
        "very severe frailty", "terminally ill",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("efi", "band"),
    [(0.0, "fit"), (0.12, "fit"), (0.1201, "mild frailty"), (0.24, "mild frailty"),
     (0.2401, "moderate frailty"), (0.36, "moderate frailty"), (0.3601, "severe frailty"),
     (1.0, "severe frailty")],
)  # fmt: skip
def test_efi_band_edges(efi, band):
    assert _phrase("frailty", {"efi": efi, "cfs_latest": None}).startswith(f"{band} (eFI")


@pytest.mark.parametrize(
    ("n", "days", "words"),
    [
        (1, 12, "1 emergency admission in the last 12 months, the latest 12 days ago"),
        (2, 1, "2 emergency admissions in the last 12 months, the latest 1 day ago"),
        (3, 0, "3 emergency admissions in the last 12 months, the latest less than a day ago"),
        (1, 200, "1 emergency admission in the last 12 months, the latest 6 months ago"),
        (0, 400, "no emergency admission in the last 12 months (the last one 13 months ago)"),
        (0, 800, "no emergency admission in the last 12 months (the last one 2 years ago)"),
        (0, None, "no emergency admissions on record"),
        (-2, None, "no emergency admissions on record"),
    ],
)
def test_emergency_admissions_are_counted_from_the_value(n, days, words):
    values = {"emergency_admissions_365d": n, "days_since_last_emergency_admission": days}
    assert _phrase("recent_emergency_admissions", values) == words


def test_a_falls_risk_medicine_is_never_named_as_lowering_the_risk():
    values = {"distinct_medicines_90d": 6, "opioid_90d": 1, "benzodiazepine_90d": 1}
    up = _phrase("medicines", values, raises=True)
    assert up == "6 medicines issued in the last 90 days, including an opioid and a benzodiazepine"
    down = _phrase("medicines", values, raises=False)
    assert down == "6 medicines issued in the last 90 days"
    # under a raising reason, a class whose own contribution lowers the risk is not named
    contrib = {"opioid_90d": -0.2, "benzodiazepine_90d": 0.3, "distinct_medicines_90d": 0.1}
    assert _phrase("medicines", values, contrib, raises=True).endswith("including a benzodiazepine")
    for name in (DRUG_NAMES[c] for c in NOTABLE_DRUGS):
        every = {f"{c.lower()}_90d": 1 for c in NOTABLE_DRUGS} | {"distinct_medicines_90d": 12}
        assert name not in _phrase("medicines", every, raises=False)


def test_conditions_under_a_lowering_reason_name_only_those_that_lower_it():
    values = {"ltc_heart_failure": 1, "ltc_hypertension": 1, "ltc_asthma": 1}
    contrib = {"ltc_heart_failure": 0.5, "ltc_hypertension": -0.3, "ltc_asthma": -0.1}
    down = _phrase("long_term_conditions", values, contrib, raises=False)
    assert down == "3 long-term conditions, including hypertension and asthma"
    up = _phrase("long_term_conditions", values, contrib, raises=True)
    assert up == "3 long-term conditions, including heart failure"
    two = {"ltc_heart_failure": 1, "ltc_hypertension": 1}
    assert _phrase("long_term_conditions", two, contrib, raises=False) == (
        "2 long-term conditions, including hypertension"
    )
    both_up = {"ltc_heart_failure": 0.5, "ltc_hypertension": 0.2}
    assert _phrase("long_term_conditions", two, both_up, raises=False) == "2 long-term conditions"
    assert _phrase("long_term_conditions", {}, contrib) == "no long-term conditions recorded"


def test_care_already_given_is_worded_from_what_was_recorded():
    none = {"falls_assessment_365d": 0, "medication_review_365d": 0, "advance_care_plan_ever": 0}
    assert _phrase("care_already_given", none) == (
        "no falls assessment, medication review or advance care plan recorded"
    )
    some = none | {"medication_review_365d": 1, "advance_care_plan_ever": 1}
    assert _phrase("care_already_given", some) == (
        "care already recorded: a medication review in the last 12 months and an advance care plan"
    )


def test_short_records_and_missing_values_read_right():
    assert _phrase("length_of_record", {"recorded_history_days": 10}).startswith(
        "a short record here (less than a month)"
    )
    assert _phrase("length_of_record", {"recorded_history_days": 45}).startswith(
        "a short record here (1 month)"
    )
    assert _phrase("age", {"age_years": None}) == "age not recorded"
    assert _phrase("deprivation", {"imd_decile": 0}) == "area deprivation not recorded"
    assert _phrase("planned_care", {}) == (
        "no GP contacts or outpatient attendances in the last 12 months"
    )


# ---- the reasons of a model: direction from the sign, never a drug under 'lowers' ------------


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(3)
    names = feature_columns()
    X = pd.DataFrame(rng.poisson(0.4, size=(800, len(names))).astype(float), columns=names)
    y = rng.random(800) < 0.2
    model = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 4, "seed": 1},
                      lgb.Dataset(X, label=y), num_boost_round=5)  # fmt: skip
    return model, X


def test_direction_and_words_follow_the_sign_of_the_contribution(booster):
    model, X = booster
    names = list(model.feature_name())
    groups, _ = group_matrix(names)
    rows = X.head(4).copy()
    rows["distinct_medicines_90d"] = 5.0
    rows["opioid_90d"] = 1.0
    rows["cfs_latest"], rows["efi"] = 8.0, 0.30
    contrib = np.zeros((len(rows), len(names) + 1))
    col = {n: i for i, n in enumerate(names)}
    # medicines lower the risk for rows 0 and 2 and raise it for rows 1 and 3; frailty the
    # other way round
    for i, sign in enumerate((-1.0, 1.0, -1.0, 1.0)):
        contrib[i, col["distinct_medicines_90d"]] = 0.8 * sign
        contrib[i, col["opioid_90d"]] = 0.2 * sign
        contrib[i, col["efi"]] = -0.5 * sign
    contrib[:, -1] = -2.0
    reasons, _ = explain_with_contributions(
        model, rows, contributions=contrib, top_raising=3, top_lowering=3
    )
    assert {g.key for g in groups} >= {"medicines", "frailty"}
    for i, row in enumerate(reasons):
        by = {r["group"]: r for r in row}
        meds, frail = by["medicines"], by["frailty"]
        for r in row:
            assert (r["direction"] == "raises") == (r["percentage_points"] > 0)
            assert (r["direction"] == "raises") == (r["log_odds"] > 0)
        if i % 2 == 0:
            assert meds["direction"] == "lowers" and "opioid" not in meds["text"]
        else:
            assert meds["direction"] == "raises" and "an opioid" in meds["text"]
        assert frail["text"] == "very severe frailty (CFS 8; eFI 0.30)"
        assert -100 <= meds["percentage_points"] <= 100


# ---- numbers in words: never impossible ------------------------------------------------------

EDGES = (-5.0, -1e-9, 0.0, 1e-9, 0.0004, 0.0005, 0.049, 0.05, 0.5, 0.9994, 0.9996, 1.0, 1.2,
         42.0, 99.0, 99.99, 100.0, 150.0, float("nan"), float("inf"), -float("inf"))  # fmt: skip


@pytest.mark.parametrize("value", EDGES)
def test_no_impossible_percentage_or_size(value):
    for text in (percent_text(value), percentile_words(value)):
        for number in re.findall(r"(\d+(?:\.\d+)?)%", text):
            assert 0 <= float(number) <= 100, text
        assert "higher than 100%" not in text and not _unfilled(text)
    words = points_words(value)
    size = re.search(r"by (less than )?(\d+(?:\.\d+)?) points", words)
    if size:
        assert 0 < float(size.group(2)) <= 100
        finite = value if math.isfinite(value) else 0.0
        assert words.startswith("raises" if finite > 0 else "lowers")
    else:
        assert words == "does not change the risk"
    assert not _unfilled(chance_words(value))


def test_numbers_in_words():
    assert points_words(4.12) == "raises the risk by 4.1 points"
    assert points_words(-0.3) == "lowers the risk by 0.3 points"
    assert points_words(0.004) == "raises the risk by less than 0.1 points"
    assert points_words(-250.0) == "lowers the risk by 100.0 points"
    assert percent_text(0.99999) == "more than 99.9%" and percent_text(0.00001) == "less than 0.1%"
    assert percent_text(1.7) == "100%" and percent_text(-0.2) == "0%"
    assert percentile_words(100.0) == "in the top 1% of people scored"
    assert percentile_words(93.5) == "in the top 7% of people scored"
    assert percentile_words(57.9) == "as high as or higher than that of 57% of people scored"
    assert chance_words(0.327) == "about 1 in 3" and chance_words(0.012) == "about 1 in 83"
    assert chance_words(0.7) == "about 7 in 10" and chance_words(0.97) == "more than 9 in 10"
    assert chance_words(0.0002) == "less than 1 in 1,000" and chance_words(0) == "no"
