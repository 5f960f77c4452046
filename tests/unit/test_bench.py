"""The benchmark runs end to end on a tiny population (timings are printed, never asserted)."""

from __future__ import annotations

import json
import math
import shutil
from datetime import date

import pytest
from typer.testing import CliRunner

from riskstrat.bench.stages import StageResult, growth, machine_info, run_benchmarks, step_growth
from riskstrat.cli import app
from riskstrat.config import get_settings


@pytest.mark.slow  # generates a population in a child process
def test_generate_stage_reports_time_rows_and_memory(tmp_path):
    results = run_benchmarks(
        sizes=[200, 400], stages=["generate"], workdir=tmp_path / "w", months=13
    )
    assert [r.patients for r in results] == [200, 400]
    for r in results:
        assert r.seconds > 0 and r.rows > r.patients and r.peak_rss_mb > 50
        assert r.detail["rows_by_table"]["patients"] == r.patients
        assert r.detail["oracle_dates"]  # the oracle is part of generation
    assert "generate" in growth(results)
    assert not (tmp_path / "w" / "n200").exists()  # work files removed


def test_growth_of_a_step_inside_a_stage_is_its_own_exponent():
    """``step_growth``: one month's features by wall and CPU time, from the smallest to the
    largest size, whatever order the results come in; a size missing a figure gives none."""

    def features(patients, seconds, cpu):
        detail = {"features_seconds": seconds, "features_cpu_seconds": cpu}
        return StageResult("features", patients, seconds + 10, patients, 100.0, detail)

    results = [features(1000, 8.0, 4.0), features(100, 1.0, 0.5), features(300, 3.0, 2.0)]
    exponents = step_growth(results)
    assert exponents["features.features_seconds"] == pytest.approx(math.log(8) / math.log(10))
    assert exponents["features.features_cpu_seconds"] == pytest.approx(math.log(8) / math.log(10))
    results[1].detail.pop("features_cpu_seconds")
    assert set(step_growth(results)) == {"features.features_seconds"}
    assert step_growth(results[:1]) == {}


def test_cli_writes_json_results(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            [
                "bench",
                "--stages",
                "generate",
                "--patients",
                "300",
                "--no-scaling",
                "--months",
                "13",
                "--results-dir",
                str(tmp_path / "r"),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    [path] = list((tmp_path / "r").glob("bench-*.json"))
    data = json.loads(path.read_text())
    assert data["results"][0]["stage"] == "generate" and data["results"][0]["patients"] == 300
    assert data["machine"]["cores"] == machine_info()["cores"]
    assert data["step_growth_exponent"] == {}  # one size: nothing to grow from


def test_cli_prints_growth_within_one_process(tmp_path, monkeypatch):
    """The same-extract and same-model exponents are printed, and a missing one says n/a."""
    import riskstrat.bench.stages

    def results(**kwargs):
        features = StageResult(
            "features", 300_000, 10.0, 250_000, 900.0,
            {
                "features_seconds": 2.5, "features_cpu_seconds": 4.0,
                "same_extract_base_patients": 100_000, "same_extract_growth_exponent": 1.011,
                "same_extract_cpu_growth_exponent": None,
            },
        )  # fmt: skip
        explain = StageResult(
            "explain", 300_000, 0.8, 250_000, 900.0,
            {"same_model_base_rows": 83_000, "same_model_growth_exponent": 0.998},
        )  # fmt: skip
        return [features, explain]

    monkeypatch.setattr(riskstrat.bench.stages, "run_benchmarks", results)
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["bench", "--patients", "300000", "--no-scaling", "--stages", "features,explain",
             "--results-dir", str(tmp_path / "r")],
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "first 100,000 people in the same process: N^1.01 (CPU n/a)" in said
    assert "the same model on 83,000 rows and on all: N^1.00" in said


@pytest.mark.slow  # trains, scores and serves
def test_train_score_and_api_stages_report_targets(tmp_path):
    [_generated, train, features, explain, score, api] = run_benchmarks(
        sizes=[1500], stages=["generate", "train", "features", "explain", "score", "api"],
        workdir=tmp_path / "w",
        months=30, keep=True,
        stage_args={
            "api_rate": 20, "api_seconds": 2,
            "same_model_base_patients": 500, "same_extract_base_patients": 500,
        },
    )  # fmt: skip
    assert train.stage == "train" and train.rows > 1500
    names = {t["name"] for t in train.detail["targets"]}
    assert {"auroc_ratio_to_oracle", "oe", "calibration_slope", "train_seconds"} <= names
    for target in train.detail["targets"]:
        assert target["met"] in (True, False)
    assert 0.5 < train.detail["measured"]["auroc"] <= 1.0
    # each training step timed, named without its row counts
    assert {
        "build features and labels",
        "fit LightGBM",
        "fit baselines and evaluate on held-out months (with bootstrap CIs)",
    } <= set(train.detail["step_seconds"])
    assert features.stage == "features" and 0 < features.rows <= 1500
    assert features.detail["validate_seconds"] > 0 and features.detail["features_seconds"] > 0
    # the first sight's steps, and DuckDB's own copy of the files beside its tables
    first = features.detail["first_sight_seconds"]
    assert {"digest", "rules", "load"} <= set(first) and first["load"] > 0
    assert features.detail["duckdb_copy_seconds"] > 0
    by_name = {t["name"]: t for t in features.detail["targets"]}
    assert by_name["validate, first sight: digest and rules (s)"]["value"] == pytest.approx(
        first["digest"] + first["rules"], abs=0.02
    )
    # the process's CPU time (DuckDB's threads too) is measured for the same runs
    assert features.detail["features_cpu_seconds"] > 0
    # every size's steps are timed at least three times (more while under 5 s in all) and
    # the fastest run kept
    assert 3 <= features.detail["features_runs"] <= 5 and 3 <= explain.detail["runs"] <= 5
    assert features.detail["features_ranges"] == 1  # 1,500 people: one query
    # the first 500 people's own extract and everyone's, timed in turn in one process; the
    # copy is deleted (it holds what the extract holds)
    assert features.detail["same_extract_base_patients"] == 500
    assert features.detail["same_extract_runs"] == 3
    for measure in ("seconds", "cpu_seconds"):
        base = features.detail[f"same_extract_base_{measure}"]
        everyone = features.detail[f"same_extract_all_{measure}"]
        assert base > 0 and everyone > 0
    assert features.detail["same_extract_growth_exponent"] == pytest.approx(
        math.log(
            features.detail["same_extract_all_seconds"]
            / features.detail["same_extract_base_seconds"]
        )
        / math.log(3),
        abs=0.01,
    )
    assert math.isfinite(features.detail["same_extract_cpu_growth_exponent"])
    assert not any((tmp_path / "w").rglob("extract-*.duckdb"))
    assert explain.detail["row_trees_per_second"] == pytest.approx(
        explain.detail["rows_per_second"] * explain.detail["trees"], rel=1e-3
    )
    # explanations for everyone, equal to LightGBM's own pred_contrib on its sample
    assert explain.stage == "explain" and explain.rows == features.rows
    assert explain.detail["max_abs_difference"] < 1e-6
    assert explain.detail["rows_per_second"] > 0 and explain.detail["speed_up"] > 0
    # the same model also timed on the rows a 500-person population would have had
    assert explain.detail["same_model_base_rows"] == round(explain.rows * 500 / 1500)
    assert explain.detail["same_model_base_seconds"] > 0
    assert explain.detail["same_model_all_seconds"] > 0 and explain.detail["same_model_runs"] == 3
    assert math.isfinite(explain.detail["same_model_growth_exponent"])
    assert score.stage == "score" and 0 < score.rows <= 1500
    steps = score.detail["step_seconds"]
    assert {"build features", "score and explain", "build cohorts", "stage", "publish"} <= set(
        steps
    )
    assert score.detail["score_and_explain_rows_per_second"] > 0
    # a first run, untimed and in a process of its own, scored a few people before it
    assert score.detail["first_run_few_people_seconds"] > 0
    assert 0 < score.detail["run_cpu_seconds"] <= score.detail["tree_cpu_seconds"]
    assert score.detail["replaced_runs"] == []  # a first publish of the month
    # the store's own copy of the run's rows, timed beside the stage and its ratio a target
    copied = score.detail["store_copy_seconds"]
    assert copied["scores"] > 0 and copied["cohorts"] > 0
    assert score.detail["purge_month_seconds"] > 0  # and deleted again, as a prune does
    assert copied["scores and cohorts"] == pytest.approx(copied["scores"] + copied["cohorts"])
    ratio = {t["name"]: t for t in score.detail["targets"]}[
        "stage against the store's own copy of the same rows (x)"
    ]
    assert ratio["value"] == pytest.approx(steps["stage"] / copied["scores and cohorts"])
    assert set(score.detail["cohort_sizes"]) == {
        "falls_review", "medication_review", "advance_care_planning",
    }  # fmt: skip
    # the api stage: load at a fixed rate on loopback, then a restart keeps the audit trail
    assert api.stage == "api" and api.rows == 80
    load = {row["name"]: row for row in api.detail["load"]}
    assert load["patient risk"]["requests"] == 40 and load["patient risk"]["errors"] == 0
    assert load["cohort page (100 rows)"]["ok"] == 40
    for row in load.values():  # how busy the machine was, and how much the hypervisor took
        assert 0 < row["machine_busy_share"] <= 1 and 0 <= row["cpu_steal_share"] < 1
    assert api.detail["audit_records_written"] == api.detail["audit_records_expected"]
    assert api.detail["audit_records_after_restart"] == api.detail["audit_records_written"]
    assert api.detail["served_after_restart"] is True
    assert {t["name"] for t in api.detail["targets"]} == {
        "patient_risk_p99_ms", "cohort_page_p99_ms", "audit_records_survive_restart",
    }  # fmt: skip

    # The score stage's untimed first run scores a few people without reading or leaving a
    # validation record: the timed run finds the extract as the stages before left it.
    from riskstrat.bench.model_stages import _score_few_people
    from riskstrat.config import Settings

    kept = tmp_path / "w" / "n1500"
    settings = Settings(home=kept / "home")
    shutil.rmtree(settings.validation_records_dir)
    assert _score_few_people(str(kept / "extract"), settings) > 0
    assert not settings.validation_records_dir.exists() or not any(
        settings.validation_records_dir.iterdir()
    )

    # A run without the generate stage reuses the kept store: the API stage alone, again.
    [again] = run_benchmarks(
        sizes=[1500], stages=["api"], workdir=tmp_path / "w",
        stage_args={"api_rate": 20, "api_seconds": 2},
    )  # fmt: skip
    assert again.detail["people"] == api.detail["people"]
    assert again.detail["audit_records_written"] == again.detail["audit_records_expected"] > 0
    assert not (tmp_path / "w" / "n1500").exists()  # not kept this time


@pytest.mark.slow  # runs a stage in a child process
def test_a_stage_without_the_one_it_needs_fails_with_what_to_do(tmp_path):
    """The child's error comes back to the parent as the same riskstrat error, hint and all."""
    from riskstrat.bench.stages import run_stage
    from riskstrat.errors import MissingFileError, UsageError

    with pytest.raises(MissingFileError, match="needs the generate stage") as info:
        run_stage("train", {"patients": 10, "workdir": str(tmp_path)})
    assert info.value.hint is not None and "--stages generate,train" in info.value.hint
    with pytest.raises(UsageError, match="unknown stage"):
        run_stage("nope", {"patients": 10, "workdir": str(tmp_path)})


def test_cpu_shares_are_the_busy_and_stolen_parts_of_the_interval():
    from riskstrat.bench.measure import cpu_shares, cpu_times

    # user, nice, system, idle, iowait, irq, softirq, steal
    before = [100, 0, 50, 800, 10, 0, 0, 40]
    after = [160, 0, 70, 900, 10, 0, 0, 60]  # 200 ticks: 80 busy, 100 idle, 20 stolen
    assert cpu_shares(before, after) == {"machine_busy_share": 0.4, "cpu_steal_share": 0.1}
    assert cpu_shares(None, after) == {"machine_busy_share": None, "cpu_steal_share": None}
    now = cpu_times()
    assert now is None or (len(now) == 8 and all(v >= 0 for v in now))


@pytest.mark.slow  # trains twice
def test_sampling_stage_compares_the_training_sample_with_everyone(tmp_path):
    import shutil

    from riskstrat.modelling.spec import default_spec_dir

    # The default cap (2 million rows) samples no one at this size; a copy of the spec with
    # a low cap makes the train stage, and so the sampling stage, fit on a sample.
    spec_dir = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), spec_dir)
    spec_file = spec_dir / "spec.yaml"
    text = spec_file.read_text()
    assert "max_train_rows: 2000000" in text
    spec_file.write_text(text.replace("max_train_rows: 2000000", "max_train_rows: 10000"))

    [_generated, train, sampling] = run_benchmarks(
        sizes=[1500], stages=["generate", "train", "sampling"], workdir=tmp_path / "w",
        months=30, stage_args={"spec_dir": str(spec_dir)},
    )  # fmt: skip
    detail = sampling.detail
    assert 0 < detail["sample_fraction"] < 1 and detail["max_train_rows"] == 10_000
    sample, everyone = detail["fits"]
    assert (sample["people"], everyone["people"]) == ("sample", "everyone")
    assert 0 < sample["train_rows"] < everyone["train_rows"] == sampling.rows
    # the sample fit is the train stage's own model: same rows, same trees, same AUROC
    assert sample["train_rows"] == train.rows
    assert sample["auroc"] == pytest.approx(train.detail["measured"]["auroc"], abs=1e-12)
    assert 0.5 < everyone["auroc"] <= 1.0
    assert detail["auroc_loss_from_sampling"] == pytest.approx(everyone["auroc"] - sample["auroc"])
    [target] = detail["targets"]
    assert target["met"] == (detail["auroc_loss_from_sampling"] <= 0.005)


def test_monthly_run_targets_are_the_issue_s_at_909091_people_and_the_large_icb_s_above():
    from riskstrat.bench.targets import score_targets

    steps = {"validate extract": 0.4, "stage": 7.5}
    small, small_peak = score_targets(909_091, 44.0, steps, 120_000.0, 7.0)
    assert small_peak == 3.0
    by_name = {t["name"]: t for t in small}
    assert by_name["monthly run, validate to published (s)"]["target"] == "<= 45"
    assert all(t["met"] for t in small)
    slow, _ = score_targets(909_091, 46.0, {**steps, "stage": 9.0}, 90_000.0)
    assert [t["met"] for t in slow] == [False, False, False, True, None]  # no copy timed
    # 4,000,000 people: four minutes within 24 GB; staging's target grows with the people
    large, large_peak = score_targets(4_000_000, 230.0, {**steps, "stage": 30.0}, 100_000.0)
    assert large_peak == 24.0
    assert [t["met"] for t in large] == [True, True, True, True, None]
    assert {t["name"]: t["target"] for t in large}["stage (s)"] == f"<= {8 * 4_000_000 / 909_091:g}"
    recognised = {"validate extract": 0.3, "extract validated earlier, recognised": 2.0}
    assert score_targets(1000, 1.0, recognised, None)[0][3]["value"] == 2.3
    missing, _ = score_targets(1000, 1.0, {}, None)
    assert [t["met"] for t in missing] == [True, None, None, None, None]
    # the stage against the store's own copy of the same rows: honest target 1.2x
    name = "stage against the store's own copy of the same rows (x)"
    near, _ = score_targets(909_091, 40.0, {**steps, "stage": 13.2}, 90_000.0, 12.0)
    far, _ = score_targets(909_091, 40.0, {**steps, "stage": 15.0}, 90_000.0, 12.0)
    assert {t["name"]: (t["value"], t["target"], t["met"]) for t in near}[name] == (
        pytest.approx(1.1),
        "<= 1.2",
        True,
    )
    assert {t["name"]: t["met"] for t in far}[name] is False
    assert {t["name"]: t["value"] for t in far}["stage (s)"] == 15.0  # still shown


def test_a_step_reported_twice_counts_both_spans():
    from riskstrat.bench.measure import StepTimer

    timer = StepTimer()
    timer.marks = [("score", 0.0), ("build cohorts", 1.0), ("stage", 1.5),
                   ("build cohorts", 4.0), ("done", 4.25)]  # fmt: skip
    assert timer.seconds() == {"score": 1.0, "build cohorts": 0.75, "stage": 2.5}
    timer("fit LightGBM on 1,628,650 rows", 0.5)  # named by its first words
    assert timer.marks[-1][0] == "fit LightGBM"


def test_duckdb_s_own_copy_of_a_parquet_extract_is_timed_and_removed(tmp_path):
    from riskstrat.bench.data_stages import duckdb_copy_seconds
    from riskstrat.synth import generate_extract

    extract = tmp_path / "extract"
    when = date(2026, 11, 1)
    generate_extract(extract, n_patients=150, months=13, seed=3, extract_date=when, fmt="parquet")
    seconds = duckdb_copy_seconds(extract, tmp_path / "scratch")
    assert seconds is not None and seconds > 0
    assert list((tmp_path / "scratch").iterdir()) == []  # the copy (personal data) is gone
    generate_extract(tmp_path / "csv", n_patients=150, months=13, seed=3, extract_date=when)
    assert duckdb_copy_seconds(tmp_path / "csv", tmp_path / "scratch") is None
