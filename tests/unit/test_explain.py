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


@pytest.mark.parametrize("top", [(3, 1), (5, 2), (1, 0)])
def test_json_reasons_are_byte_for_byte_what_the_store_writes_for_the_objects(model_and_data, top):
    """A month's reasons are written as JSON text by array kernels; the text must be exactly
    what ``json_text`` (orjson) writes for ``explain_with_contributions``' objects."""
    import orjson

    from riskstrat.explain.reasons import explain_as_json, explain_with_contributions

    booster, X = model_and_data
    sample = X.copy()
    rng = np.random.default_rng(3)
    sample.loc[rng.random(len(sample)) < 0.3, "imd_decile"] = np.nan
    for c in ("ltc_copd", "ltc_heart_failure", "ltc_diabetes", "ltc_ckd", "opioid_90d"):
        sample[c] = (rng.random(len(sample)) < 0.4).astype(float)
    reasons, sizes = explain_with_contributions(
        booster, sample, top_raising=top[0], top_lowering=top[1]
    )
    got = explain_as_json(booster, sample, top_raising=top[0], top_lowering=top[1])
    assert got.reasons.to_pylist() == [orjson.dumps(r).decode() for r in reasons]
    assert got.contributions.to_pylist() == [orjson.dumps(s).decode() for s in sizes]
    assert sum(len(r) for r in reasons) > len(sample) // 2  # reasons written, not just "[]"


def test_json_reasons_in_a_given_order_are_the_rows_texts_in_that_order(model_and_data):
    from riskstrat.explain.reasons import explain_as_json

    booster, X = model_and_data
    plain = explain_as_json(booster, X)
    order = np.random.default_rng(5).permutation(len(X))
    ordered = explain_as_json(booster, X, order=order)
    texts, sizes = plain.reasons.to_pylist(), plain.contributions.to_pylist()
    assert ordered.reasons.to_pylist() == [texts[i] for i in order]
    assert ordered.contributions.to_pylist() == [sizes[i] for i in order]
    assert ordered.reasons.to_pylist() != texts  # the order was not the rows' own
    for bad in (order[:-1], np.zeros(len(X), dtype=np.intp)):
        with pytest.raises(ValueError, match="permutation"):
            explain_as_json(booster, X, order=bad)


def test_a_run_that_explains_once_does_not_keep_the_models_tables(model_and_data):
    import lightgbm as lgb

    from riskstrat.explain import reasons

    booster, X = model_and_data
    fresh = lgb.Booster(model_str=booster.model_to_string())  # no tables built for it yet
    once = reasons.shap_contributions(fresh, X, keep=False)
    assert reasons._EXPLAINERS.get(fresh) is None  # let go with the call
    kept = reasons.shap_contributions(fresh, X)
    assert reasons._EXPLAINERS.get(fresh) is not None
    assert np.array_equal(once, kept)


def test_the_log_odds_beside_the_contributions_are_lightgbms_to_the_bit(model_and_data):
    from riskstrat.explain import reasons
    from riskstrat.modelling.model import model_matrix

    booster, X = model_and_data
    for rows in (X, model_matrix(booster, X)):
        contrib, log_odds = reasons.contributions_and_log_odds(booster, rows, keep=False)
        np.testing.assert_array_equal(log_odds, booster.predict(X, raw_score=True))
        np.testing.assert_array_equal(contrib, shap_contributions(booster, rows))
    empty, none = reasons.contributions_and_log_odds(booster, X.head(0))
    assert empty.shape == (0, booster.num_feature() + 1) and none.shape == (0,)


def test_log_odds_that_differ_from_lightgbms_stop_the_run(model_and_data, monkeypatch):
    # Every call checks rows spread over the input against LightGBM itself: one value a
    # single step off on a checked row (say, a split decided differently) is refused.
    from riskstrat.explain import reasons
    from riskstrat.explain.treeshap import TreeShapExplainer

    booster, X = model_and_data
    explained = TreeShapExplainer.shap_values_and_raw_scores

    def one_off(self, rows, **kwargs):
        contrib, raw = explained(self, rows, **kwargs)
        raw[len(raw) - 1] = np.nextafter(raw[-1], np.inf)  # the last row is always checked
        return contrib, raw

    assert len(X) > reasons.CHECKED_ROWS
    monkeypatch.setattr(TreeShapExplainer, "shap_values_and_raw_scores", one_off)
    with pytest.raises(RuntimeError, match="differ from LightGBM"):
        reasons.contributions_and_log_odds(booster, X, keep=False)


@pytest.mark.parametrize("groups", [1, 2, 4, 15])
@pytest.mark.parametrize(("up", "down"), [(3, 1), (0, 2), (5, 5), (1, 0)])
def test_each_rows_slots_are_the_stable_argsorts_first_and_last_groups(groups, up, down):
    # Ties (0.0 and -0.0 too), NaNs and more slots than groups, against the definition.
    from riskstrat.explain.reasons import top_groups

    rng = np.random.default_rng(groups * 10 + up)
    grouped = rng.choice([0.0, -0.0, 1.0, -1.0, 2.5, np.nan, 0.5], size=(3000, groups))
    points = rng.choice([0.0, 0.0005, -0.002, 0.3, -0.001, 0.001, np.nan], size=(3000, groups))
    order = np.argsort(-grouped, axis=1, kind="stable")
    rows = np.arange(len(grouped))[:, None]
    first, last = order[:, :up], order[:, ::-1][:, :down]
    chosen, shown = top_groups(grouped, points, up, down, 0.001)
    np.testing.assert_array_equal(chosen, np.concatenate([first, last], axis=1))
    want = np.concatenate([points[rows, first] >= 0.001, points[rows, last] <= -0.001], axis=1)
    np.testing.assert_array_equal(shown, want)


def test_json_numbers_are_written_as_orjson_writes_the_rounded_value():
    """Sizes are written from whole numbers (k / 10**places, trailing zeros dropped): for
    every kind of value that is the shortest text of the rounded double, as orjson writes."""
    import orjson

    from riskstrat.explain._json_kernels import kernels
    from riskstrat.explain.reasons import _scaled

    kernels()  # compiled; the helpers below are then numba functions, callable from here
    from riskstrat.explain import _json_kernels as k

    rng = np.random.default_rng(11)
    values = np.concatenate(
        [
            rng.normal(0, 5, 20_000),
            rng.normal(0, 0.001, 5_000),  # around zero: -0.0 among them
            rng.uniform(-100, 100, 5_000).round(3),
            np.array([0.0, -0.0, 100.0, 99.9995, 0.0005, -0.00005, 1e-4, 12345.6785, 2.5e6]),
        ]
    )
    for places in (3, 4):
        scaled, negative = _scaled(values, places)
        buffer = np.zeros(64, dtype=np.uint8)
        for v, s, neg in zip(values.tolist(), scaled.tolist(), negative.tolist(), strict=True):
            end = k._write_number(buffer, 0, s, neg, places)
            text = bytes(buffer[:end]).decode()
            assert text == orjson.dumps(float(np.round(v, places))).decode(), (v, places)
            assert k._number_length(s, neg, places) == end


@pytest.mark.parametrize("key", ["long_term_conditions", "medicines"])
def test_rows_with_equal_words_keys_are_worded_alike(key):
    """A group whose words depend on its contributions is worded once per distinct words
    key: every row must then read exactly as its key's first row does (many conditions and
    notable medicines at once, contributions of both signs, both directions)."""
    from riskstrat.explain.reasons import _distinct_rows
    from riskstrat.explain.wording import REASON_GROUPS

    group = next(g for g in REASON_GROUPS if g.key == key)
    rng = np.random.default_rng(13)
    n, k = 20_000, len(group.features)
    values = rng.choice([np.nan, 0.0, 1.0, 2.0, 0.5, -1.0, 7.0], size=(n, k), p=[.05, .5, .25, .1, .04, .01, .05])  # fmt: skip
    contrib = rng.normal(0, 0.1, size=(n, k)) * (rng.random((n, k)) < 0.9)
    raises = rng.random(n) < 0.7
    assert group.words_key is not None
    words_key = np.concatenate([group.words_key(values, contrib, raises), raises[:, None]], axis=1)
    first, inverse = _distinct_rows(words_key)
    # coarser than the values themselves (which the contributions make finer still)
    assert len(first) < len(_distinct_rows(np.where(np.isnan(values), np.inf, values))[0])

    def words(i: int) -> str:
        v = {f: (None if x != x else x) for f, x in zip(group.features, values[i].tolist())}
        fc = dict(zip(group.features, contrib[i].tolist(), strict=True))
        return group.phrase(v, fc, bool(raises[i]))

    representative = [words(int(i)) for i in first]
    for i in range(n):
        assert words(i) == representative[inverse[i]], i


def test_groups_read_only_the_features_they_declare(model_and_data):
    """A group worded from fewer features than it sizes (``reads``) reads no others: its
    words from those features alone equal its words from all of them."""
    from riskstrat.explain.wording import REASON_GROUPS

    _, X = model_and_data
    rng = np.random.default_rng(17)
    sample = X.head(2000).copy()
    sample["bmi_latest"] = rng.normal(27, 6, len(sample)).round(1)
    sample["days_since_last_emergency_admission"] = rng.integers(-5, 2000, len(sample))
    for group in (g for g in REASON_GROUPS if g.reads is not None):
        for row in sample.to_dict(orient="records"):
            every = {f: row.get(f) for f in group.features}
            read = {f: row.get(f) for f in group.words_from}
            for raises in (True, False):
                assert group.phrase(read, {}, raises) == group.phrase(every, {}, raises)
