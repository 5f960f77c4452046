"""Promotion decisions: gates, the champion comparison, forcing, and what is recorded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskstrat.config import Settings
from riskstrat.modelling.model import RiskModel
from riskstrat.modelling.registry import CHALLENGER, CHAMPION, registry_for
from riskstrat.modelling.spec import ModelSpec, PromotionConfig
from riskstrat.pipelines.promote import PromotionRefused, run_promotion

NAME = "promotion-test-model"

# Slow: MLflow registry round trips with trained models.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted() -> tuple[RiskModel, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age_years": rng.integers(0, 100, 2000).astype(float)})
    y = rng.random(2000) < 0.05
    return RiskModel(params={"num_leaves": 4}, num_boost_round=5).fit(X, y), X


@pytest.fixture
def env(tmp_path, fitted):
    settings = Settings(home=tmp_path / "home")
    spec = ModelSpec(name=NAME, promotion=PromotionConfig(max_auroc_drop=0.005))
    registry = registry_for(settings)
    model, X = fitted

    def register(
        *,
        gates: bool,
        compared_with: str = "none",
        difference: float | None = None,
        alias: bool = True,
    ) -> str:
        metrics = {"validation_auroc": 0.8}
        if difference is not None:
            metrics["auroc_difference_vs_champion"] = difference
        info = registry.log_training_run(
            model_name=NAME,
            model=model,
            X_example=X,
            params={},
            metrics=metrics,
            tags={"riskstrat.gates_passed": str(gates).lower()},
            version_tags={
                "riskstrat.gate_failures": "none" if gates else "calibration O/E (overall)",
                "riskstrat.compared_with_champion": compared_with,
            },
            json_artifacts={},
            set_aliases=(CHALLENGER,) if alias else (),
        )
        return info.version

    return settings, spec, registry, register


def test_first_version_that_passes_becomes_champion(env):
    settings, spec, registry, register = env
    v = register(gates=True)
    decision = run_promotion(spec, actor="analyst-a", settings=settings)
    assert decision.promoted and not decision.forced and decision.previous_champion is None
    info = registry.describe(NAME, CHAMPION)
    assert info.version == v
    assert info.tags["riskstrat.promotion.decision"] == "promoted"
    assert info.tags["riskstrat.promotion.by"] == "analyst-a"
    assert info.tags["riskstrat.promotion.forced"] == "false"


def test_failed_gates_are_refused_and_recorded(env):
    settings, spec, registry, register = env
    v = register(gates=False)
    with pytest.raises(PromotionRefused, match="failed its gates: calibration O/E"):
        run_promotion(spec, actor="analyst-a", settings=settings)
    info = registry.describe(NAME, v)
    assert info.tags["riskstrat.promotion.decision"] == "refused"
    assert "calibration O/E" in info.tags["riskstrat.promotion.reasons"]
    assert CHAMPION not in info.aliases


def test_forcing_needs_a_reason_and_records_it(env):
    settings, spec, registry, register = env
    v = register(gates=False)
    with pytest.raises(ValueError, match="needs --reason"):
        run_promotion(spec, force=True, settings=settings)
    decision = run_promotion(
        spec,
        force=True,
        reason="ICB asked for the new features",
        actor="lead-analyst",
        settings=settings,
    )
    assert decision.promoted and decision.forced
    info = registry.describe(NAME, CHAMPION)
    assert info.version == v
    assert info.tags["riskstrat.promotion.forced"] == "true"
    assert info.tags["riskstrat.promotion.reason"] == "ICB asked for the new features"
    assert info.tags["riskstrat.promotion.by"] == "lead-analyst"
    assert "failed its gates" in info.tags["riskstrat.promotion.overridden"]


@pytest.mark.parametrize(("difference", "promoted"), [(-0.02, False), (-0.004, True), (0.01, True)])
def test_challenger_is_compared_with_the_champion_on_the_same_rows(env, difference, promoted):
    settings, spec, registry, register = env
    first = register(gates=True)
    run_promotion(spec, settings=settings)
    second = register(gates=True, compared_with=first, difference=difference)
    if promoted:
        run_promotion(spec, settings=settings)
        assert registry.describe(NAME, CHAMPION).version == second
        assert registry.describe(NAME, first).tags["riskstrat.promotion.superseded_by"] == second
    else:
        with pytest.raises(PromotionRefused, match="below the champion"):
            run_promotion(spec, settings=settings)
        assert registry.describe(NAME, CHAMPION).version == first


def test_a_comparison_with_an_older_champion_does_not_count(env):
    settings, spec, _registry, register = env
    first = register(gates=True)
    run_promotion(spec, settings=settings)
    second = register(gates=True, compared_with=first, difference=0.0)
    run_promotion(spec, settings=settings)
    register(gates=True, compared_with=first, difference=0.03)  # measured against v1, not v2
    with pytest.raises(PromotionRefused, match="champion is now version " + second):
        run_promotion(spec, settings=settings)


def test_promoting_the_champion_again_changes_nothing(env):
    settings, spec, _registry, register = env
    v = register(gates=True)
    run_promotion(spec, settings=settings)
    decision = run_promotion(spec, version=v, settings=settings)
    assert not decision.promoted and decision.reasons == ["already the champion"]
