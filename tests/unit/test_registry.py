"""The MLflow registry round trip on a local SQLite store and on PostgreSQL."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from riskstrat.modelling.model import RiskModel
from riskstrat.modelling.registry import CHALLENGER, CHAMPION, ModelNotFoundError, ModelRegistry
from tests.support.postgres import postgres_url

# Slow: MLflow stores and model logging (one to two seconds each).
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request, tmp_path) -> ModelRegistry:
    """MLflow's tracking and registry store on SQLite (the default) or PostgreSQL."""
    if request.param == "sqlite":
        yield ModelRegistry(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts"
        )
        return
    urls = postgres_url()
    yield ModelRegistry(tracking_uri=next(urls), artifact_root=tmp_path / "artifacts")
    next(urls, None)


def _model(seed: int, calibration: str = "platt") -> tuple[RiskModel, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age_years": rng.integers(0, 100, 3000).astype(float),
            "emergency_admissions_365d": rng.poisson(0.2, 3000).astype(float),
        }
    )
    y = rng.random(3000) < 0.02 + 0.002 * X.age_years
    model = RiskModel(
        params={"num_leaves": 7, "seed": seed}, num_boost_round=20, calibration=calibration
    )  # type: ignore[arg-type]
    return model.fit(X[:2000], y[:2000], X_calibrate=X[2000:], y_calibrate=y[2000:]), X


def _log(registry, model, X, aliases=(CHALLENGER,)):
    return registry.log_training_run(
        model_name="test-model",
        model=model,
        X_example=X,
        params={"a": 1, "months": ["x"]},
        metrics={"validation_auroc": 0.7, "validation_auprc": 0.1, "validation_brier": 0.02},
        tags={"riskstrat.validation_month": "2026-08-01"},
        version_tags={"riskstrat.gates_passed": "true"},
        json_artifacts={"plan.json": {"months": 3}},
        set_aliases=aliases,
    )


@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_register_and_load_returns_the_same_calibrated_probabilities(registry, calibration):
    model, X = _model(1, calibration)
    info = _log(registry, model, X)
    assert info.version == "1" and info.aliases == (CHALLENGER,)
    assert info.metrics["validation_auroc"] == pytest.approx(0.7)
    assert info.tags["riskstrat.gates_passed"] == "true"
    loaded = registry.load("test-model", CHALLENGER)
    from riskstrat.modelling.model import predict_risk

    np.testing.assert_allclose(
        predict_risk(loaded.booster, X, loaded.calibrator), model.predict_proba(X), rtol=1e-12
    )
    assert loaded.calibrator == model.calibrator_
    assert loaded.feature_names == ["age_years", "emergency_admissions_365d"]


def test_mlflow_pyfunc_returns_calibrated_probabilities_not_labels(registry):
    import mlflow

    model, X = _model(2)
    _log(registry, model, X)
    mlflow.set_tracking_uri(registry.tracking_uri)
    got = mlflow.pyfunc.load_model("models:/test-model@challenger").predict(X)
    np.testing.assert_allclose(np.asarray(got), model.predict_proba(X), rtol=1e-12)
    assert len(np.unique(got)) > 2 and ((got > 0) & (got < 1)).all()


def test_aliases_and_versions(registry):
    m1, X = _model(1)
    m2, _ = _model(2)
    _log(registry, m1, X)
    _log(registry, m2, X)
    assert registry.describe("test-model", CHALLENGER).version == "2"
    registry.set_alias("test-model", CHAMPION, "1")
    registry.set_version_tags("test-model", "1", {"riskstrat.promotion.decision": "promoted"})
    listed = registry.versions("test-model")
    assert [v.version for v in listed] == ["2", "1"]
    assert listed[1].aliases == (CHAMPION,) and listed[0].aliases == (CHALLENGER,)
    assert listed[1].tags["riskstrat.promotion.decision"] == "promoted"


def test_unknown_model_or_alias(registry):
    with pytest.raises(ModelNotFoundError):
        registry.describe("test-model", CHAMPION)
    assert registry.versions("test-model") == []
    model, X = _model(1)
    _log(registry, model, X, aliases=())
    with pytest.raises(ModelNotFoundError):
        registry.load("test-model", CHAMPION)
    assert registry.load("test-model", "1").info.version == "1"


def test_no_pickles_no_example_rows_and_no_nhs_numbers_in_artifacts(registry, tmp_path):
    model, X = _model(3)
    _log(registry, model, X)
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert not [n for n in names if "input_example" in n or n.endswith((".pkl", ".pickle"))]
    assert {"booster.txt", "calibrator.json", "MLmodel"} <= names
    mlmodel = next(p for p in files if p.name == "MLmodel").read_text()
    assert "age_years" in mlmodel and "signature" in mlmodel
    text = "".join(p.read_text(errors="ignore") for p in files)
    assert not re.search(r"(?<![\d.])999\d{7}(?![\d.])", text)  # no NHS-number-like tokens


def test_mlflow_ui_runs_on_loopback_on_this_store(registry):
    from pathlib import Path

    command = registry.ui_command(port=5001)
    assert Path(command[0]).name == "mlflow" and Path(command[0]).is_file()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1] == registry.tracking_uri
