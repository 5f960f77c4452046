"""``riskstrat monitor``: the status table, the matured months and, when a check is red, a
banner with what to do, exiting 0 because the checks ran."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from riskstrat.cli import monitor as cli_monitor
from riskstrat.cli.main import app
from riskstrat.modelling.spec import MonitoringConfig
from riskstrat.monitoring.checks import performance_checks, summarise
from riskstrat.pipelines import monitor as pipeline


def _matured(n: int = 6000, *, scale: float) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    risk = np.clip(rng.beta(1.2, 12, size=n), 0.001, 0.95)
    return pd.DataFrame({"risk": risk, "label": (rng.random(n) < risk * scale).astype(int),
                         "pcn_code": "U11111", "actioned": np.arange(n) % 10 == 0})  # fmt: skip


def _report(scale: float) -> pipeline.MonitoringReport:
    perf = performance_checks(_matured(scale=scale), MonitoringConfig(bootstrap_samples=20),
                              reference_auroc=None)  # fmt: skip
    months = [{"run_id": 1, "month": "2026-07-01", "model_version": "3", "performance": perf}]
    drift = [{"name": "age", "kind": "feature", "psi": 0.02, "missing_share": 0.0,
              "reference_missing_share": 0.0, "missing_increase": 0.0,
              "status": {"psi": "green", "missingness": "green"}}]  # fmt: skip
    return pipeline.MonitoringReport(
        model_name="m", model_version="3", check_date=date(2026, 11, 1),
        latest_month=date(2026, 11, 1), months=months, drift=drift, rejects=[],
        status=dict(summarise(months, drift, [])), reference_source="stored with the version",
    )  # fmt: skip


def _invoke(monkeypatch, tmp_path, report):
    monkeypatch.setattr(cli_monitor, "require_store", lambda: None)
    monkeypatch.setattr(cli_monitor, "require_registry", lambda: None)
    monkeypatch.setattr(pipeline, "run_monitoring", lambda *a, **k: report)
    result = CliRunner().invoke(app, ["monitor", "--data", str(tmp_path)])
    return result, " ".join(result.output.split())


def test_a_red_check_prints_a_banner_and_what_to_do_and_exits_0(monkeypatch, tmp_path):
    report = _report(scale=0.6)  # admissions 40% below the risks: O/E red
    assert report.status["oe"] == "red"
    result, output = _invoke(monkeypatch, tmp_path, report)
    assert result.exit_code == 0, result.output
    assert "MONITORING RED" in output and "oe" in output
    assert cli_monitor.WHAT_TO_DO["oe"] in output
    assert "clinical safety officer" in output
    assert "2026-07" in output and "biased downward" in output


def test_a_green_run_has_no_banner(monkeypatch, tmp_path):
    report = _report(scale=1.0)
    assert report.overall in {"green", "unknown"}
    result, output = _invoke(monkeypatch, tmp_path, report)
    assert result.exit_code == 0 and "MONITORING RED" not in output
    assert "largest drifts" in output and "age" in output


def test_monitoring_after_score_never_raises(tmp_path, settings):
    report, error = pipeline.monitor_after_score(tmp_path / "missing", settings=settings)
    assert report is None and error is not None
