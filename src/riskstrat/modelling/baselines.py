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
        self.pipeline_: Any = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=2000),
        ).fit(X[columns].to_numpy(dtype=np.float64, na_value=np.nan), target)
        return self

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        values = X[self.columns_].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(self.pipeline_.predict_proba(values)[:, 1], dtype=np.float64)


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
