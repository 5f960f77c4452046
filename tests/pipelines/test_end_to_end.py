"""generate -> validate -> train -> score -> predict -> API, on a small generated extract."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import Settings, get_settings
from riskstrat.data.extract import validate_extract
from riskstrat.features.build import build_features
from riskstrat.service.app import create_app
from riskstrat.store import Store

pytestmark = pytest.mark.slow
EXTRACT_DATE = date(2026, 11, 1)
ROLES = ("pcn_team", "care_coordinator", "analyst", "admin")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs the whole product once through its CLI; the tests below look at what it left."""
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKSTRAT_HOME", str(home))
    get_settings.cache_clear()
    runner = CliRunner()
    extract = root / "extract"
    results = {}
    results["generate"] = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(extract),
            "--patients",
            "3000",
            "--seed",
            "7",
            "--months",
            "36",
            "--extract-date",
            EXTRACT_DATE.isoformat(),
            "--oracle",
        ],
    )
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in extract.iterdir()}
    results["validate"] = runner.invoke(app, ["validate", str(extract)])
    results["train"] = runner.invoke(app, ["train", "--data", str(extract)])
    results["score_before_promotion"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "latest"]
    )
    results["promote"] = runner.invoke(app, ["promote"])
    results["models"] = runner.invoke(app, ["models"])
    results["card"] = runner.invoke(app, ["card", "champion", "--out", str(root / "card")])
    results["score_july"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-07"]
    )
    results["score_october"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-10"]
    )
    results["score"] = runner.invoke(app, ["score", "--data", str(extract), "--month", "latest"])
    store = Store(get_settings().serving_database_url)
    first_november = store.runs.latest()
    snapshot = (
        store.scores.page(first_november.id, limit=100_000)[1],
        store.cohorts.frame(first_november.id),
    )
    store.dispose()
    results["score_again"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "latest"]
    )
    results["outcomes"] = runner.invoke(
        app,
        ["outcomes", "--month", "2026-07", "--data", str(extract), "--by-practice",
         "--csv", str(root / "outcomes.csv")],
    )  # fmt: skip
    results["outcomes_too_early"] = runner.invoke(
        app, ["outcomes", "--month", "2026-10", "--data", str(extract)]
    )
    for fmt in ("csv", "xlsx"):
        results[f"export_{fmt}"] = runner.invoke(
            app,
            ["export", "--month", "2026-11", "--cohort", "falls_review", "--format", fmt,
             "--capacity", "40", "--out", str(root / f"falls.{fmt}")],
        )  # fmt: skip
    results["predict"] = runner.invoke(
        app,
        ["predict", "--data", str(extract), "--as-of", "2026-11-01", "--out", str(root / "p.csv")],
    )
    results["score_future"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-12"]
    )
    for role in ROLES:
        results[f"key_{role}"] = runner.invoke(
            app,
            ["users", "add", "--name", f"e2e-{role}", "--role", role, "--pcn", "*",
             "--key-file", str(root / f"{role}.key")],
        )  # fmt: skip
    settings = get_settings()
    yield {
        "first_november": first_november,
        "snapshot": snapshot,
        "root": root,
        "extract": extract,
        "home": home,
        "results": results,
        "digests": digests,
        "settings": settings,
    }
    mp.undo()
    get_settings.cache_clear()


def _auth(world, role: str) -> dict[str, str]:
    key = (world["root"] / f"{role}.key").read_text().strip()
    return {"Authorization": f"Bearer {key}"}


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_every_command_succeeded(world):
    for name in (
        "generate", "validate", "train", "promote", "models", "card", "score_july",
        "score_october", "score", "score_again", "outcomes", "export_csv", "export_xlsx",
        "predict", *(f"key_{r}" for r in ROLES),
    ):  # fmt: skip
        result = world["results"][name]
        assert result.exit_code == 0, (name, result.output)
    assert "validation AUROC" in _text(world["results"]["train"])
    assert "oracle AUROC" in _text(world["results"]["train"])
    assert "as challenger" in _text(world["results"]["train"])
    assert "is now the champion" in _text(world["results"]["promote"])


def test_nothing_is_served_until_a_version_is_promoted(world):
    result = world["results"]["score_before_promotion"]
    assert result.exit_code == 1 and "no version 'champion'" in _text(result)


def test_models_lists_the_champion_with_its_gates(world):
    output = _text(world["results"]["models"])
    assert "champion" in output and "passed" in output


def test_card_is_written_with_its_plots(world):
    card = world["root"] / "card"
    markdown = (card / "card.md").read_text()
    html = (card / "card.html").read_text()
    assert "not a falls risk prediction tool" in markdown
    assert (card / "plots" / "roc.png").is_file() and "data:image/png;base64," in html


def test_no_nhs_number_in_any_mlflow_artefact_or_store(world):
    import re

    with validate_extract(world["extract"]) as extract:
        numbers = {r[0] for r in extract.con.execute("SELECT nhs_number FROM patients").fetchall()}
    home = world["home"]
    files = [p for p in (home / "mlartifacts").rglob("*") if p.is_file()] + [home / "mlflow.db"]
    assert len(files) > 20
    found = set()
    for path in files:
        found |= set(re.findall(rb"(?<!\d)\d{10}(?!\d)", path.read_bytes())) & {
            n.encode() for n in numbers
        }
    assert not found


def test_source_files_unchanged_and_rejects_written_outside(world):
    extract: Path = world["extract"]
    now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in extract.iterdir()}
    assert now == world["digests"]
    assert "oracle" not in "".join(now)  # the true risk lives outside the extract
    assert (extract.parent / "extract.oracle.parquet").is_file()
    assert (world["home"] / "rejects" / "extract.rejects.csv").is_file()


def test_model_is_champion_with_metrics(world):
    from riskstrat.modelling.registry import ModelRegistry

    settings: Settings = world["settings"]
    registry = ModelRegistry(
        tracking_uri=settings.tracking_uri, artifact_root=settings.artifact_root
    )
    info = registry.describe(settings.model_name, "champion")
    for key in ("validation_auroc", "validation_auprc", "validation_brier"):
        assert key in info.metrics
    assert 0.6 < info.metrics["validation_auroc"] <= 1.0
    for key in (
        "validation_auroc_lo",
        "validation_oe",
        "validation_calibration_slope",
        "baseline_logistic_regression_auroc",
        "gates_passed",
    ):
        assert key in info.metrics
    assert info.metrics["gates_passed"] == 1.0
    assert info.tags["riskstrat.promotion.decision"] == "promoted"
    # synthetic data: the true risk's AUROC on the same people, and the model's ratio to it
    oracle = info.metrics["validation_oracle_auroc"]
    assert info.metrics["validation_auroc"] <= oracle + 0.02
    assert info.metrics["validation_auroc_ratio_to_oracle"] == pytest.approx(
        info.metrics["validation_auroc"] / oracle
    )
    assert info.tags["riskstrat.validation_month"] == "2026-08-01"


def test_published_run_covers_the_eligible_population(world):
    settings: Settings = world["settings"]
    store = Store(settings.serving_database_url)
    run = store.runs.latest()
    assert run is not None and run.month == EXTRACT_DATE and run.model_version == "1"
    with validate_extract(world["extract"]) as extract:
        feats = build_features(extract.con, index_dates=[EXTRACT_DATE])
    eligible = feats[~feats.type1_opt_out.astype(bool)]
    assert run.n_scored == len(eligible) and run.n_type1_opt_outs_excluded == int(
        feats.type1_opt_out.sum()
    )
    total, top = store.scores.page(run.id, limit=20)
    assert total == len(eligible)
    assert [s.rank for s in top] == list(range(1, 21))
    assert all(s.reasons for s in top)
    assert set(feats[feats.type1_opt_out.astype(bool)].nhs_number).isdisjoint(
        {s.nhs_number for s in store.scores.page(run.id, limit=100_000)[1]}
    )
    store.dispose()


def test_predict_matches_the_published_scores(world):
    predicted = pd.read_csv(world["root"] / "p.csv", dtype={"nhs_number": str})
    store = Store(world["settings"].serving_database_url)
    run = store.runs.latest()
    published = {s.nhs_number: s.risk for s in store.scores.page(run.id, limit=100_000)[1]}
    store.dispose()
    assert set(predicted.nhs_number) == set(published)
    assert predicted.risk.between(0, 1).all()
    diffs = [abs(r.risk - published[r.nhs_number]) for r in predicted.itertuples()]
    assert max(diffs) < 1e-6  # same model, same date; the CSV keeps 6 decimals


def test_scoring_a_month_the_extract_does_not_cover_fails_and_is_recorded(world):
    result = world["results"]["score_future"]
    assert result.exit_code == 1 and "after the extract date" in _text(result)
    store = Store(world["settings"].serving_database_url)
    runs = store.runs.all()
    store.dispose()
    assert runs[-1].status == "failed" and "after the extract date" in runs[-1].error
    assert store.runs.latest() is not None  # the earlier published run is still served


def test_api_serves_ranked_patients_with_reasons(world):
    settings: Settings = world["settings"]
    with TestClient(create_app(settings)) as client:
        auth = _auth(world, "pcn_team")
        page = client.get("/api/v1/risk-list", params={"page_size": 10}, headers=auth).json()
        risks = [i["risk"] for i in page["items"]]
        assert len(risks) == 10 and risks == sorted(risks, reverse=True)
        assert all(i["reasons"] and i["reasons"][0]["text"] for i in page["items"])
        pcn = page["items"][0]["pcn_code"]
        in_pcn = client.get("/api/v1/risk-list", params={"pcn": pcn}, headers=auth).json()
        assert {i["pcn_code"] for i in in_pcn["items"]} == {pcn}
        top = page["items"][0]["nhs_number"]
        person = client.get(
            f"/api/v1/patients/{top}/risk", headers=_auth(world, "care_coordinator")
        ).json()
        assert person["rank"] == 1 and person["run"]["model_version"] == "1"
        model = client.get("/api/v1/models/current", headers=_auth(world, "analyst")).json()
        assert model["version"] == "1" and model["serving_version"] == "1"
        assert "validation_auroc" in model["metrics"]


def _held_out(world):
    """The spec, its index plan, the champion and the training frame of the world's extract."""
    from riskstrat.modelling.registry import registry_for
    from riskstrat.modelling.spec import default_spec_dir, load_spec
    from riskstrat.pipelines.train import build_training_frame, training_plan

    settings = world["settings"]
    spec = load_spec(default_spec_dir())
    registry = registry_for(settings)
    champion = registry.load(spec.name, "champion")
    with validate_extract(world["extract"]) as extract:
        plan = training_plan(extract.con, spec, extract.extract_date)
        frame = build_training_frame(extract.con, spec, plan)
    return spec, plan, registry, champion, frame


def test_gates_block_a_deliberately_miscalibrated_version(world):
    """A copy of the champion whose risks are about three times too high fails its
    calibration gate; registered, it cannot be promoted, and the champion stays."""
    from dataclasses import replace

    from riskstrat.modelling.model import RiskModel
    from riskstrat.pipelines.evaluate import evaluate_version
    from riskstrat.pipelines.promote import PromotionRefused, run_promotion

    spec, plan, registry, champion, frame = _held_out(world)
    bad = RiskModel.from_fitted(
        champion.booster, replace(champion.calibrator, b=champion.calibrator.b + 1.2)
    )
    rows = frame.loc[frame["index_date"].isin(plan.evaluation_months)]
    report = evaluate_version(
        spec=spec,
        plan=plan,
        model=bad,
        baselines={},
        evaluation_rows=rows,
        oracle=None,
        champion=None,
    )
    failed = {g.name for g in report.gates if not g.passed}
    assert not report.gates_passed and any("O/E" in name for name in failed)
    info = registry.log_training_run(
        model_name=spec.name,
        model=bad,
        X_example=rows[bad.feature_names_],
        params={},
        metrics=report.flat_metrics(),
        tags={"riskstrat.gates_passed": "false"},
        version_tags={
            "riskstrat.gate_failures": "; ".join(sorted(failed)),
            "riskstrat.compared_with_champion": champion.info.version,
        },
        json_artifacts={},
        set_aliases=(),
    )
    with pytest.raises(PromotionRefused, match="failed its gates"):
        run_promotion(spec, version=info.version, actor="tester")
    refused = registry.describe(spec.name, info.version)
    assert refused.tags["riskstrat.promotion.decision"] == "refused"
    assert refused.tags["riskstrat.promotion.by"] == "tester"
    assert registry.describe(spec.name, "champion").version == champion.info.version


def test_evaluation_on_several_threads_equals_one(world):
    """A million people's evaluation runs its bootstraps on one thread per core; the
    report must be exactly what one thread gives, champion comparison included."""
    import json
    import threading
    import time
    from dataclasses import asdict, replace

    from riskstrat.modelling.baselines import fit_baselines
    from riskstrat.modelling.model import RiskModel
    from riskstrat.pipelines.evaluate import ChampionPredictions, evaluate_version, run_jobs

    spec, plan, _registry, champion, frame = _held_out(world)
    model = RiskModel.from_fitted(champion.booster, champion.calibrator)
    other = RiskModel.from_fitted(
        champion.booster, replace(champion.calibrator, b=champion.calibrator.b + 0.3)
    )
    names = model.feature_names_
    rows = frame.loc[frame["index_date"].isin(plan.evaluation_months)]
    primary = rows.loc[rows["index_date"] == plan.validation_month]
    train = frame.loc[frame["index_date"].isin(plan.train_months)]
    baselines = fit_baselines(spec.evaluation.baselines, train[names], train["label"], seed=1)
    previous = ChampionPredictions("1", other.predict_proba(primary[names]))
    reports = []
    # One thread, two, and two with the baselines fitted as one of the jobs (as training
    # does), beside the bootstraps that do not need them.
    for workers, given in ((1, baselines), (2, baselines), (2, lambda: baselines)):
        reports.append(
            evaluate_version(
                spec=spec,
                plan=plan,
                model=model,
                baselines=given,
                evaluation_rows=rows,
                oracle=None,
                champion=previous,
                workers=workers,
            )
        )
    one, *others = (json.dumps(asdict(r), sort_keys=True, default=str) for r in reports)
    assert others == [one, one]
    assert reports[0].champion_comparison is not None and len(reports[0].baselines) >= 3

    def where() -> str:
        time.sleep(0.05)  # long enough that one thread cannot take both jobs
        return threading.current_thread().name

    threads = run_jobs({"a": where, "b": where}, workers=2)
    assert len(set(threads.values())) == 2  # the jobs really ran side by side


def test_the_training_frame_is_compacted_without_changing_a_value():
    from datetime import date

    import numpy as np

    from riskstrat.pipelines.frame import _compact

    frame = pd.DataFrame(
        {
            # Two equal strings made apart, as a database driver makes them (literals would
            # be one object already).
            "nhs_number": pd.Series(
                ["999" + str(18).zfill(7), "9990000026", "999" + "0000018", None], dtype=object
            ),
            "index_date": [date(2026, 1, 1)] * 3 + [date(2026, 2, 1)],
            "sex": pd.Series(["F", None, "F", float("nan")], dtype=object),
            "age_years": np.array([70, 81, 70, 64], dtype=np.int64),
            "bmi_latest": [21.5, np.nan, 30.25, 18.0],
            "empty": pd.Series([None] * 4, dtype=object),
        }
    )
    small = _compact(frame, ["age_years", "bmi_latest"])
    assert small["age_years"].dtype == np.int16 and small["bmi_latest"].dtype == np.float32
    assert small["age_years"].tolist() == [70, 81, 70, 64]
    assert np.allclose(small["bmi_latest"], frame["bmi_latest"], equal_nan=True)
    for name in ("nhs_number", "index_date", "empty"):
        assert small[name].dtype == object
        assert small[name].tolist() == frame[name].tolist()
    assert small["sex"].iloc[1] is None and np.isnan(small["sex"].iloc[3])
    # One object per distinct value, not one per row.
    assert frame["nhs_number"].iloc[0] is not frame["nhs_number"].iloc[2]
    assert small["nhs_number"].iloc[0] is small["nhs_number"].iloc[2]
    assert small["index_date"].iloc[0] is small["index_date"].iloc[1]


def test_trained_model_respects_clinical_direction(world):
    """More prior emergency admissions, or a new heart failure diagnosis, never lowers
    anyone's risk, all else equal (LightGBM monotone constraints, stated in the card)."""
    from riskstrat.modelling.model import predict_risk
    from riskstrat.modelling.registry import registry_for

    settings = world["settings"]
    model = registry_for(settings).load(settings.model_name, "champion")
    with validate_extract(world["extract"]) as extract:
        rows = build_features(extract.con, index_dates=[date(2026, 8, 1)])
    base = predict_risk(model.booster, rows, model.calibrator)
    more = rows.assign(
        emergency_admissions_90d=rows.emergency_admissions_90d + 1,
        emergency_admissions_365d=rows.emergency_admissions_365d + 1,
        emergency_admissions_730d=rows.emergency_admissions_730d + 1,
    )
    assert (predict_risk(model.booster, more, model.calibrator) >= base - 1e-12).all()
    no_hf = rows.ltc_heart_failure == 0
    hf = rows.assign(
        ltc_heart_failure=1,
        ltc_count=rows.ltc_count + no_hf.astype(int),
        efi=rows.efi + no_hf / 36,
    )
    assert (predict_risk(model.booster, hf, model.calibrator) >= base - 1e-12).all()


def test_rerunning_a_month_is_idempotent(world):
    """Same month, inputs and model: the new run replaces the old, with identical rows."""
    store = Store(world["settings"].serving_database_url)
    latest = store.runs.latest()
    first = world["first_november"]
    assert latest.id != first.id and latest.month == first.month
    assert latest.replaced_runs == [first.id]
    runs = {r.id: r for r in store.runs.all()}
    assert runs[first.id].status == "superseded"
    assert [r.month for r in runs.values() if r.status == "published"].count(first.month) == 1
    assert store.runs.row_counts(first.id) == {"patient_scores": 0, "cohort_members": 0}
    people, cohorts = world["snapshot"]
    again = store.scores.page(latest.id, limit=100_000)[1]
    assert [(p.nhs_number, p.risk, p.rank, p.reasons) for p in again] == [
        (p.nhs_number, p.risk, p.rank, p.reasons) for p in people
    ]
    pd.testing.assert_frame_equal(store.cohorts.frame(latest.id), cohorts)
    store.dispose()


def test_cohorts_are_published_with_the_run(world):
    store = Store(world["settings"].serving_database_url)
    run = store.runs.latest()
    sizes = store.cohorts.sizes(run.id)
    assert set(sizes) == {"falls_review", "medication_review", "advance_care_planning"}
    assert all(n > 0 for n in sizes.values())
    assert {k: v["eligible"] for k, v in run.cohort_counts.items()} == sizes
    assert run.cohort_config_version
    falls = store.cohorts.frame(run.id, "falls_review")
    assert list(falls["rank"]) == list(range(1, len(falls) + 1))
    assert (falls["risk"].diff().dropna() <= 0).all()
    assert falls["expected_benefit"].to_numpy() == pytest.approx(falls["risk"].to_numpy() * 0.35)
    assert all(len(c) >= 2 for c in falls["criteria"])  # an age criterion and an indication
    with validate_extract(world["extract"]) as extract:
        feats = build_features(extract.con, index_dates=[EXTRACT_DATE])
    opted_out = set(feats[feats.type1_opt_out.astype(bool)].nhs_number)
    assert opted_out.isdisjoint(set(store.cohorts.frame(run.id).nhs_number))
    store.dispose()


def test_outcomes_follow_up_a_past_run(world):
    output = _text(world["results"]["outcomes"])
    assert "Outcomes of run" in output and "falls_review" in output
    frame = pd.read_csv(world["root"] / "outcomes.csv", dtype={"practice_code": str})
    store = Store(world["settings"].serving_database_url)
    july = store.runs.for_month(date(2026, 7, 1))
    members = store.cohorts.frame(july.id)
    stored = store.outcomes.get(july.id)
    store.dispose()
    # every member is counted once, as delivered or not, and expected is the sum of risks
    assert stored["people"].sum() == len(members)
    assert stored["expected"].sum() == pytest.approx(members["risk"].sum())
    by = stored.groupby("intervention")["people"].sum().to_dict()
    assert by == members.groupby("intervention").size().to_dict()
    people = frame["delivered_people"].sum() + frame["not_delivered_people"].sum()
    assert people == len(members)
    too_early = world["results"]["outcomes_too_early"]
    assert too_early.exit_code == 1 and "before the 90-day window" in _text(too_early)


def test_exports_open_as_a_practice_team_expects(world):
    from openpyxl import load_workbook

    csv = pd.read_csv(world["root"] / "falls.csv", dtype=str, encoding="utf-8-sig")
    assert len(csv) == 40 and list(csv["rank"].astype(int)) == sorted(csv["rank"].astype(int))
    assert csv["nhs_number"].str.fullmatch(r"999 \d{3} \d{4}").all()
    assert (
        csv["reasons"].str.contains("points").all()
        and csv["eligible_because"].str.len().gt(0).all()
    )
    book = load_workbook(world["root"] / "falls.xlsx")
    sheet = book["cohort"]
    header = [c.value for c in sheet[1]]
    nhs = [row[header.index("nhs_number")] for row in sheet.iter_rows(min_row=2)]
    assert len(nhs) == 40 and all(isinstance(c.value, str) and c.number_format == "@" for c in nhs)
    assert [c.value for c in nhs] == list(csv["nhs_number"])
    assert "not a falls risk prediction" in str([c.value for c in book["about"]["B"]]).lower()
    store = Store(world["settings"].serving_database_url)
    exports = [r for r in store.audit.records() if r["route"].startswith("riskstrat export")]
    store.dispose()
    assert len(exports) == 2 and all(r["n_patients"] == 40 for r in exports)


def test_api_serves_intervention_cohorts_and_what_changed(world):
    settings: Settings = world["settings"]
    with TestClient(create_app(settings)) as client:
        auth = _auth(world, "pcn_team")
        index = client.get("/api/v1/cohorts", headers=auth).json()
        assert [i["key"] for i in index["interventions"]] == [
            "falls_review", "medication_review", "advance_care_planning",
        ]  # fmt: skip
        body = client.get(
            "/api/v1/cohorts/medication_review", params={"capacity": 5}, headers=auth
        ).json()
        assert body["total"] == 5 and len(body["items"]) == 5
        summary = body["capacity_summary"]
        risks = [i["risk"] for i in body["items"]]
        assert summary["listed"]["expected_admissions_90d"] == pytest.approx(sum(risks), abs=1e-3)
        assert summary["listed"]["expected_admissions_avoided"] == pytest.approx(
            0.25 * sum(risks), abs=1e-3
        )
        assert all(i["eligible_because"] and i["reasons"] for i in body["items"])
        person = body["items"][0]["nhs_number"]
        detail = client.get(
            f"/api/v1/patients/{person}/risk", headers=_auth(world, "care_coordinator")
        ).json()
        assert "medication_review" in [e["intervention"] for e in detail["eligible_interventions"]]
        changed = detail["what_changed"]
        assert changed is not None and changed["previous_month"] == "2026-10-01"
        assert changed["risk_now"] == pytest.approx(detail["risk"])


def test_model_page_shows_metrics_plots_and_card(world):
    settings: Settings = world["settings"]
    key = (world["root"] / "analyst.key").read_text().strip()
    with TestClient(create_app(settings)) as client:
        signed_in = client.post(
            "/login", content=f"key={key}",
            headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False,
        )  # fmt: skip
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/model"
        page = client.get("/model")
        assert page.status_code == 200 and "AUROC" in page.text and "95% CI" in page.text
        plot = client.get("/model/plots/calibration.png")
        assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get("/model/plots/nonsense.png").status_code == 404
        card = client.get("/model/card")
        assert card.status_code == 200 and "Intended use" in card.text
