"""Choosing index months, fitting the LightGBM risk model, and predicting with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd


def first_of_month(d: date) -> date:
    return d.replace(day=1)


def add_months(d: date, months: int) -> date:
    """The first day of the month ``months`` after the month of ``d``."""
    total = d.year * 12 + (d.month - 1) + months
    return date(total // 12, total % 12 + 1, 1)


def month_starts(first: date, last: date) -> list[date]:
    """Every first-of-month from ``first`` to ``last`` inclusive (both firsts of months)."""
    out, d = [], first_of_month(first)
    while d <= last:
        out.append(d)
        d = add_months(d, 1)
    return out


@dataclass(frozen=True)
class IndexPlan:
    """Which monthly index dates train the model and which one validates it."""

    train_months: tuple[date, ...]
    early_stopping_months: tuple[date, ...]
    validation_month: date

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_months": [d.isoformat() for d in self.train_months],
            "early_stopping_months": [d.isoformat() for d in self.early_stopping_months],
            "validation_month": self.validation_month.isoformat(),
        }


def plan_index_months(
    *,
    data_start: date,
    extract_date: date,
    horizon_days: int,
    min_lookback_days: int,
    max_train_months: int,
    early_stopping_months: int = 0,
) -> IndexPlan:
    """A temporal split with no overlap between training outcomes and the validation month.

    The validation month is the latest index month whose whole outcome window lies before
    the extract date. Training months are those whose outcome window ends on or before the
    validation index date (so no training label looks past it) and that have
    ``min_lookback_days`` of history behind them; the most recent ``max_train_months`` are
    used, the latest ``early_stopping_months`` of which only steer early stopping.

    Raises:
        ValueError: the extract is too short to train and validate.
    """
    validation = latest_complete_month(extract_date, horizon_days)
    last_train = latest_complete_month(validation, horizon_days)
    lookback_end = data_start + timedelta(days=min_lookback_days)
    earliest = first_of_month(lookback_end)
    if earliest < lookback_end:
        earliest = add_months(earliest, 1)
    months = month_starts(earliest, last_train) if earliest <= last_train else []
    needed = early_stopping_months + 1
    if len(months) < needed:
        raise ValueError(
            f"the extract covers {data_start.isoformat()} to {extract_date.isoformat()}: too "
            f"short for {min_lookback_days} days of lookback, a {horizon_days}-day outcome window "
            f"and {needed} training month(s) before the validation month "
            f"{validation.isoformat()}"
        )
    months = months[-max_train_months:]
    stop = tuple(months[len(months) - early_stopping_months :]) if early_stopping_months else ()
    fit = tuple(months[: len(months) - early_stopping_months])
    return IndexPlan(train_months=fit, early_stopping_months=stop, validation_month=validation)


def latest_complete_month(extract_date: date, horizon_days: int) -> date:
    """The latest index month whose outcome window is complete in an extract."""
    validation = first_of_month(extract_date - timedelta(days=horizon_days))
    while validation + timedelta(days=horizon_days) > extract_date:
        validation = add_months(validation, -1)
    return validation


class RiskModel:
    """Gradient-boosted trees (LightGBM) predicting the probability of the outcome.

    Follows the scikit-learn estimator contract: options in ``__init__``, learning in
    ``fit`` (which returns ``self``), learned state with a trailing underscore.
    """

    def __init__(
        self,
        *,
        params: dict[str, Any] | None = None,
        num_boost_round: int = 400,
        early_stopping_rounds: int | None = 40,
    ) -> None:
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds

    def fit(
        self,
        X: pd.DataFrame,
        y: npt.ArrayLike,
        *,
        X_stop: pd.DataFrame | None = None,
        y_stop: npt.ArrayLike | None = None,
    ) -> RiskModel:
        """Fit on ``X, y``; if ``X_stop, y_stop`` are given, stop early on their log loss."""
        params = {"objective": "binary", "verbosity": -1, **(self.params or {})}
        train = lgb.Dataset(
            _as_float(X), label=np.asarray(y), feature_name=list(X.columns), free_raw_data=True
        )
        callbacks: list[Callable[..., Any]] = []
        valid_sets = None
        if X_stop is not None and y_stop is not None and len(X_stop) and self.early_stopping_rounds:
            valid_sets = [lgb.Dataset(_as_float(X_stop), label=np.asarray(y_stop), reference=train)]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        self.booster_ = lgb.train(
            params,
            train,
            num_boost_round=self.num_boost_round,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        self.feature_names_ = list(X.columns)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.num_trees())
        return self

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Probability of the outcome for each row (a 1-D array)."""
        return predict_risk(self.booster_, X)


def predict_risk(booster: lgb.Booster, X: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Probabilities from a binary LightGBM booster, with columns put in the model's order."""
    names = booster.feature_name()
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise ValueError(f"features missing for the model: {', '.join(missing[:5])}")
    num_iteration = booster.best_iteration or None
    return np.asarray(
        booster.predict(_as_float(X[names]), num_iteration=num_iteration), dtype=np.float64
    )


def _as_float(X: pd.DataFrame) -> npt.NDArray[np.float32]:
    return X.to_numpy(dtype=np.float32, na_value=np.nan)
