"""Simple models every version is compared with, on the same rows.

- ``logistic_regression``: logistic regression on the same features (median-imputed with
  missing-value indicators, standardised).
- ``prior_admissions_and_age``: logistic regression on emergency admissions in the last
  year and age: the score a practice could work out by hand.
- ``efi``: the electronic frailty index alone (ranked by eFI; logistic link for a probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

BaselineName = Literal["logistic_regression", "prior_admissions_and_age", "efi"]
BASELINE_NAMES: tuple[BaselineName, ...] = (
    "logistic_regression",
    "prior_admissions_and_age",
    "efi",
)
BASELINE_LABELS: dict[str, str] = {
    "logistic_regression": "Logistic regression, same features",
    "prior_admissions_and_age": "Prior emergency admissions + age",
    "efi": "Electronic frailty index",
}
#: Rows a baseline is fitted on, at most (``baseline_rows``).
MAX_ROWS = 400_000
#: Rows imputed and scaled at a time when a baseline predicts (``Baseline.predict_proba``).
PREPARE_CHUNK_ROWS = 100_000
_SMALL_FEATURES: dict[str, tuple[str, ...]] = {
    "prior_admissions_and_age": ("emergency_admissions_365d", "age_years"),
    "efi": ("efi",),
}


class Baseline:
    """A fitted baseline: ``predict_proba(X)`` gives probabilities for a feature frame."""

    def __init__(
        self,
        name: BaselineName,
        *,
        features: Sequence[str],
        max_rows: int = MAX_ROWS,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.features = features
        self.max_rows = max_rows
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: npt.ArrayLike) -> Baseline:
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        columns = list(_SMALL_FEATURES.get(self.name, tuple(self.features)))
        X, target = baseline_rows(X, y, max_rows=self.max_rows, seed=self.seed)
        self.columns_ = columns
        # The steps are fitted one after another, as the pipeline would fit them, so that
        # each copy of the rows is let go once the next is made; the imputer and the scaler
        # work in place. The median is taken a column at a time (``_median``): the same
        # values as strategy="median", without sorting a masked copy of every row at once.
        imputer = SimpleImputer(
            strategy=_median, add_indicator=True, keep_empty_features=True, copy=False
        )
        prepared = imputer.fit_transform(as_float64(X, columns))
        scaler = StandardScaler(copy=False)
        prepared = scaler.fit_transform(prepared)
        model = LogisticRegression(max_iter=2000).fit(prepared, target)
        self.pipeline_: Any = make_pipeline(imputer, scaler, model)
        return self

    def predict_proba(
        self, X: pd.DataFrame, *, chunk_rows: int = PREPARE_CHUNK_ROWS
    ) -> npt.NDArray[np.float64]:
        """The probability of the outcome for each row of ``X``.

        Imputation and scaling (one value at a time) run ``chunk_rows`` rows at a time into
        one array that the logistic regression reads whole, in one matrix product as
        before: a product's rounding depends on how many rows it is given at once (BLAS
        splits them between threads), so chunking the product would change the last bits.
        """
        prepared = _prepared(self.pipeline_[:-1], X, self.columns_, max(chunk_rows, 2))
        return np.asarray(self.pipeline_[-1].predict_proba(prepared)[:, 1], dtype=np.float64)


def _prepared(
    prepare: Any, X: pd.DataFrame, columns: Sequence[str], chunk_rows: int
) -> npt.NDArray[np.float64]:
    """``prepare.transform`` (imputer and scaler) of ``X[columns]``, ``chunk_rows`` rows at
    a time (at least 2: a row alone has no layout, C or F, to copy) into one array laid out
    as the whole would have been, so that the product that reads it rounds alike."""
    if len(X) <= chunk_rows:
        return np.asarray(prepare.transform(as_float64(X, columns)))
    out: npt.NDArray[np.float64] | None = None
    for start in range(0, len(X), chunk_rows):
        rows = prepare.transform(as_float64(X.iloc[start : start + chunk_rows], columns))
        if out is None:
            f_only = rows.flags.f_contiguous and not rows.flags.c_contiguous
            order: Literal["C", "F"] = "F" if f_only else "C"
            out = np.empty((len(X), rows.shape[1]), dtype=np.float64, order=order)
        out[start : start + len(rows)] = rows
        del rows
    assert out is not None
    return out


def _median(values: npt.NDArray[np.float64]) -> float:
    """The median of a column's values (0 when it has none): the value SimpleImputer's
    strategy="median" gives, which is ``numpy.ma.median``'s, the mean of the two middle
    values (the middle one, when odd) of the sorted values, as ``numpy.median`` takes it."""
    return float(np.median(values)) if len(values) else 0.0


def as_float64(X: pd.DataFrame, columns: Sequence[str]) -> npt.NDArray[np.float64]:
    """``X[columns].to_numpy(dtype=np.float64, na_value=np.nan)``, always a new array, filled
    a column at a time: converting a whole block of integer columns at once makes a second
    full-size copy first. Column-major, as pandas gives it: the scaler's sums over a column
    round differently on another layout, and would change the baselines' last bits."""
    out = np.empty((len(X), len(columns)), dtype=np.float64, order="F")
    for j, name in enumerate(columns):
        out[:, j] = X[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def baseline_rows(
    X: pd.DataFrame, y: npt.ArrayLike, *, max_rows: int = MAX_ROWS, seed: int = 0
) -> tuple[pd.DataFrame, npt.NDArray[Any]]:
    """The rows a baseline is fitted on: all of them, or a reproducible random
    ``max_rows`` of them, in their order (a linear model does not need millions of rows).
    Taking them again from what this returns changes nothing, so a caller may take them
    once, let the rest go, and fit every baseline on them."""
    target = np.asarray(y)
    if len(X) <= max_rows:
        return X, target
    keep = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
    return X.iloc[keep], target[keep]


def fit_baselines(
    names: Sequence[BaselineName], X: pd.DataFrame, y: npt.ArrayLike, *, seed: int = 0
) -> dict[str, Baseline]:
    """Fit each named baseline on the training rows."""
    return {n: Baseline(n, features=list(X.columns), seed=seed).fit(X, y) for n in names}
