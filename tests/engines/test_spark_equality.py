"""Spark and DuckDB, on the same extract, give the same features, labels, scores, reasons
and cohorts (issue 26's proof of equality): features and labels identical (floats within
1e-9, types too), scores within 1e-12, the same reasons in the same order, the same cohort
members with the same ranks; ``score --engine spark`` and ``predict --engine spark`` from
the command line publish and write what the embedded engine does."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.cohorts.select import load_cohort_config
from riskstrat.config import get_settings
from riskstrat.data.contract import TABLE_ORDER
from riskstrat.data.extract import validate_extract
from riskstrat.features.build import build_features
from riskstrat.features.labels import OUTCOMES, build_labels
from riskstrat.features.spark import build_features_spark, build_labels_spark, to_frame
from riskstrat.modelling.registry import CHAMPION, registry_for
from riskstrat.pipelines.score import compute_on_duckdb, compute_on_spark, run_scoring
from riskstrat.resources import model_dir
from riskstrat.store import Store

pytestmark = pytest.mark.spark
EXTRACT_DATE = date(2026, 11, 1)
MONTH = date(2026, 11, 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark):
    """6,000 people, both models trained and promoted, and the extract's clean tables in
    DuckDB and (as DuckDB wrote them) in Spark."""
    root = tmp_path_factory.mktemp("spark-equality")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKSTRAT_HOME", str(root / "home"))
    mp.setenv("RISKSTRAT_SPARK_MASTER", "local[2]")
    get_settings.cache_clear()
    runner = CliRunner()
    extract = root / "extract"
    out = {}
    out["generate"] = runner.invoke(app, [
        "generate", "--out", str(extract), "--patients", "6000", "--seed", "5", "--months", "48",
        "--extract-date", EXTRACT_DATE.isoformat(),
    ])  # fmt: skip
    spec = str(model_dir("death_12m"))
    for name, args in {
        "train_admission": ["train", "--data", str(extract)],
        "promote_admission": ["promote", "--force", "--reason", "equality test"],
        "train_death": ["train", "--data", str(extract), "--spec", spec],
        "promote_death": ["promote", "--spec", spec, "--force", "--reason", "equality test"],
    }.items():
        out[name] = runner.invoke(app, args)
    checked = validate_extract(extract)
    clean = root / "clean"
    clean.mkdir()
    for table in TABLE_ORDER:
        path = clean / f"{table}.parquet"
        checked.con.execute(f"COPY {table} TO '{path}' (FORMAT parquet)")
        spark.read.parquet(str(path)).createOrReplaceTempView(table)
    yield {"root": root, "extract": extract, "out": out, "con": checked.con,
           "settings": get_settings(), "runner": runner}  # fmt: skip
    checked.close()
    for table in TABLE_ORDER:
        spark.catalog.dropTempView(table)
    mp.undo()
    get_settings.cache_clear()


def test_the_commands_that_set_up_the_world_succeeded(world):
    for name, result in world["out"].items():
        assert result.exit_code == 0, f"{name}: {result.output}"


def _assert_same_frame(duck: pd.DataFrame, spark: pd.DataFrame, *, atol: float) -> None:
    assert list(duck.columns) == list(spark.columns)
    assert len(duck) == len(spark) > 0
    differing = {
        c: (duck[c].dtype, spark[c].dtype) for c in duck if duck[c].dtype != spark[c].dtype
    }
    assert not differing, differing
    pd.testing.assert_frame_equal(duck, spark, check_exact=False, rtol=0, atol=atol)


def test_features_are_the_same_in_every_column_at_several_index_dates(world, spark):
    dates = [date(2025, 1, 1), date(2026, 6, 1), MONTH]
    duck = build_features(world["con"], index_dates=dates)
    sparked = to_frame(build_features_spark(spark, index_dates=dates))
    _assert_same_frame(duck, sparked, atol=1e-9)
    # Not a comparison of two empty or constant columns: the features carry information.
    assert duck["emergency_admissions_365d"].sum() > 0
    assert duck["efi"].nunique() > 5


def test_labels_are_the_same_for_both_outcomes_and_with_censoring(world, spark):
    dates = [date(2025, 6, 1), date(2026, 3, 1)]
    for outcome, horizon, codes in (
        (OUTCOMES["emergency_admission"], 90, ("FALLS_ASSESSMENT", "MEDICATION_REVIEW")),
        (OUTCOMES["death"], 365, ()),
    ):
        duck = build_labels(
            world["con"], index_dates=dates, horizon_days=horizon, outcome=outcome,
            censor_codes=codes,
        )  # fmt: skip
        sparked = to_frame(
            build_labels_spark(
                spark,
                index_dates=dates,
                horizon_days=horizon,
                outcome=outcome,
                censor_codes=codes,
            )
        )
        _assert_same_frame(duck, sparked, atol=0)
        assert 0 < duck["label"].sum() < len(duck)


@pytest.fixture(scope="module")
def computed(world, spark):
    # The scores come to the driver in slices of 1,000 people (6 here), as a population
    # beyond COLLECT_ROWS does.
    import riskstrat.engines.spark as spark_engine

    mp = pytest.MonkeyPatch()
    mp.setattr(spark_engine, "COLLECT_ROWS", 1_000)
    settings = world["settings"]
    registry = registry_for(settings)
    model = registry.load(settings.model_name, CHAMPION)
    config = load_cohort_config(None)
    both = {}
    for engine, compute in (("duckdb", compute_on_duckdb), ("spark", compute_on_spark)):
        both[engine] = compute(
            settings.model_copy(update={"engine": engine}),
            world["extract"],
            month=MONTH,
            model=model,
            registry=registry,
            config=config,
        )
    mp.undo()
    return both


def test_scores_agree_within_1e_12_with_the_same_percentiles_and_ranks(computed):
    duck, sparked = computed["duckdb"].scores, computed["spark"].scores
    assert len(duck) == len(sparked) > 1000
    assert (duck["nhs_number"].to_numpy() == sparked["nhs_number"].to_numpy()).all()
    np.testing.assert_allclose(sparked["risk"], duck["risk"], rtol=0, atol=1e-12)
    assert (duck["rank"].to_numpy() == sparked["rank"].to_numpy()).all()
    assert (duck["percentile"].to_numpy() == sparked["percentile"].to_numpy()).all()
    assert computed["duckdb"].n_opt_out == computed["spark"].n_opt_out > 0


def test_the_reasons_are_the_same_in_the_same_order(computed):
    duck, sparked = computed["duckdb"].scores, computed["spark"].scores
    # Every reason: its group, words, direction and sizes, in the same order; and every
    # group's size (what "what changed" compares). Both engines write them as JSON text,
    # which must be the same text.
    assert duck["reasons"].tolist() == sparked["reasons"].tolist()
    assert duck["contributions"].tolist() == sparked["contributions"].tolist()
    reasons = [json.loads(r) for r in duck["reasons"]]
    assert sum(len(r) for r in reasons) > 2 * len(duck)  # several reasons each
    assert all(r["text"] and r["direction"] in ("raises", "lowers") for rs in reasons for r in rs)


def test_cohorts_have_the_same_members_ranks_criteria_and_ranking_risks(computed):
    duck, sparked = computed["duckdb"].cohorts, computed["spark"].cohorts
    assert list(duck.columns) == list(sparked.columns)
    assert len(duck) == len(sparked) > 0
    for column in ("intervention", "nhs_number", "practice_code", "pcn_code", "rank"):
        assert (duck[column].to_numpy() == sparked[column].to_numpy()).all(), column
    assert duck["criteria"].tolist() == sparked["criteria"].tolist()
    for column in ("risk", "expected_benefit", "ranking_risk", "expected_bed_days"):
        np.testing.assert_allclose(sparked[column], duck[column], rtol=0, atol=1e-12)
    # Every list is there, and the ACP list is ranked by the mortality champion.
    assert set(duck["intervention"]) == set(load_cohort_config(None).interventions)
    acp = duck[duck["intervention"] == "advance_care_planning"]
    assert acp["ranking_risk"].notna().all()
    assert computed["spark"].ranking_models.keys() == computed["duckdb"].ranking_models.keys()


def test_score_and_predict_on_spark_from_the_command_line(world):
    runner, extract, root = world["runner"], world["extract"], world["root"]
    files = {}
    # The extract as a local folder on both engines, and at a URI (file://, read through
    # Hadoop's file system as an object store's would be) on Spark.
    for name, engine, data in (
        ("duckdb", "duckdb", str(extract)),
        ("spark", "spark", str(extract)),
        ("spark-uri", "spark", extract.as_uri()),
    ):
        files[name] = root / f"predict-{name}.csv"
        result = runner.invoke(app, [
            "predict", "--data", data, "--as-of", MONTH.isoformat(),
            "--out", str(files[name]), "--engine", engine,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    assert files["spark"].read_bytes() == files["duckdb"].read_bytes()
    assert files["spark-uri"].read_bytes() == files["duckdb"].read_bytes()
    # 'latest' reads the manifest at the URI in the session that then scores the month.
    result = runner.invoke(
        app, ["score", "--data", extract.as_uri(), "--month", "latest", "--engine", "spark"]
    )
    assert result.exit_code == 0, result.output
    assert "published run" in result.output and f"for {MONTH}" in result.output
    assert "monitoring reads a local extract" in " ".join(result.output.split())
    store = Store(world["settings"].serving_database_url)
    try:
        run = store.runs.for_month(MONTH)
        assert run is not None and run.status == "published"
    finally:
        store.dispose()


def _published(url: str) -> dict[str, pd.DataFrame]:
    """The published run of a store: its scores, list members and counts, in rank order."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            run = pd.read_sql(
                "SELECT id, month, n_scored, n_type1_opt_outs_excluded FROM score_runs "
                "WHERE status = 'published'",
                conn,
            )
            assert len(run) == 1
            run_id = int(run["id"].iloc[0])
            scores = pd.read_sql(
                "SELECT nhs_number, practice_code, pcn_code, risk, percentile, rank, reasons "
                f"FROM patient_scores WHERE run_id = {run_id} ORDER BY rank",
                conn,
            )
            members = pd.read_sql(
                "SELECT intervention, nhs_number, practice_code, risk, rank, criteria, ranking "
                f"FROM cohort_members WHERE run_id = {run_id} ORDER BY intervention, rank",
                conn,
            )
    finally:
        engine.dispose()
    return {"run": run.drop(columns="id"), "scores": scores, "members": members}


def _same_run(got: dict, want: dict) -> None:
    pd.testing.assert_frame_equal(got["run"], want["run"])
    for name in ("scores", "members"):
        left, right = got[name], want[name]
        assert len(left) == len(right) > 0, name
        exact = [c for c in left.columns if c not in ("risk", "reasons", "ranking")]
        pd.testing.assert_frame_equal(left[exact], right[exact], check_dtype=False)
        np.testing.assert_allclose(left["risk"], right["risk"], rtol=0, atol=1e-12)
    # The reasons' text and order are the same; their sizes agree to the last digits.
    got_reasons = [[r["text"] for r in json.loads(x)] for x in got["scores"]["reasons"]]
    want_reasons = [[r["text"] for r in json.loads(x)] for x in want["scores"]["reasons"]]
    assert got_reasons == want_reasons


def test_one_run_for_two_icbs_publishes_what_each_icb_scored_alone_would(world, tmp_path):
    """A two-ICB extract scored once (--icbs), on each engine, publishes to each ICB's store
    exactly what scoring that ICB's own extract publishes."""
    con, settings, runner = world["con"], world["settings"], world["runner"]
    practices = [r[0] for r in con.execute(
        "SELECT DISTINCT practice_code FROM patients ORDER BY 1").fetchall()]  # fmt: skip
    assert len(practices) >= 2
    icb_of = {p: ("QE1" if i % 2 == 0 else "QKK") for i, p in enumerate(practices)}
    pd.DataFrame({"practice_code": list(icb_of), "icb_code": list(icb_of.values())}).to_csv(
        tmp_path / "practices.csv", index=False
    )
    url = {(engine, icb): f"sqlite:///{tmp_path / f'{engine}-{icb}.db'}"
           for engine in ("duckdb", "spark", "alone") for icb in ("QE1", "QKK")}  # fmt: skip
    for engine, data in (("duckdb", str(world["extract"])), ("spark", world["extract"].as_uri())):
        plan = tmp_path / f"{engine}.yaml"
        plan.write_text(
            "practices: practices.csv\nstores:\n"
            + "".join(f"  {icb}: {url[engine, icb]}\n" for icb in ("QE1", "QKK")),
            encoding="utf-8",
        )
        result = runner.invoke(app, [
            "score", "--data", data, "--month", MONTH.isoformat()[:7], "--icbs", str(plan),
            "--engine", engine,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "QE1: published run 1" in result.output and "QKK: published run 1" in result.output
    for icb in ("QE1", "QKK"):
        # The ICB's own extract: its practices' people and every row of theirs.
        own = tmp_path / f"extract-{icb}"
        own.mkdir()
        mine = [p for p, i in icb_of.items() if i == icb]
        con.register("_mine", pd.DataFrame({"practice_code": mine}))
        for table in TABLE_ORDER:
            people = "SELECT nhs_number FROM patients WHERE practice_code IN (SELECT * FROM _mine)"
            con.execute(
                f"COPY (SELECT * FROM {table} WHERE nhs_number IN ({people})) "
                f"TO '{own / table}.parquet' (FORMAT parquet)"
            )
        con.unregister("_mine")
        (own / "manifest.json").write_text(json.dumps(
            {"contract_version": 1, "extract_date": EXTRACT_DATE.isoformat()}))  # fmt: skip
        alone = settings.model_copy(update={"database_url": url["alone", icb]})
        run_scoring(own, month=MONTH, settings=alone)
        want = _published(url["alone", icb])
        assert set(want["scores"]["practice_code"]) == set(mine)
        _same_run(_published(url["duckdb", icb]), want)
        _same_run(_published(url["spark", icb]), want)
