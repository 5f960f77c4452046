"""Monitoring on a small generated world: a model trained and promoted, July and October
scored from an extract of 1 November; July's 90-day outcomes have matured, October's not.
The monthly score runs monitoring once a month has matured; `riskstrat monitor` reports and
stores it, and logs it to MLflow on the version."""

from __future__ import annotations

from datetime import date

import mlflow
import pytest
from typer.testing import CliRunner

from riskstrat.cli.main import app
from riskstrat.config import get_settings
from riskstrat.pipelines.monitor import month_step, run_monitoring
from riskstrat.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKSTRAT_HOME", str(root / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    extract = root / "extract"
    results = {}
    results["generate"] = runner.invoke(
        app,
        ["generate", "--out", str(extract), "--patients", "3000", "--seed", "7",
         "--months", "36", "--extract-date", "2026-11-01"],
    )  # fmt: skip
    results["init"] = runner.invoke(app, ["init"])
    results["train"] = runner.invoke(app, ["train", "--data", str(extract)])
    results["promote"] = runner.invoke(app, ["promote"])
    results["score_july"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-07"]
    )
    results["score_october"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-10"]
    )
    results["monitor"] = runner.invoke(app, ["monitor", "--data", str(extract)])
    settings = get_settings()
    report = run_monitoring(extract, settings=settings, store_results=False, log_to_mlflow=False)
    yield {"results": results, "settings": settings, "report": report, "extract": extract}
    mp.undo()
    get_settings.cache_clear()


def _text(result) -> str:
    return " ".join(result.output.split())


def test_every_command_succeeded(world):
    for name, result in world["results"].items():
        assert result.exit_code == 0, f"{name}: {result.output}"


def test_score_runs_monitoring_once_a_month_has_matured(world):
    # July's 90 days ended before the extract's date: each score of this extract monitors it.
    for name in ("score_july", "score_october"):
        assert "monitoring:" in _text(world["results"][name]), name
    assert "1 matured month(s)" in _text(world["results"]["score_october"])


def test_only_the_matured_month_is_followed_up(world):
    report = world["report"]
    assert [m["month"] for m in report.months] == ["2026-07-01"]
    july = report.months[0]
    overall = july["performance"]["overall"]
    assert overall["estimable"] and overall["rows"] == july["followed_people"] > 1000
    assert 0.6 < overall["auroc"]["value"] < 0.95
    assert 0.5 < overall["oe"]["value"] < 1.5
    assert {p["pcn_code"] for p in july["performance"]["by_pcn"]}
    assert {g["attribute"] for g in july["performance"]["by_group"]} >= {"sex", "age_band"}
    split = {a["group"]: a["rows"] for a in july["performance"]["actioned"]}
    assert split == {"actioned": 0, "not_actioned": overall["rows"]}  # nobody marked
    assert report.check_date == date(2026, 11, 1)


def test_drift_covers_every_feature_and_the_score_against_the_stored_reference(world):
    report = world["report"]
    assert report.reference_source == "stored with the version at training"
    names = {d["name"] for d in report.drift}
    assert "(score)" in names and "age_years" in names and len(names) > 30
    assert "index_month" not in names  # seasonal by design: left out (spec drift_exclude)
    # the same generator, a few months on: no input shifts far
    score = next(d for d in report.drift if d["name"] == "(score)")
    assert score["psi"] < 0.25
    assert set(report.status) >= {"auroc", "oe", "slope", "feature_psi", "score_psi", "overall"}
    assert {r["table"] for r in report.rejects}


def test_results_are_stored_with_the_run_and_logged_on_the_version(world):
    settings = world["settings"]
    store = Store(settings.serving_database_url)
    try:
        records = store.monitoring.all()
        july = store.runs.for_month(date(2026, 7, 1))
    finally:
        store.dispose()
    assert [r.run_id for r in records] == [july.id]
    assert records[0].payload["months"][0]["month"] == "2026-07-01"
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, "champion")
    history = client.get_metric_history(version.run_id, "monitoring_oe")
    assert [m.step for m in history] == [month_step(date(2026, 7, 1))] * len(history)
    assert history and history[-1].value == pytest.approx(
        records[0].payload["months"][0]["performance"]["overall"]["oe"]["value"]
    )
    text = _text(world["results"]["monitor"])
    assert "2026-07" in text and "largest drifts" in text


def test_a_version_without_a_stored_reference_falls_back_to_its_training_months(world, monkeypatch):
    from riskstrat.modelling.registry import ModelRegistry
    from riskstrat.pipelines.monitor import REFERENCE_ARTIFACT

    original = ModelRegistry.read_json_artifact_or_none

    def without_reference(self, run_id, name):
        return None if name == REFERENCE_ARTIFACT else original(self, run_id, name)

    monkeypatch.setattr(ModelRegistry, "read_json_artifact_or_none", without_reference)
    report = run_monitoring(
        world["extract"], settings=world["settings"], store_results=False, log_to_mlflow=False
    )
    assert report.reference_source.startswith("computed from this extract's last training months")
    assert any("drift reference was computed" in n for n in report.notes)
    assert {d["name"] for d in report.drift} == {d["name"] for d in world["report"].drift}


def test_a_generated_extract_is_not_an_omop_import_so_coverage_is_skipped(world):
    report = world["report"]
    coverage = report.mapping_coverage
    assert coverage["applies"] is False and coverage["tables"] == []
    assert coverage["note"].startswith("not an OMOP import")
    assert "mapping_coverage" not in report.status
    # the thresholds judged against are kept with the result (the page's charts shade them)
    assert report.payload()["thresholds"]["oe_range"] == list(report.thresholds["oe_range"])
    assert {"psi_amber", "psi_red", "slope_range"} <= set(report.thresholds)
