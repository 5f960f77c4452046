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


def _mixed_frame(n: int, seed: int) -> pd.DataFrame:
    """Columns as the training frame holds them: 16- and 32-bit integers, 32-bit floats with
    missing values, and a column missing everywhere."""
    rng = np.random.default_rng(seed)
    bmi = rng.normal(27, 5, n).astype(np.float32)
    bmi[rng.random(n) < 0.3] = np.nan
    return pd.DataFrame(
        {
            "emergency_admissions_365d": rng.poisson(0.3, n).astype(np.int16),
            "days": rng.integers(0, 40_000, n).astype(np.int32),
            "bmi_latest": bmi,
            "efi": rng.uniform(0, 0.5, n).astype(np.float32),
            "never": np.full(n, np.nan, dtype=np.float32),
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_baseline_gives_the_same_bits_as_sklearn_s_copying_pipeline(seed):
    """Imputing and scaling in place, and a chunk of rows at a time when predicting, changes
    not one bit of the probabilities (the card's baseline rows must not move)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = _mixed_frame(30_000, seed)
    y = np.random.default_rng(seed + 10).random(len(X)) < 0.1 + 0.01 * X["days"] / 4000
    before = X.copy()
    fitted = fit_baselines(["logistic_regression"], X[:20_000], y[:20_000])
    baseline = fitted["logistic_regression"]
    reference = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    ).fit(X[:20_000].to_numpy(dtype=np.float64, na_value=np.nan), y[:20_000])

    def expected(rows: pd.DataFrame) -> np.ndarray:
        return reference.predict_proba(rows.to_numpy(dtype=np.float64, na_value=np.nan))[:, 1]

    assert np.array_equal(baseline.predict_proba(X), expected(X))
    for rows, chunk_rows in ((X[:300], 1), (X[:300], 2), (X, 777), (X, 29_999)):
        assert np.array_equal(baseline.predict_proba(rows, chunk_rows=chunk_rows), expected(rows))
    pd.testing.assert_frame_equal(X, before)  # the caller's frame is never written to


def test_as_float64_equals_pandas_conversion_and_is_a_new_array():
    from riskstrat.modelling.baselines import as_float64

    X = _mixed_frame(1_000, 3)
    columns = ["bmi_latest", "emergency_admissions_365d", "never"]
    values = as_float64(X, columns)
    expected = X[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    assert values.dtype == np.float64 and values.flags.f_contiguous == expected.flags.f_contiguous
    assert np.array_equal(values, expected, equal_nan=True)
    only = pd.DataFrame({"x": np.arange(5, dtype=np.float64)})
    as_float64(only, ["x"])[:] = -1
    assert only["x"].tolist() == [0, 1, 2, 3, 4]


def test_the_imputer_s_medians_are_numpy_ma_s_exactly():
    from sklearn.impute import SimpleImputer

    from riskstrat.modelling.baselines import _median

    rng = np.random.default_rng(7)
    X = rng.normal(size=(1001, 6)) * 1e3
    X[rng.random(X.shape) < 0.4] = np.nan
    X[:, 1] = np.nan  # missing everywhere
    X[:, 2] = np.where(np.isnan(X[:, 2]), np.nan, np.round(X[:, 2] / 500))  # many ties
    X[1:, 3] = np.nan  # one value
    X[:, 4] = np.nan
    X[:2, 4] = [3.0, 8.5]  # two values: an even count
    ours = SimpleImputer(strategy=_median, keep_empty_features=True).fit(X).statistics_
    sklearn_s = SimpleImputer(strategy="median", keep_empty_features=True).fit(X).statistics_
    assert np.array_equal(ours, sklearn_s)
    assert ours[1] == 0.0 and ours[4] == 5.75


def test_a_fitted_baseline_predicts_without_warnings(data):
    import warnings

    X, y = data
    baseline = fit_baselines(["logistic_regression"], X, y)["logistic_regression"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        baseline.predict_proba(X.head(50))
