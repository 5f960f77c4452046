"""The seasonal baseline (riskstrat.modelling.seasons) on small known seasons."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from riskstrat.calendar import add_months
from riskstrat.modelling.model import RiskModel
from riskstrat.modelling.seasons import (
    SeasonalBaseline,
    fit_seasonal_baseline,
    seasonal_booster,
)


def _rows(n: int, *, seed: int, cos: float, sin: float, trend: float) -> pd.DataFrame:
    """``n`` rows over 24 index months with a known season and drift; age raises the risk."""
    rng = np.random.default_rng(seed)
    step = rng.integers(0, 24, n)
    dates = np.array([add_months(date(2024, 1, 1), int(k)) for k in range(24)])[step]
    months = np.array([d.month for d in dates], dtype=np.float64)
    age = rng.uniform(0, 90, n)
    season = SeasonalBaseline(cos=cos, sin=sin).log_odds(months)
    eta = -4.0 + 0.03 * age + season + trend * step / 12
    return pd.DataFrame(
        {
            "age_years": age,
            "index_month": months,
            "index_date": dates,
            "label": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int),
        }
    )


def test_the_fit_recovers_a_known_season_beside_a_drift():
    rows = _rows(300_000, seed=1, cos=0.2, sin=-0.1, trend=-0.15)
    fit = fit_seasonal_baseline(rows["index_month"], rows["label"], index_dates=rows["index_date"])
    # Marginal over age, so a little weaker than the per-person effect; within 0.03.
    assert fit.cos == pytest.approx(0.2, abs=0.03)
    assert fit.sin == pytest.approx(-0.1, abs=0.03)
    assert fit.trend_per_year == pytest.approx(-0.15, abs=0.03)
    assert fit.intercept == pytest.approx(np.log(rows["label"].mean() / (1 - rows["label"].mean())))
    assert fit.peak_month == 12
    assert fit.peak_to_trough == pytest.approx(np.exp(2 * np.hypot(fit.cos, fit.sin)))


def test_the_fit_refuses_one_month_or_one_outcome():
    with pytest.raises(ValueError, match="more than one calendar month"):
        fit_seasonal_baseline([1, 1, 1], [0, 1, 0])
    with pytest.raises(ValueError, match="with and without"):
        fit_seasonal_baseline([1, 2, 3], [0, 0, 0])


def test_the_booster_is_one_tree_that_reproduces_the_baseline():
    baseline = SeasonalBaseline(intercept=-3.5, cos=0.12, sin=-0.05)
    booster = seasonal_booster(baseline, ["age_years", "index_month"])
    assert booster.num_trees() == 1
    grid = np.column_stack([np.full(12, 40.0), np.arange(1, 13, dtype=np.float64)])
    np.testing.assert_allclose(
        booster.predict(grid), baseline.log_odds(np.arange(1, 13)), atol=1e-9
    )
    with pytest.raises(ValueError, match="index_month"):
        seasonal_booster(baseline, ["age_years"])


def test_a_model_with_a_seasonal_baseline_starts_from_it_and_never_splits_on_the_month_again():
    rows = _rows(20_000, seed=2, cos=0.3, sin=0.0, trend=0.0)
    X, y = rows[["age_years", "index_month"]], rows["label"]
    model = RiskModel(
        params={"num_leaves": 7, "min_data_in_leaf": 50, "seed": 1, "num_threads": 1},
        num_boost_round=30,
        early_stopping_rounds=None,
        seasonal_baseline=True,
    ).fit(X, y, index_dates=rows["index_date"])
    trees = model.booster_.dump_model()["tree_info"]
    month = model.feature_names_.index("index_month")

    def split_features(node: dict) -> set[int]:
        if "leaf_value" in node:
            return set()
        return (
            {node["split_feature"]}
            | split_features(node["left_child"])
            | split_features(node["right_child"])
        )

    assert trees[0]["num_leaves"] == 12 and split_features(trees[0]["tree_structure"]) == {month}
    assert all(month not in split_features(t["tree_structure"]) for t in trees[1:])
    assert len(trees) == model.best_iteration_ == 31  # the baseline's tree and 30 rounds
    assert model.seasonal_baseline_ is not None and model.seasonal_baseline_.peak_month == 1
    with pytest.raises(ValueError, match="index_month"):
        RiskModel(seasonal_baseline=True).fit(X[["age_years"]], y)
