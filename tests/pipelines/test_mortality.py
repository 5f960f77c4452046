"""A mortality model from a spec alone, ranking the advance care planning list: trained,
calibrated, audited and carded by the same pipeline as the admission model; the ACP cohort is
ranked by its champion's 12-month mortality risk, with both risks and both models' reasons,
and expected bed days; before it has a champion the list falls back to admission risk and
says so."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import get_settings
from riskstrat.modelling.registry import registry_for
from riskstrat.resources import model_dir
from riskstrat.store import Store

pytestmark = pytest.mark.slow
EXTRACT_DATE = date(2026, 11, 1)
DEATH = "riskstrat-death-12m"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mortality")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKSTRAT_HOME", str(root / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    extract = root / "extract"
    out = {}
    out["generate"] = runner.invoke(app, [
        "generate", "--out", str(extract), "--patients", "10000", "--seed", "11", "--months", "60",
        "--extract-date", EXTRACT_DATE.isoformat(),
    ])  # fmt: skip
    out["train_admission"] = runner.invoke(app, ["train", "--data", str(extract)])
    out["promote_admission"] = runner.invoke(app, ["promote"])
    out["score_without_mortality"] = runner.invoke(
        app, ["score", "--data", str(extract), "--month", "2026-10"]
    )
    spec = str(model_dir("death_12m"))
    out["train_death"] = runner.invoke(app, ["train", "--data", str(extract), "--spec", spec])
    out["promote_death"] = runner.invoke(app, ["promote", "--spec", spec])
    out["card_death"] = runner.invoke(
        app, ["card", "champion", "--spec", spec, "--out", str(root / "card")]
    )
    out["score"] = runner.invoke(app, ["score", "--data", str(extract), "--month", "latest"])
    settings = get_settings()
    store = Store(settings.serving_database_url)
    runs = {m: store.runs.for_month(m) for m in (date(2026, 10, 1), date(2026, 11, 1))}
    yield {"root": root, "extract": extract, "out": out, "settings": settings, "store": store,
           "runs": runs}  # fmt: skip
    store.dispose()
    mp.undo()
    get_settings.cache_clear()


def test_every_command_succeeded(world):
    for name, result in world["out"].items():
        assert result.exit_code == 0, f"{name}: {result.output}"


def test_the_death_label_counts_exactly_the_deaths_in_the_window(world):
    registry = registry_for(world["settings"])
    info = registry.describe(DEATH, "champion")
    month = date.fromisoformat(info.tags["riskstrat.validation_month"])
    people = pd.read_csv(world["extract"] / "patients.csv", dtype=str, keep_default_na=False)
    dob = pd.to_datetime(people["date_of_birth"])
    start = pd.to_datetime(people["registered_from"])
    end = pd.to_datetime(people["registered_to"].replace("", None))
    died = pd.to_datetime(people["date_of_death"].replace("", None))
    at = pd.Timestamp(month)
    in_pop = (
        (dob < at) & (start <= at) & (end.isna() | (end > at)) & (died.isna() | (died >= at))
        & (people["type1_opt_out"].str.lower() != "true")
    )  # fmt: skip
    window = (died >= at) & (died < at + timedelta(days=365))
    card = json.loads((world["root"] / "card" / "context.json").read_text())
    assert card["evaluation"]["rows"] == int(in_pop.sum())
    assert card["evaluation"]["events"] == int((in_pop & window).sum()) > 20


def test_the_mortality_model_is_evaluated_gated_and_carded_like_any(world):
    card_dir = world["root"] / "card"
    context = json.loads((card_dir / "context.json").read_text())
    assert context["model"]["outcome"]["name"] == "death"
    assert context["model"]["horizon_days"] == 365
    assert context["gates_passed"], [g for g in context["gates"] if not g["passed"]]
    names = {g["name"] for g in context["gates"]}
    assert names >= {"calibration O/E", "calibration slope", "AUROC vs logistic regression",
                     "subgroup O/E", "subgroup AUROC gap"}  # fmt: skip
    ev = context["evaluation"]
    # Death is far more predictable from age, conditions and frailty than admission is.
    assert ev["auroc"]["value"] > 0.85
    assert context["fairness"]["groups"], "the subgroup audit ran"
    card = (card_dir / "card.md").read_text()
    assert "died within 365 days" in card and "dated by date_of_death" in card
    assert "advance care planning" in card
    assert "emergency admission" not in card.split("## 4.")[0].lower()


def test_before_a_champion_the_acp_list_falls_back_and_says_so(world):
    assert "riskstrat-death-12m has no champion" in " ".join(
        world["out"]["score_without_mortality"].output.split()
    )
    run = world["runs"][date(2026, 10, 1)]
    acp = run.interventions["advance_care_planning"]
    assert acp["ranking"]["fell_back"] is True and acp["ranking"]["version"] is None
    assert acp["ranked_by"].startswith("admission risk")
    members = world["store"].cohorts.frame(run.id)
    acp_members = members[members.intervention == "advance_care_planning"]
    assert list(acp_members["risk"]) == sorted(acp_members["risk"], reverse=True)


def test_the_acp_list_is_ranked_by_12_month_mortality_with_both_risks(world):
    store = world["store"]
    run = world["runs"][date(2026, 11, 1)]
    champion = registry_for(world["settings"]).describe(DEATH, "champion").version
    acp = run.interventions["advance_care_planning"]
    assert acp["ranking"] == {"model": DEATH, "version": champion,
                              "label": "12-month mortality risk", "fell_back": False}  # fmt: skip
    assert acp["bed_days"]["per_event"] == 5 and "Abel" in acp["bed_days"]["source"]
    total, page = store.cohorts.page(run.id, "advance_care_planning", limit=10_000)
    assert total == len(page) > 20
    mortality = [m.ranking["risk"] for m, _ in page]
    assert mortality == sorted(mortality, reverse=True)  # ranked by it, not by admission
    assert [m.risk for m, _ in page] != sorted((m.risk for m, _ in page), reverse=True)
    for member, score in page:
        assert member.ranking["model"] == DEATH and member.ranking["version"] == champion
        assert member.ranking["expected_bed_days"] == pytest.approx(5 * member.ranking["risk"])
        assert member.ranking["reasons"] and score.reasons  # both models' reasons
        assert member.risk == score.risk  # the admission risk is still shown
    # The other lists are ranked by admission risk, with no ranking of their own.
    _, falls = store.cohorts.page(run.id, "falls_review", limit=50)
    assert falls and all(m.ranking is None for m, _ in falls)
    assert "ranked by riskstrat-death-12m" in " ".join(world["out"]["score"].output.split())
