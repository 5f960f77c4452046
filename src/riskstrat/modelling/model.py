"""Choosing index months, fitting the LightGBM risk model, and predicting with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.calendar import add_months, first_of_month, latest_complete_month, month_starts
from riskstrat.modelling.seasons import (
    SEASON_FEATURE,
    SeasonalBaseline,
    fit_seasonal_baseline,
    seasonal_booster,
)


@dataclass(frozen=True)
class IndexPlan:
    """Which monthly index dates do what.

    Trees are fitted on ``train_months``; ``early_stopping_months`` choose the number of trees
    (or, when there are none, people held out of the training months do); ``calibration_months``
    fit the calibrator; ``evaluation_months`` are held out for every reported metric, the last
    of them (``validation_month``) being the primary one. No stage's outcome window overlaps
    a later stage's months: consecutive months share most of their 90-day windows, so the
    same admission would otherwise be a label in the trees' rows and in the rows that judge
    them.
    """

    train_months: tuple[date, ...]
    early_stopping_months: tuple[date, ...]
    calibration_months: tuple[date, ...]
    evaluation_months: tuple[date, ...]

    @property
    def validation_month(self) -> date:
        return self.evaluation_months[-1]

    @property
    def development_months(self) -> tuple[date, ...]:
        return self.train_months + self.early_stopping_months + self.calibration_months

    @property
    def all_months(self) -> tuple[date, ...]:
        return self.development_months + self.evaluation_months

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_months": [d.isoformat() for d in self.train_months],
            "early_stopping_months": [d.isoformat() for d in self.early_stopping_months],
            "calibration_months": [d.isoformat() for d in self.calibration_months],
            "evaluation_months": [d.isoformat() for d in self.evaluation_months],
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
    calibration_months: int = 0,
    evaluation_months: int = 1,
) -> IndexPlan:
    """A temporal split with no overlap between development outcomes and evaluation months.

    The evaluation months are the latest ``evaluation_months`` index months whose whole
    outcome window lies before the extract date. Before them, newest first: calibration
    months, early-stopping months, then up to ``max_train_months`` for the trees. Each
    stage's months are the latest whose outcome windows end on or before the first month of
    the stage after it, so no outcome one stage learns from reaches into the next (a gap of
    about one horizon between stages). Every month has ``min_lookback_days`` of history
    behind it.

    Raises:
        ValueError: the extract is too short for this plan.
    """
    if evaluation_months < 1:
        raise ValueError("at least one evaluation month is needed")
    validation = latest_complete_month(extract_date, horizon_days)
    evaluation = [add_months(validation, -k) for k in range(evaluation_months - 1, -1, -1)]
    lookback_end = data_start + timedelta(days=min_lookback_days)
    earliest = first_of_month(lookback_end)
    if earliest < lookback_end:
        earliest = add_months(earliest, 1)

    def before(stage_start: date, count: int | None) -> list[date]:
        """The latest ``count`` months (all if None) whose windows end by ``stage_start``."""
        last = latest_complete_month(stage_start, horizon_days)
        months = month_starts(earliest, last) if earliest <= last else []
        return months if count is None else months[len(months) - count :] if count else []

    calibration = before(evaluation[0], calibration_months)
    nxt = calibration[0] if calibration else evaluation[0]
    stopping = before(nxt, early_stopping_months)
    nxt = stopping[0] if stopping else nxt
    train = before(nxt, None)[-max_train_months:]
    if len(calibration) < calibration_months or len(stopping) < early_stopping_months or not train:
        raise ValueError(
            f"the extract covers {data_start.isoformat()} to {extract_date.isoformat()}: too "
            f"short for {min_lookback_days} days of lookback, a {horizon_days}-day outcome window, "
            f"{evaluation_months} evaluation month(s) from {evaluation[0].isoformat()}, "
            f"{calibration_months} calibration and {early_stopping_months} early-stopping "
            "month(s) and a training month before them, each stage's outcomes ending before "
            "the next stage begins"
        )
    return IndexPlan(
        train_months=tuple(train),
        early_stopping_months=tuple(stopping),
        calibration_months=tuple(calibration),
        evaluation_months=tuple(evaluation),
    )


def hold_out_people(nhs_numbers: pd.Series, *, share: float, seed: int) -> npt.NDArray[np.bool_]:
    """True for the rows of a reproducible random ``share`` of the people in ``nhs_numbers``.

    A person's rows are all held out or all kept, and the choice depends only on the set of
    people, the share and the seed (not on row order).
    """
    people = np.sort(nhs_numbers.astype(str).unique())
    held = people[np.random.default_rng(seed).random(len(people)) < share]
    return np.asarray(nhs_numbers.astype(str).isin(held).to_numpy(), dtype=bool)


@dataclass(frozen=True)
class Calibrator:
    """Maps the trees' log-odds to calibrated probabilities.

    ``platt``: logistic regression on the log-odds, so the calibrated log-odds are
    ``a * raw + b``. It keeps the ranking strictly and keeps SHAP explanations exact (each
    contribution scales by ``a``). ``isotonic``: a non-decreasing step function of the raw
    probability (scikit-learn's IsotonicRegression, clipped). ``none``: the raw probability.
    """

    method: Literal["none", "platt", "isotonic"] = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls,
        method: Literal["none", "platt", "isotonic"],
        raw_logit: npt.ArrayLike,
        y_true: npt.ArrayLike,
    ) -> Calibrator:
        """Fit on data the trees were not fitted on."""
        z = np.asarray(raw_logit, dtype=np.float64)
        y = np.asarray(y_true, dtype=np.float64)
        if method == "none":
            return cls()
        if y.min(initial=0) == y.max(initial=0):
            raise ValueError("calibration needs people with and without the outcome")
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=np.inf, max_iter=200).fit(z.reshape(-1, 1), y)
            return cls(method="platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            iso.fit(_sigmoid(z), y)
            return cls(
                method="isotonic",
                x=tuple(float(v) for v in iso.X_thresholds_),
                y=tuple(float(v) for v in iso.y_thresholds_),
            )
        raise ValueError(f"unknown calibration method {method!r}")

    def transform(self, raw_logit: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated probabilities from the trees' log-odds."""
        z = np.asarray(raw_logit, dtype=np.float64)
        if self.method == "platt":
            return _sigmoid(self.a * z + self.b)
        if self.method == "isotonic":
            return np.interp(_sigmoid(z), self.x, self.y)
        return _sigmoid(z)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "a": self.a,
            "b": self.b,
            "x": list(self.x),
            "y": list(self.y),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(
            method=data["method"],
            a=float(data["a"]),
            b=float(data["b"]),
            x=tuple(data.get("x", ())),
            y=tuple(data.get("y", ())),
        )


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


class RiskModel:
    """Gradient-boosted trees (LightGBM) and a calibrator: the probability of the outcome.

    Follows the scikit-learn estimator contract: options in ``__init__``, learning in
    ``fit`` (which returns ``self``), learned state with a trailing underscore.
    """

    def __init__(
        self,
        *,
        params: dict[str, Any] | None = None,
        num_boost_round: int = 400,
        early_stopping_rounds: int | None = 40,
        monotone_increasing: Sequence[str] = (),
        monotone_decreasing: Sequence[str] = (),
        calibration: Literal["none", "platt", "isotonic"] = "platt",
        seasonal_baseline: bool = False,
    ) -> None:
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.monotone_increasing = monotone_increasing
        self.monotone_decreasing = monotone_decreasing
        self.calibration = calibration
        self.seasonal_baseline = seasonal_baseline

    def fit(
        self,
        X: pd.DataFrame,
        y: npt.ArrayLike,
        *,
        X_stop: pd.DataFrame | None = None,
        y_stop: npt.ArrayLike | None = None,
        X_calibrate: pd.DataFrame | None = None,
        y_calibrate: npt.ArrayLike | None = None,
        index_dates: npt.ArrayLike | None = None,
    ) -> RiskModel:
        """Fit trees on ``X, y``, stop early on ``X_stop`` and calibrate on ``X_calibrate``.

        Without calibration rows the calibrator is the identity (``method="none"``). With
        ``seasonal_baseline``, the trees start from a harmonic in ``index_month`` fitted to
        ``y`` (:mod:`riskstrat.modelling.seasons`; ``index_dates``, one per row of ``X``, let
        it tell a drift in time from the season), which is the model's first tree; the trees
        after it do not split on the month again, whose noise would undo an estimate made from
        every row. ``best_iteration_`` then counts the baseline's tree.
        """
        names = list(X.columns)
        params = {"objective": "binary", "verbosity": -1, **(self.params or {})}
        constraints = monotone_vector(names, self.monotone_increasing, self.monotone_decreasing)
        if any(constraints):
            params["monotone_constraints"] = constraints
        baseline: SeasonalBaseline | None = None
        init_model: lgb.Booster | None = None
        if self.seasonal_baseline:
            if SEASON_FEATURE not in names:
                raise ValueError(f"a seasonal baseline needs {SEASON_FEATURE} among the features")
            baseline = fit_seasonal_baseline(X[SEASON_FEATURE], y, index_dates=index_dates)
            init_model = seasonal_booster(baseline, names)
            params["feature_contri"] = [0.0 if n == SEASON_FEATURE else 1.0 for n in names]
        # Starting from a model needs the rows kept, to score them with it.
        keep_rows = init_model is not None
        train = lgb.Dataset(
            _as_float(X), label=np.asarray(y), feature_name=names, free_raw_data=not keep_rows
        )
        callbacks: list[Callable[..., Any]] = []
        valid_sets = None
        if X_stop is not None and y_stop is not None and len(X_stop) and self.early_stopping_rounds:
            valid_sets = [
                lgb.Dataset(
                    _as_float(X_stop[names]),
                    label=np.asarray(y_stop),
                    reference=train,
                    free_raw_data=not keep_rows,
                )
            ]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            params,
            train,
            num_boost_round=self.num_boost_round,
            valid_sets=valid_sets,
            callbacks=callbacks,
            init_model=init_model,
        )
        best = int(booster.best_iteration or booster.num_trees())
        # Keep only the trees early stopping chose, so every later use sees the same model.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.feature_names_ = names
        self.best_iteration_ = best
        self.monotone_constraints_ = dict(zip(names, constraints, strict=True))
        self.seasonal_baseline_ = baseline
        if X_calibrate is not None and y_calibrate is not None and len(X_calibrate):
            self.calibrator_ = Calibrator.fit(
                self.calibration, raw_log_odds(self.booster_, X_calibrate), y_calibrate
            )
        else:
            self.calibrator_ = Calibrator()
        return self

    @classmethod
    def from_fitted(cls, booster: lgb.Booster, calibrator: Calibrator) -> RiskModel:
        """A fitted model from its parts (a registered version, loaded)."""
        model = cls(calibration=calibrator.method)
        model.booster_ = booster
        model.calibrator_ = calibrator
        model.feature_names_ = list(booster.feature_name())
        model.best_iteration_ = int(booster.num_trees())
        model.monotone_constraints_ = {}
        model.seasonal_baseline_ = None  # if there was one, it is the booster's first tree
        return model

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Calibrated probability of the outcome for each row (a 1-D array)."""
        return self.calibrator_.transform(raw_log_odds(self.booster_, X))

    def predict_raw_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """The trees' own probability, before calibration."""
        return _sigmoid(raw_log_odds(self.booster_, X))


def monotone_vector(
    names: Sequence[str], increasing: Sequence[str], decreasing: Sequence[str]
) -> list[int]:
    """LightGBM's monotone_constraints for ``names``: +1 increasing, -1 decreasing, 0 free."""
    unknown = (set(increasing) | set(decreasing)) - set(names)
    if unknown:
        raise ValueError(f"monotone constraints on features the model lacks: {sorted(unknown)}")
    both = set(increasing) & set(decreasing)
    if both:
        raise ValueError(f"features both increasing and decreasing: {sorted(both)}")
    return [1 if n in set(increasing) else -1 if n in set(decreasing) else 0 for n in names]


def raw_log_odds(
    booster: lgb.Booster, X: pd.DataFrame | npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """The trees' log-odds, with columns put in the model's order (or of ``model_matrix``'s
    array, its columns already in that order)."""
    if isinstance(X, np.ndarray):
        if X.ndim != 2 or X.shape[1] != booster.num_feature():
            raise ValueError(f"a model matrix needs {booster.num_feature()} columns")
        return np.asarray(booster.predict(X, raw_score=True), dtype=np.float64)
    return raw_log_odds(booster, model_matrix(booster, X))


def predict_risk(
    booster: lgb.Booster,
    X: pd.DataFrame | npt.NDArray[np.float32],
    calibrator: Calibrator | None = None,
) -> npt.NDArray[np.float64]:
    """Calibrated probabilities (raw ones when no calibrator is given)."""
    return calibrated_risk(raw_log_odds(booster, X), calibrator)


def calibrated_risk(
    log_odds: npt.NDArray[np.float64], calibrator: Calibrator | None = None
) -> npt.NDArray[np.float64]:
    """The trees' log-odds as calibrated probabilities (raw ones when no calibrator is given)."""
    return (calibrator or Calibrator()).transform(log_odds)


def model_matrix(
    booster: lgb.Booster, X: pd.DataFrame, rows: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float32]:
    """The model's features of ``X`` as the trees read them: float32 (missing as NaN), in
    the model's column order, one row after another in memory. Made once, it serves both
    the prediction and TreeSHAP (``riskstrat.explain.reasons.shap_contributions``).

    With ``rows`` (a mask of ``X``'s rows), only those rows: the same numbers as from
    ``X.loc[rows]``.

    The columns are converted one at a time into a column-major array, which is then
    transposed in one copy: no copy of the frame's columns in their own types first (for
    735,222 people, 0.5-0.6 s down to 0.3 s, most of it the first touch of fresh memory)."""
    names = booster.feature_name()
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise ValueError(f"features missing for the model: {', '.join(missing[:5])}")
    if rows is not None and rows.shape != (len(X),):
        raise ValueError("rows must be a mask of X's rows")
    n = len(X) if rows is None else int(np.count_nonzero(rows))
    by_column = np.empty((len(names), n), dtype=np.float32)
    for j, name in enumerate(names):
        column = X[name].to_numpy(dtype=np.float32, na_value=np.nan)
        by_column[j] = column if rows is None else column[rows]
    return np.ascontiguousarray(by_column.T)


def _as_float(X: pd.DataFrame) -> npt.NDArray[np.float32]:
    return X.to_numpy(dtype=np.float32, na_value=np.nan)
