"""Index month planning, the risk model wrapper and the metrics."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from riskstrat.modelling.evaluation import discrimination_metrics
from riskstrat.modelling.model import (
    Calibrator,
    RiskModel,
    add_months,
    hold_out_people,
    latest_complete_month,
    plan_index_months,
)


def test_plan_for_a_48_month_extract():
    plan = plan_index_months(
        data_start=date(2022, 11, 1),
        extract_date=date(2026, 11, 1),
        horizon_days=90,
        min_lookback_days=365,
        max_train_months=12,
        early_stopping_months=1,
    )
    assert plan.validation_month == date(2026, 8, 1)  # 2026-08-01 + 90 days = 2026-10-30
    assert plan.early_stopping_months == (date(2026, 5, 1),)  # window ends 2026-07-30
    # the trees' last window ends before stopping begins: 2026-01-01 + 90 days = 2026-04-01
    # (2026-02-01 + 90 days = 2026-05-02 would reach into it)
    assert plan.train_months[-1] == date(2026, 1, 1) and len(plan.train_months) == 12
    assert all(b == add_months(a, 1) for a, b in itertools.pairwise(plan.train_months))


def _stages(plan):
    return [
        s
        for s in (
            plan.train_months,
            plan.early_stopping_months,
            plan.calibration_months,
            plan.evaluation_months,
        )
        if s
    ]


@pytest.mark.parametrize("stopping,calibration", [(0, 0), (1, 0), (0, 1), (1, 1), (2, 2)])
@pytest.mark.parametrize("horizon", [30, 90, 182])
def test_no_stage_learns_an_outcome_that_reaches_the_next_stage(stopping, calibration, horizon):
    plan = plan_index_months(
        data_start=date(2020, 1, 1),
        extract_date=date(2026, 11, 1),
        horizon_days=horizon,
        min_lookback_days=365,
        max_train_months=24,
        early_stopping_months=stopping,
        calibration_months=calibration,
        evaluation_months=3,
    )
    assert len(plan.early_stopping_months) == stopping
    assert len(plan.calibration_months) == calibration
    for earlier, later in itertools.pairwise(_stages(plan)):
        assert earlier[-1] + timedelta(days=horizon) <= later[0]
        # and it is the latest month that allows it: the gap is no wider than needed
        assert add_months(earlier[-1], 1) + timedelta(days=horizon) > later[0]


def test_hold_out_people_keeps_each_persons_rows_together():
    nhs = pd.Series([f"999{i % 500:07d}" for i in range(5000)])
    held = hold_out_people(nhs, share=0.2, seed=3)
    by_person = pd.Series(held).groupby(nhs).agg(["min", "max"])
    assert (by_person["min"] == by_person["max"]).all()  # all of a person's rows, or none
    assert 0.15 < by_person["min"].mean() < 0.25
    # the same people whatever the row order
    shuffled = nhs.sample(frac=1.0, random_state=1)
    again = hold_out_people(shuffled.reset_index(drop=True), share=0.2, seed=3)
    assert set(shuffled[again]) == set(nhs[held])
    assert set(nhs[hold_out_people(nhs, share=0.2, seed=4)]) != set(nhs[held])


@pytest.mark.parametrize("extract_date", [date(2026, 11, 1), date(2026, 3, 1), date(2025, 12, 17)])
@pytest.mark.parametrize("horizon", [90, 365])
def test_plan_never_lets_training_outcomes_reach_the_validation_month(extract_date, horizon):
    plan = plan_index_months(
        data_start=extract_date - timedelta(days=365 * 6),
        extract_date=extract_date,
        horizon_days=horizon,
        min_lookback_days=365,
        max_train_months=36,
    )
    assert plan.validation_month + timedelta(days=horizon) <= extract_date
    # the next month's window would not be complete: validation is the latest possible
    assert add_months(plan.validation_month, 1) + timedelta(days=horizon) > extract_date
    for month in plan.train_months:
        assert month.day == 1 and month + timedelta(days=horizon) <= plan.validation_month
        assert month >= extract_date - timedelta(days=365 * 6) + timedelta(days=365)


def test_plan_refuses_an_extract_that_is_too_short():
    with pytest.raises(ValueError, match="too short"):
        plan_index_months(
            data_start=date(2026, 1, 1),
            extract_date=date(2026, 11, 1),
            horizon_days=90,
            min_lookback_days=365,
            max_train_months=12,
        )


def test_latest_complete_month():
    assert latest_complete_month(date(2026, 11, 1), 90) == date(2026, 8, 1)
    assert latest_complete_month(date(2026, 5, 31), 90) == date(2026, 3, 1)


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = discrimination_metrics(y, p)
    assert m["auroc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered correctly
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["auprc"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    # ranking: 0.8 (1), 0.4 (0), 0.35 (1): 70% of 2 admissions needs both -> 3 of 4 flagged
    assert m["share_flagged_for_70pct_recall"] == pytest.approx(0.75)
    assert m["event_rate"] == 0.5


def test_metrics_need_both_outcomes():
    with pytest.raises(ValueError):
        discrimination_metrics([0, 0], [0.1, 0.2])


def test_risk_model_learns_a_signal_and_returns_probabilities():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"prior": rng.poisson(0.3, 6000), "noise": rng.normal(size=6000)})
    logit = -3 + 1.2 * X.prior
    y = rng.random(6000) < 1 / (1 + np.exp(-logit))
    model = RiskModel(
        params={"num_leaves": 7, "min_data_in_leaf": 50, "seed": 1}, num_boost_round=60
    ).fit(X[:5000], y[:5000], X_stop=X[5000:], y_stop=y[5000:])
    p = model.predict_proba(X[5000:])
    assert p.min() >= 0 and p.max() <= 1
    assert discrimination_metrics(y[5000:], p)["auroc"] > 0.65
    assert model.feature_names_ == ["prior", "noise"] and model.best_iteration_ >= 1
    # column order in the input does not matter
    np.testing.assert_allclose(model.predict_proba(X[5000:][["noise", "prior"]]), p)


def test_plan_with_calibration_and_several_evaluation_months():
    plan = plan_index_months(
        data_start=date(2022, 11, 1),
        extract_date=date(2026, 11, 1),
        horizon_days=90,
        min_lookback_days=365,
        max_train_months=24,
        early_stopping_months=0,
        calibration_months=1,
        evaluation_months=3,
    )
    assert plan.evaluation_months == (date(2026, 6, 1), date(2026, 7, 1), date(2026, 8, 1))
    assert plan.validation_month == date(2026, 8, 1)
    # development outcomes end before the first evaluation month
    assert plan.calibration_months == (date(2026, 3, 1),)  # 2026-03-01 + 90 d = 2026-05-30
    assert plan.early_stopping_months == ()
    # the trees' outcomes end before calibration: 2025-12-01 + 90 d = 2026-03-01
    assert plan.train_months[-1] == date(2025, 12, 1) and len(plan.train_months) == 24
    assert plan.train_months[0] == date(2024, 1, 1)  # the newest 24 of those from 2023-11
    for month in plan.development_months:
        assert month + timedelta(days=90) <= plan.evaluation_months[0]
    assert len(set(plan.all_months)) == len(plan.all_months)


def test_twelve_month_horizon_plan_fits_in_48_months():
    plan = plan_index_months(
        data_start=date(2022, 11, 1),
        extract_date=date(2026, 11, 1),
        horizon_days=365,
        min_lookback_days=365,
        max_train_months=12,
        calibration_months=1,
        evaluation_months=1,
    )
    assert plan.validation_month == date(2025, 11, 1)
    assert plan.calibration_months == (date(2024, 11, 1),)
    assert plan.train_months == (date(2023, 11, 1),)
    # three evaluation months as well need a longer extract
    with pytest.raises(ValueError, match="too short"):
        plan_index_months(
            data_start=date(2022, 11, 1),
            extract_date=date(2026, 11, 1),
            horizon_days=365,
            min_lookback_days=365,
            max_train_months=12,
            calibration_months=1,
            evaluation_months=3,
        )


def test_one_model_matrix_serves_prediction_and_treeshap_as_the_frame_does():
    from riskstrat.explain.reasons import shap_contributions
    from riskstrat.modelling.model import model_matrix, predict_risk, raw_log_odds

    X, y = _data(seed=4, n=6000)
    X.loc[X.index[::7], "age_years"] = np.nan
    model = RiskModel(
        params={"num_leaves": 7, "min_data_in_leaf": 50, "seed": 1}, num_boost_round=40
    ).fit(X[:5000], y[:5000], X_stop=X[5000:], y_stop=y[5000:])
    rows = X[5000:][["noise", "age_years", "ltc_heart_failure", "emergency_admissions_365d"]]
    matrix = model_matrix(model.booster_, rows)  # columns put in the model's order
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
    assert list(matrix[0]) == list(rows.iloc[0][model.feature_names_].astype(np.float32))
    # column by column, the frame's own conversion: NaN, nullable integers' NA and all
    mixed = rows.astype({"emergency_admissions_365d": "Int64", "ltc_heart_failure": "int16"})
    mixed.loc[mixed.index[::5], "emergency_admissions_365d"] = pd.NA
    want = mixed[model.feature_names_].to_numpy(dtype=np.float32, na_value=np.nan)
    assert np.array_equal(model_matrix(model.booster_, mixed), want, equal_nan=True)
    assert np.isnan(want).any(axis=0).sum() == 2
    # the same numbers to the last bit as from the frame
    assert np.array_equal(raw_log_odds(model.booster_, matrix), raw_log_odds(model.booster_, rows))
    assert np.array_equal(
        predict_risk(model.booster_, matrix, model.calibrator_),
        predict_risk(model.booster_, rows, model.calibrator_),
    )
    assert np.array_equal(
        shap_contributions(model.booster_, matrix), shap_contributions(model.booster_, rows)
    )
    # some rows, taken a column at a time: the numbers of the frame's rows
    mask = np.zeros(len(rows), dtype=bool)
    mask[::3] = True
    part = model_matrix(model.booster_, rows, mask)
    assert part.flags.c_contiguous and np.array_equal(part, matrix[mask], equal_nan=True)
    assert np.array_equal(
        raw_log_odds(model.booster_, part), raw_log_odds(model.booster_, rows.loc[mask])
    )
    with pytest.raises(ValueError, match="mask"):
        model_matrix(model.booster_, rows, mask[1:])
    with pytest.raises(ValueError, match="4 columns"):
        raw_log_odds(model.booster_, matrix[:, :3])
    with pytest.raises(ValueError, match="missing"):
        model_matrix(model.booster_, rows.drop(columns="noise"))


def _data(seed=1, n=20000):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "emergency_admissions_365d": rng.poisson(0.3, n).astype(float),
            "ltc_heart_failure": (rng.random(n) < 0.05).astype(float),
            "age_years": rng.integers(0, 100, n).astype(float),
            "noise": rng.normal(size=n),
        }
    )
    logit = (
        -4.5 + 0.8 * X.emergency_admissions_365d + 1.0 * X.ltc_heart_failure + 0.02 * X.age_years
    )
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return X, y


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrator_fixes_a_shifted_model_and_round_trips(method):
    rng = np.random.default_rng(2)
    true_logit = rng.normal(-3.5, 1.2, 60000)
    y = rng.random(60000) < 1 / (1 + np.exp(-true_logit))
    raw = 0.5 * true_logit + 1.0  # too flat and too high
    cal = Calibrator.fit(method, raw[:40000], y[:40000])
    p = cal.transform(raw[40000:])
    assert abs(y[40000:].sum() / p.sum() - 1) < 0.08
    assert Calibrator.from_dict(cal.as_dict()) == cal
    order = np.argsort(raw[40000:])
    assert (np.diff(p[order]) >= -1e-12).all()  # never reverses the ranking
    if method == "platt":
        assert cal.a == pytest.approx(2.0, rel=0.1) and cal.b == pytest.approx(-2.0, abs=0.3)


def test_isotonic_calibrator_matches_scikit_learn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    raw = rng.normal(-3, 1, 5000)
    y = rng.random(5000) < 1 / (1 + np.exp(-raw))
    cal = Calibrator.fit("isotonic", raw, y)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(1 / (1 + np.exp(-raw)), y)
    grid = np.linspace(-8, 3, 500)
    np.testing.assert_allclose(
        cal.transform(grid), iso.predict(1 / (1 + np.exp(-grid))), atol=1e-12
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_monotone_constraints_hold_for_every_person(seed):
    X, y = _data(seed)
    model = RiskModel(
        params={"num_leaves": 15, "min_data_in_leaf": 50, "seed": seed},
        num_boost_round=80,
        monotone_increasing=["emergency_admissions_365d", "ltc_heart_failure"],
    ).fit(X[:14000], y[:14000], X_calibrate=X[14000:], y_calibrate=y[14000:])
    base = model.predict_proba(X)
    more = model.predict_proba(X.assign(emergency_admissions_365d=X.emergency_admissions_365d + 1))
    hf = model.predict_proba(X.assign(ltc_heart_failure=1.0))
    assert (more >= base - 1e-12).all() and (hf >= base - 1e-12).all()
    assert model.monotone_constraints_ == {
        "emergency_admissions_365d": 1,
        "ltc_heart_failure": 1,
        "age_years": 0,
        "noise": 0,
    }


def test_monotone_constraints_must_name_model_features():
    X, y = _data()
    with pytest.raises(ValueError, match="lacks"):
        RiskModel(monotone_increasing=["efi"]).fit(X, y)


def test_early_stopping_keeps_only_the_chosen_trees():
    X, y = _data(4)
    model = RiskModel(
        params={"learning_rate": 0.3, "seed": 1}, num_boost_round=500, early_stopping_rounds=10
    ).fit(X[:10000], y[:10000], X_stop=X[10000:15000], y_stop=y[10000:15000])
    assert model.booster_.num_trees() == model.best_iteration_ < 500


def test_split_by_plan_gives_each_row_one_part_and_holds_out_whole_people():
    from riskstrat.modelling.model import IndexPlan
    from riskstrat.modelling.spec import default_spec_dir, load_spec
    from riskstrat.pipelines.train import split_by_plan

    spec = load_spec(default_spec_dir())
    months = [date(2024, m, 1) for m in range(1, 13)]
    plan = IndexPlan(
        train_months=tuple(months[:8]), early_stopping_months=(),
        calibration_months=(months[9],), evaluation_months=(months[11],),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    people = [f"999{i:07d}" for i in range(400)]
    rows = [(p, m) for m in months for p in people if rng.random() < 0.9]
    frame = pd.DataFrame(rows, columns=["nhs_number", "index_date"])
    frame["label"] = rng.integers(0, 2, len(frame))
    frame.index = frame.index * 7 + 3  # labels that are not positions
    parts = split_by_plan(frame, spec, plan)

    train_months = frame["index_date"].isin(plan.train_months)
    assert sorted([*parts["train"].index, *parts["stop"].index]) == sorted(
        frame.index[train_months]
    )
    assert set(parts["train"]["nhs_number"]).isdisjoint(parts["stop"]["nhs_number"])
    share = parts["stop"]["nhs_number"].nunique() / frame["nhs_number"].nunique()
    assert share == pytest.approx(spec.training.early_stopping_people, abs=0.06)
    assert set(parts["calibrate"]["index_date"]) == {months[9]}
    assert set(parts["evaluate"]["index_date"]) == {months[11]}
    for part in parts.values():  # copies in the frame's order, with its rows' values
        assert part.index.is_monotonic_increasing
        pd.testing.assert_frame_equal(part, frame.loc[part.index])
    # with early-stopping months, those months stop and every training month's row trains
    plan_months = IndexPlan(
        train_months=tuple(months[:8]), early_stopping_months=(months[8],),
        calibration_months=(months[9],), evaluation_months=(months[11],),
    )  # fmt: skip
    by_months = split_by_plan(frame, spec, plan_months)
    assert list(by_months["train"].index) == list(frame.index[train_months])
    assert set(by_months["stop"]["index_date"]) == {months[8]}


def test_a_missing_or_invalid_spec_is_a_riskstrat_error_naming_the_file(tmp_path):
    from riskstrat.errors import ConfigError, MissingFileError
    from riskstrat.modelling.spec import default_spec_dir, load_spec

    with pytest.raises(MissingFileError, match="no model spec at") as missing:
        load_spec(tmp_path)
    assert isinstance(missing.value, FileNotFoundError)  # callers that caught it still do
    spec = tmp_path / "spec.yaml"
    good = (default_spec_dir() / "spec.yaml").read_text(encoding="utf-8")
    for text in (good + "\nnot_a_field: 1\n", "name: [unclosed\n", "- a list\n"):
        spec.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match="not a valid model spec") as invalid:
            load_spec(tmp_path)
        assert isinstance(invalid.value, ValueError)
        assert str(spec) in invalid.value.message
        assert invalid.value.hint is not None and "shows every field" in invalid.value.hint
