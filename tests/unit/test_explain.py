"""Reasons from SHAP values: grouping, sums and wording."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from riskstrat.explain.reasons import efi_band, explain_rows, group_matrix, shap_contributions
from riskstrat.features.build import feature_columns


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(5)
    names = feature_columns()
    n = 3000
    X = pd.DataFrame(rng.poisson(0.4, size=(n, len(names))).astype(float), columns=names)
    X["age_years"] = rng.integers(18, 100, n)
    X["efi"] = rng.uniform(0, 0.5, n).round(2)
    X["imd_decile"] = rng.integers(1, 11, n).astype(float)
    logit = -3 + 0.9 * X.emergency_admissions_365d + 0.03 * (X.age_years - 60) + 3 * X.efi
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15, "seed": 1},
        lgb.Dataset(X, label=y),
        num_boost_round=40,
    )
    return booster, X


def test_every_feature_belongs_to_one_reason_group():
    groups, matrix = group_matrix(feature_columns())
    assert (matrix.sum(axis=1) == 1).all()
    assert len({g.key for g in groups}) == len(groups)


def test_contributions_sum_to_the_log_odds(model_and_data):
    booster, X = model_and_data
    contrib = shap_contributions(booster, X.head(200))
    raw = booster.predict(X.head(200), raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, atol=1e-6)
    _groups, matrix = group_matrix(booster.feature_name())
    grouped = contrib[:, :-1] @ matrix
    np.testing.assert_allclose(grouped.sum(axis=1) + contrib[:, -1], raw, atol=1e-6)


def test_reasons_are_ordered_signed_and_worded_from_values(model_and_data):
    booster, X = model_and_data
    sample = X.head(300).copy()
    reasons = explain_rows(booster, sample, top_raising=3, top_lowering=1)
    assert len(reasons) == len(sample)
    for row_reasons in reasons:
        up = [r for r in row_reasons if r["direction"] == "raises"]
        down = [r for r in row_reasons if r["direction"] == "lowers"]
        assert len(up) <= 3 and len(down) <= 1 and row_reasons == up + down
        assert [r["log_odds"] for r in up] == sorted((r["log_odds"] for r in up), reverse=True)
        assert all(r["log_odds"] > 0 and r["percentage_points"] > 0 for r in up)
        assert all(r["log_odds"] < 0 and r["percentage_points"] < 0 for r in down)
    # a person with admissions has that reason worded from their own count
    i = int(np.flatnonzero(sample.emergency_admissions_365d.to_numpy() == 2)[0])
    texts = {r["group"]: r["text"] for r in explain_rows(booster, sample.iloc[[i]])[0]}
    assert texts["recent_emergency_admissions"].startswith(
        "2 emergency admissions in the last 12 months"
    )


def test_wording_of_single_values(model_and_data):
    _booster, X = model_and_data
    person = X.head(1).copy()
    person.loc[:, :] = 0
    person[["cfs_latest", "bmi_latest", "imd_decile", "days_since_last_emergency_admission"]] = (
        np.nan
    )
    person[["emergency_admissions_365d", "days_since_last_emergency_admission"]] = [1, 12]
    person[["distinct_medicines_90d", "opioid_90d", "benzodiazepine_90d"]] = [10, 1, 1]
    person[["efi", "lives_alone", "age_years"]] = [0.31, 1, 84]
    from riskstrat.explain.reasons import REASON_GROUPS

    values = person.iloc[0].to_dict()
    text = {g.key: g.phrase(values, {}) for g in REASON_GROUPS}
    assert (
        text["recent_emergency_admissions"]
        == "1 emergency admission in the last 12 months, the latest 12 days ago"
    )
    assert (
        text["medicines"]
        == "10 medicines issued in the last 90 days, including an opioid and a benzodiazepine"
    )
    assert text["frailty"] == "moderate frailty (eFI 0.31)"
    assert text["living_situation"] == "lives alone"
    assert text["age"] == "aged 84"


@pytest.mark.parametrize(
    ("efi", "band"),
    [
        (0.0, "fit"),
        (0.12, "fit"),
        (0.13, "mild frailty"),
        (0.24, "mild frailty"),
        (0.36, "moderate frailty"),
        (0.37, "severe frailty"),
    ],
)
def test_efi_bands(efi, band):
    assert efi_band(efi) == band


def test_every_reason_group_has_a_label():
    from riskstrat.explain.reasons import REASON_GROUPS, REASON_LABELS

    assert {g.key for g in REASON_GROUPS} == set(REASON_LABELS)


def _reference_reasons(booster, X, *, top_raising, top_lowering, min_pp=0.001):
    """The definition, row by row with every value at hand: what the cached wording must
    reproduce exactly."""
    from riskstrat.explain.reasons import group_contributions

    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X)
    gc = group_contributions(booster, X, contributions=contrib)
    out, sizes = [], []
    for i, values in enumerate(X[names].to_dict(orient="records")):
        order = np.argsort(-gc.log_odds[i], kind="stable")
        up = [j for j in order[:top_raising] if gc.percentage_points[i, j] >= min_pp]
        down = [j for j in order[::-1][:top_lowering] if gc.percentage_points[i, j] <= -min_pp]
        fc = dict(zip(names, contrib[i, :-1], strict=True))
        out.append(
            [
                {
                    "group": gc.groups[j].key,
                    "text": gc.groups[j].phrase(values, fc, gc.percentage_points[i, j] > 0),
                    "direction": "raises" if gc.percentage_points[i, j] > 0 else "lowers",
                    "log_odds": round(float(gc.log_odds[i, j]), 4),
                    "percentage_points": round(float(gc.percentage_points[i, j]), 3),
                }
                for j in up + down
            ]
        )
        pp = np.round(gc.percentage_points[i], 3)
        sizes.append({g.key: float(v) for g, v in zip(gc.groups, pp) if abs(v) >= 0.001})
    return out, sizes


@pytest.mark.parametrize("top", [(3, 1), (5, 2), (1, 0)])
def test_cached_wording_equals_the_row_by_row_definition(model_and_data, top):
    from riskstrat.explain.reasons import explain_with_contributions

    booster, X = model_and_data
    sample = X.head(600).copy()
    rng = np.random.default_rng(2)
    # missing values and several conditions at once, so the conditions' order matters
    sample.loc[rng.random(len(sample)) < 0.3, "imd_decile"] = np.nan
    sample.loc[rng.random(len(sample)) < 0.5, "cfs_latest"] = np.nan
    for c in ("ltc_copd", "ltc_heart_failure", "ltc_diabetes", "ltc_ckd"):
        sample[c] = (rng.random(len(sample)) < 0.4).astype(float)
    got = explain_with_contributions(booster, sample, top_raising=top[0], top_lowering=top[1])
    assert got == _reference_reasons(booster, sample, top_raising=top[0], top_lowering=top[1])
    assert any(len(r) for r in got[0])


def test_distinct_rows_number_each_row_by_its_first_equal_row():
    from riskstrat.explain.reasons import _distinct_rows

    rng = np.random.default_rng(7)
    key = rng.integers(0, 3, size=(5000, 3)).astype(np.float64)
    key[::7, 1] = np.inf  # missing values are keyed as inf
    first, inverse = _distinct_rows(key)
    # every row maps to a distinct row equal to it, which is that row's first occurrence
    np.testing.assert_array_equal(key[first[inverse]], key)
    for k, i in enumerate(first):
        equal = np.flatnonzero((key == key[i]).all(axis=1))
        assert equal[0] == i and (inverse[equal] == k).all()
    assert len(first) == len(np.unique(key, axis=0)) and (np.diff(first) > 0).all()
