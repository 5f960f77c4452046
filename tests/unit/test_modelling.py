"""Index month planning, the risk model wrapper and the metrics."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from riskstrat.evaluation import discrimination_metrics
from riskstrat.modelling import RiskModel, add_months, latest_complete_month, plan_index_months


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
    months = [*plan.train_months, *plan.early_stopping_months]
    assert months[-1] == date(2026, 5, 1)  # its window ends 2026-07-30, before validation
    assert len(months) == 12 and plan.early_stopping_months == (date(2026, 5, 1),)
    assert all(b == add_months(a, 1) for a, b in itertools.pairwise(months))


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
