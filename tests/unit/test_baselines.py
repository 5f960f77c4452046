"""Baselines fit on their own features and give probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from riskstrat.modelling.baselines import BASELINE_NAMES, fit_baselines


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    n = 20000
    X = pd.DataFrame(
        {
            "emergency_admissions_365d": rng.poisson(0.2, n).astype(float),
            "age_years": rng.integers(0, 100, n).astype(float),
            "efi": rng.uniform(0, 0.5, n),
            "imd_decile": np.where(rng.random(n) < 0.05, np.nan, rng.integers(1, 11, n)),
        }
    )
    logit = -5 + 0.9 * X.emergency_admissions_365d + 0.03 * X.age_years + 2 * X.efi
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return X, y


def test_each_baseline_ranks_better_than_chance_and_uses_its_own_features(data):
    X, y = data
    fitted = fit_baselines(BASELINE_NAMES, X[:15000], y[:15000])
    assert set(fitted) == set(BASELINE_NAMES)
    assert fitted["prior_admissions_and_age"].columns_ == ["emergency_admissions_365d", "age_years"]
    assert fitted["efi"].columns_ == ["efi"]
    assert fitted["logistic_regression"].columns_ == list(X.columns)
    for baseline in fitted.values():
        p = baseline.predict_proba(X[15000:])
        assert ((p > 0) & (p < 1)).all()
        assert roc_auc_score(y[15000:], p) > 0.55


def test_efi_baseline_ranks_exactly_by_efi(data):
    X, y = data
    p = fit_baselines(["efi"], X, y)["efi"].predict_proba(X)
    assert roc_auc_score(y, p) == pytest.approx(roc_auc_score(y, X.efi))


def test_missing_values_are_handled(data):
    X, y = data
    fitted = fit_baselines(["logistic_regression"], X, y)["logistic_regression"]
    assert np.isfinite(fitted.predict_proba(X.head(100).assign(imd_decile=np.nan))).all()
