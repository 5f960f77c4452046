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
_SMALL_FEATURES: dict[str, tuple[str, ...]] = {
    "prior_admissions_and_age": ("emergency_admissions_365d", "age_years"),
    "efi": ("efi",),
}


class Baseline:
    """A fitted baseline: ``predict_proba(X)`` gives probabilities for a feature frame."""

    def __init__(
        self, name: BaselineName, *, features: Sequence[str], max_rows: int = 400_000, seed: int = 0
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
        target = np.asarray(y)
        if len(X) > self.max_rows:  # a linear model does not need millions of rows
            keep = np.random.default_rng(self.seed).choice(len(X), self.max_rows, replace=False)
            X, target = X.iloc[np.sort(keep)], target[np.sort(keep)]
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


def fit_baselines(
    names: Sequence[BaselineName], X: pd.DataFrame, y: npt.ArrayLike, *, seed: int = 0
) -> dict[str, Baseline]:
    """Fit each named baseline on the training rows."""
    return {n: Baseline(n, features=list(X.columns), seed=seed).fit(X, y) for n in names}
