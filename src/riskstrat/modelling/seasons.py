"""The season as the trees' starting point: a baseline in the index month, inside the model.

Emergency admissions rise every winter, so a month's risk depends on its season as well as on
the person. Boosted trees given the index month as a feature learn only part of that rise
before early stopping ends them: with the generator's winter rise (a January 90-day risk
about 1.3 times June's), a model of 50,000 or 100,000 people calibrated on a January and
judged on a June had O/E 0.81-0.87. The calibrator cannot help, because it is fitted on one
month, about five months before the primary held-out month, so usually in the other season
(docs/guides/analyst.md, "Seasons").

So the trees can start from the season instead of having to find it: a harmonic in the index
month, ``intercept + cos * cos(2 pi (m - 1) / 12) + sin * sin(2 pi (m - 1) / 12)``, fitted
to the training rows' outcomes by logistic regression (with a linear trend in time beside it,
so that a population whose admission rate drifts over the window does not pass the drift off
as season; the trend is not applied). Its estimate pools every row, so it is precise even
where the trees could not learn it. It goes into the model as its first tree, one leaf per
calendar month, so the booster stays self-contained: scoring, exact TreeSHAP (the baseline is
part of the ``index_month`` contribution, "time of year"), recalibration and the registry need
nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.linear_model import LogisticRegression

#: The feature the baseline reads: the calendar month of the index date, 1..12.
SEASON_FEATURE = "index_month"

FloatArray = npt.NDArray[np.float64]


def _harmonics(months: npt.ArrayLike) -> FloatArray:
    angle = 2.0 * np.pi * (np.asarray(months, dtype=np.float64) - 1.0) / 12.0
    return np.column_stack([np.cos(angle), np.sin(angle)])


@dataclass(frozen=True)
class SeasonalBaseline:
    """Log-odds of the outcome by calendar month: ``intercept`` plus a yearly harmonic.

    ``trend_per_year`` is the drift in log-odds per year estimated beside the harmonic; it is
    reported, never applied (the calibrator anchors the level to the newest month).
    """

    intercept: float = 0.0
    cos: float = 0.0
    sin: float = 0.0
    trend_per_year: float = 0.0

    def log_odds(self, months: npt.ArrayLike) -> FloatArray:
        """The baseline's log-odds for each calendar month in ``months`` (1..12)."""
        h = _harmonics(months)
        out: FloatArray = self.intercept + h[:, 0] * self.cos + h[:, 1] * self.sin
        return out

    @property
    def peak_to_trough(self) -> float:
        """The highest month's odds over the lowest month's (1.0: no season)."""
        return float(np.exp(2.0 * np.hypot(self.cos, self.sin)))

    @property
    def peak_month(self) -> int:
        """The calendar month (1..12) nearest the harmonic's peak."""
        angle = np.arctan2(self.sin, self.cos) % (2.0 * np.pi)
        return int(np.rint(angle / (2.0 * np.pi) * 12.0)) % 12 + 1

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {"peak_to_trough": self.peak_to_trough, "peak_month": self.peak_month}


def fit_seasonal_baseline(
    months: npt.ArrayLike, y: npt.ArrayLike, *, index_dates: npt.ArrayLike | None = None
) -> SeasonalBaseline:
    """Fit the harmonic in the calendar month to the outcomes (unpenalised logistic regression).

    Args:
        months: each row's calendar month of the index date (1..12).
        y: each row's outcome (0 or 1).
        index_dates: each row's index date; with them a linear trend in time is fitted beside
            the harmonic, so that a drifting admission rate is not taken for season. A year
            of months or more separates the two (12-19 months of a 20,000-person population
            gave the same season, with or without the trend).

    Returns:
        The baseline, its intercept the log-odds of the overall outcome rate (where boosting
        would start without it).

    Raises:
        ValueError: fewer than two calendar months, or an outcome that never or always occurs.
    """
    frame = pd.DataFrame({"month": np.asarray(months, dtype=np.float64), "y": np.asarray(y)})
    frame["t"] = 0.0
    if index_dates is not None:
        days = pd.to_datetime(pd.Series(np.asarray(index_dates))).to_numpy()
        frame["t"] = (days - days.min()) / np.timedelta64(1, "D") / 365.25
    if frame["month"].nunique() < 2:
        raise ValueError("a seasonal baseline needs rows from more than one calendar month")
    rate = float(frame["y"].mean())
    if not 0.0 < rate < 1.0:
        raise ValueError("a seasonal baseline needs rows with and without the outcome")
    # One row per month, time and outcome, weighted by its count: the same fit as on every
    # row, in a few dozen rows.
    counts = frame.groupby(["month", "t", "y"]).size().reset_index(name="n")
    X = np.column_stack([_harmonics(counts["month"]), counts["t"].to_numpy()])
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(
        X, counts["y"].to_numpy(), sample_weight=counts["n"].to_numpy(dtype=np.float64)
    )
    cos, sin, trend = (float(c) for c in fit.coef_[0])
    return SeasonalBaseline(
        intercept=float(np.log(rate / (1.0 - rate))), cos=cos, sin=sin, trend_per_year=trend
    )


def seasonal_booster(baseline: SeasonalBaseline, feature_names: Sequence[str]) -> lgb.Booster:
    """One LightGBM tree over ``feature_names`` whose leaves are the baseline, a leaf per
    calendar month: the first tree of a model that starts from the season (``init_model``).

    Raises:
        ValueError: ``feature_names`` lacks :data:`SEASON_FEATURE`.
        RuntimeError: the tree does not reproduce the baseline (it always should).
    """
    names = list(feature_names)
    if SEASON_FEATURE not in names:
        raise ValueError(f"a seasonal baseline needs {SEASON_FEATURE} among the features")
    months = np.arange(1, 13, dtype=np.float64)
    grid = pd.DataFrame(0.0, index=range(12), columns=names)
    grid[SEASON_FEATURE] = months
    target = baseline.log_odds(months)
    params = {
        "objective": "regression",
        "learning_rate": 1.0,
        "num_leaves": 12,
        "min_data_in_leaf": 1,
        "min_data_in_bin": 1,
        "min_sum_hessian_in_leaf": 0.0,
        "lambda_l2": 0.0,
        "num_threads": 1,
        "deterministic": True,
        "verbosity": -1,
    }
    data = lgb.Dataset(grid.to_numpy(dtype=np.float32), label=target, feature_name=names,
                       params={"min_data_in_bin": 1})  # fmt: skip
    booster = lgb.train(params, data, num_boost_round=1)
    if not np.allclose(booster.predict(grid.to_numpy(dtype=np.float32)), target, atol=1e-9):
        raise RuntimeError("the seasonal tree does not reproduce the baseline")
    return booster
