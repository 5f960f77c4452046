"""The MLflow registry round trip on a local SQLite store."""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from riskstrat.registry import CHAMPION, ModelNotFoundError, ModelRegistry


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts"
    )


def _booster(seed: int) -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age_years": rng.integers(0, 100, 2000).astype(float),
            "emergency_admissions_365d": rng.poisson(0.2, 2000).astype(float),
        }
    )
    y = rng.random(2000) < 0.02 + 0.002 * X.age_years
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 7, "seed": seed},
        lgb.Dataset(X, label=y),
        num_boost_round=20,
    )
    return booster, X


def _log(registry, booster, X, aliases=(CHAMPION,)):
    return registry.log_training_run(
        model_name="test-model",
        booster=booster,
        X_example=X,
        params={"a": 1, "months": ["x"]},
        metrics={"validation_auroc": 0.7, "validation_auprc": 0.1, "validation_brier": 0.02},
        tags={"riskstrat.validation_month": "2026-08-01"},
        json_artifacts={"plan.json": {"months": 3}},
        set_aliases=aliases,
    )


def test_register_and_load_by_alias_returns_the_same_probabilities(registry):
    booster, X = _booster(1)
    info = _log(registry, booster, X)
    assert info.version == "1" and CHAMPION in info.aliases
    assert info.metrics["validation_auroc"] == pytest.approx(0.7)
    loaded = registry.load("test-model", CHAMPION)
    expected = booster.predict(X.to_numpy(np.float32))
    got = loaded.booster.predict(X.to_numpy(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert ((got > 0) & (got < 1)).all() and len(np.unique(got)) > 2  # probabilities, not labels
    assert loaded.feature_names == ["age_years", "emergency_admissions_365d"]


def test_a_new_version_takes_the_alias(registry):
    b1, X = _booster(1)
    b2, _ = _booster(2)
    _log(registry, b1, X)
    second = _log(registry, b2, X)
    assert registry.describe("test-model", CHAMPION).version == second.version == "2"
    assert registry.describe("test-model", "1").aliases == ()


def test_unknown_model_or_alias(registry):
    with pytest.raises(ModelNotFoundError):
        registry.describe("test-model", CHAMPION)
    booster, X = _booster(1)
    _log(registry, booster, X, aliases=())
    with pytest.raises(ModelNotFoundError):
        registry.load("test-model", CHAMPION)
    assert registry.load("test-model", "1").info.version == "1"


def test_signature_has_columns_but_no_example_rows(registry, tmp_path):
    booster, X = _booster(3)
    _log(registry, booster, X)
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert not [p for p in files if "input_example" in p.name]
    mlmodel = next(p for p in files if p.name == "MLmodel").read_text()
    assert "age_years" in mlmodel and "signature" in mlmodel
    text = "".join(
        p.read_text(errors="ignore") for p in files if p.suffix in {".json", ".yaml", ""}
    )
    assert not re.search(r"999\d{7}", text)
