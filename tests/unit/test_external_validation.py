"""Fast checks of external validation and local recalibration: the lineage a recalibrated
version carries, the model-quality targets, and the commands' errors for a version that
does not exist. (The pipelines themselves: tests/pipelines/test_external_and_recalibration.py.)"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import get_settings
from riskstrat.modelling.gates import logistic_gate_results, non_inferiority_gate, target_results
from riskstrat.modelling.model import IndexPlan
from riskstrat.modelling.registry import PARENT_VERSION_TAG, RECALIBRATED_ON_TAG
from riskstrat.modelling.spec import default_spec_dir, load_spec
from riskstrat.pipelines.external import Population, data_digest
from riskstrat.pipelines.recalibrate import lineage_tags
from tests.support.home import initialised_home

runner = CliRunner()


def _population(tmp_path) -> Population:
    (tmp_path / "manifest.json").write_text('{"source": "ICB B"}')
    return Population(
        rows=pd.DataFrame(),
        plan=IndexPlan(
            train_months=(),
            early_stopping_months=(),
            calibration_months=(date(2026, 1, 1), date(2026, 2, 1)),
            evaluation_months=(date(2026, 8, 1),),
        ),
        extract_date=date(2026, 11, 1),
        source="ICB B",
        digest=data_digest(tmp_path),
        identifier_kind="nhs_number",
        provenance={},
    )


def test_lineage_names_the_parent_and_the_data(tmp_path):
    population = _population(tmp_path)
    tags = lineage_tags("4", population)
    assert tags[PARENT_VERSION_TAG] == "4"
    assert tags[RECALIBRATED_ON_TAG] == f"{population.digest} (extract 2026-11-01)"
    assert tags["riskstrat.lineage.calibration_months"] == "2026-01-01,2026-02-01"
    assert tags["riskstrat.lineage.recalibrated_on_source"] == "ICB B"
    assert all(isinstance(v, str) and len(v) < 5000 for v in tags.values())


def test_the_data_digest_follows_the_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"row_counts": {"patients": 10}}')
    first = data_digest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"row_counts": {"patients": 11}}')
    assert data_digest(tmp_path) != first and len(first) == 64


@pytest.mark.parametrize("command", ["evaluate", "recalibrate"])
def test_a_version_that_does_not_exist_is_not_found_with_a_hint(command, tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    initialised_home(tmp_path / "home")  # a home with an empty registry
    result = runner.invoke(app, [command, "7", "--data", str(tmp_path / "extract")])
    get_settings.cache_clear()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert lines[-2].startswith("error: no version '7' of model"), result.output
    assert lines[-1] == "hint: `riskstrat models` lists the registered versions and their aliases"


def _ci(value, lo=None, hi=None):
    return {"value": value, "lo": lo, "hi": hi}


def test_logistic_regression_is_a_non_inferiority_gate():
    # Evidence of being worse by more than the margin fails; a point estimate does not.
    assert not non_inferiority_gate("g", "s", _ci(-0.02, -0.03, -0.01), 0.005,
                                    rule="ci", level=0.95).passed  # fmt: skip
    assert non_inferiority_gate("g", "s", _ci(-0.008, -0.02, 0.004), 0.005,
                                rule="ci", level=0.95).passed  # fmt: skip
    assert not non_inferiority_gate("g", "s", _ci(-0.008, -0.02, 0.004), 0.005,
                                    rule="point", level=0.95).passed  # fmt: skip
    assert non_inferiority_gate("g", "s", _ci(-0.004), 0.005, rule="point", level=0.95).passed
    rows = [{"key": "model"}, {"key": "logistic_regression", "auroc_difference": _ci(0.003)}]
    (gate,) = logistic_gate_results(rows, margin=0.005)
    assert gate.name == "AUROC vs logistic regression" and gate.passed
    assert logistic_gate_results(rows, margin=None) == []
    assert logistic_gate_results(rows[:1], margin=0.005) == []


def test_the_default_spec_states_the_targets():
    spec = load_spec(default_spec_dir())
    t = spec.targets
    assert t.max_auroc_below_logistic == 0.005
    assert t.min_auroc_ratio_to_oracle == 0.945
    assert t.max_share_flagged_ratio_to_oracle == 1.45
    assert t.oe_range == (0.95, 1.05) and t.slope_range == (0.9, 1.1)
    assert spec.gates.max_auroc_below_logistic == 0.005


def test_targets_are_checked_overall_and_on_each_held_out_month():
    primary = {"ci_level": 0.95, "calibration": {"oe": _ci(1.01), "slope": _ci(0.95)}}
    stability = [
        {"month": "2026-06-01", "oe": _ci(1.08), "slope": _ci(1.0)},
        {"month": "2026-07-01", "oe": _ci(0.99), "slope": _ci(1.2)},
    ]
    oracle = {"auroc": 0.867, "model_auroc": 0.822, "ratio": 0.822 / 0.867,
              "share_flagged_for_recall": 0.145, "model_share_flagged_for_recall": 0.195}  # fmt: skip
    results = target_results(
        primary=primary,
        baselines=[{"key": "logistic_regression", "auroc_difference": _ci(-0.003)}],
        stability=stability,
        oracle=oracle,
        max_auroc_below_logistic=0.005,
        min_auroc_ratio_to_oracle=0.945,
        max_share_flagged_ratio_to_oracle=1.45,
        oe_range=(0.95, 1.05),
        slope_range=(0.9, 1.1),
    )
    met = {(r.name, r.subject): r.passed for r in results}
    assert met[("AUROC vs logistic regression", "primary month")]
    assert met[("model / oracle AUROC", "primary month")]  # 0.948
    assert met[("share flagged vs oracle", "primary month")]  # 1.34 x
    assert met[("calibration O/E", "overall")] and met[("calibration slope", "overall")]
    assert not met[("calibration O/E", "month 2026-06-01")]
    assert not met[("calibration slope", "month 2026-07-01")]
    ceiling = next(r for r in results if r.name == "model / oracle AUROC").detail
    assert "oracle 0.867" in ceiling and "ceiling" in ceiling
    assert len(results) == 3 + 2 + 4
