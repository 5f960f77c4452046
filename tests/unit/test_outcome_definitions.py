"""Outcomes declared, not coded: the built-in death outcome, a third outcome from a spec alone,
and what a declaration may not name."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from riskstrat.data.extract import validate_extract
from riskstrat.errors import ConfigError, UsageError
from riskstrat.features.labels import OUTCOMES, OutcomeDefinition, build_labels
from riskstrat.modelling.spec import load_spec
from riskstrat.resources import model_dir
from tests.support.extracts import P1, P3, base_tables, write_extract

D = date(2026, 2, 1)  # P3 dies on 2026-03-01


def labels(tmp_path: Path, outcome: OutcomeDefinition, horizon: int, tables=None):
    root = write_extract(tmp_path / f"x{len(list(tmp_path.iterdir()))}", tables or base_tables())
    with validate_extract(root, max_reject_share=1.0) as extract:
        frame = build_labels(extract.con, index_dates=[D], horizon_days=horizon, outcome=outcome)
    return dict(zip(frame.nhs_number, frame.label, strict=True))


@pytest.mark.slow
def test_death_within_the_horizon_is_the_death_label(tmp_path):
    death = OUTCOMES["death"]
    assert labels(tmp_path, death, 365)[P3] == 1
    # 28 days from the index date: day 28 is outside a 28-day window, inside a 29-day one.
    assert labels(tmp_path, death, 28)[P3] == 0
    assert labels(tmp_path, death, 29)[P3] == 1
    assert labels(tmp_path, death, 365)[P1] == 0  # alive at the extract date


@pytest.mark.slow
def test_admission_is_not_death(tmp_path):
    # P1 has an emergency admission in the window and does not die: the outcomes differ.
    tables = base_tables()
    tables["activity"].append(
        {"nhs_number": P1, "setting": "inpatient", "admission_method": "emergency",
         "start_date": "2026-03-10", "end_date": "2026-03-12", "primary_diagnosis": "",
         "attended": ""}
    )  # fmt: skip
    assert labels(tmp_path, OUTCOMES["emergency_admission"], 365, tables)[P1] == 1
    assert labels(tmp_path, OUTCOMES["death"], 365, tables)[P1] == 0


@pytest.mark.slow
def test_a_third_outcome_needs_only_a_declaration(tmp_path):
    # An A&E attendance within 30 days: no code, only the spec's words.
    ae = OutcomeDefinition(
        name="ae_attendance", table="activity", date_column="start_date",
        where={"setting": "ae"}, noun="an A&E attendance", plural="A&E attendances",
        happened="attended A&E", rate="attendance rate",
    )  # fmt: skip
    tables = base_tables()
    tables["activity"] = [r for r in tables["activity"] if r["setting"] != "ae"]
    tables["activity"].append(
        {"nhs_number": P1, "setting": "ae", "admission_method": "", "start_date": "2026-02-20",
         "end_date": "", "primary_diagnosis": "", "attended": ""}
    )  # fmt: skip
    got = labels(tmp_path, ae, 30, tables)
    assert got[P1] == 1 and sum(got.values()) == 1
    assert labels(tmp_path, ae, 19, tables)[P1] == 0  # the 20th day is outside 19 days


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"table": "appointments"}, "not a contract table"),
        ({"date_column": "setting"}, "not a date column"),
        ({"where": {"setting": "icu"}}, "not one of"),
        ({"where": {"primary_diagnosis": "J44"}}, "not a coded column"),
        ({"where": {"setting": "ae' OR 1=1 --"}}, "not one of"),
    ],
)
def test_a_declaration_may_name_only_the_contract(change, message):
    base = OUTCOMES["emergency_admission"].model_dump()
    with pytest.raises(ValueError, match=message):
        OutcomeDefinition.model_validate(base | change)


def test_the_mortality_spec_loads_as_death_in_12_months():
    spec = load_spec(model_dir("death_12m"))
    assert spec.outcome == OUTCOMES["death"] and spec.horizon_days == 365
    assert spec.name == "riskstrat-death-12m"
    assert spec.card.intended_use and "advance care planning" in spec.card.intended_use
    # The admission model's spec names its outcome too, and keeps its card words.
    assert load_spec(model_dir()).outcome.name == "emergency_admission"


def test_a_spec_declares_an_outcome_or_names_a_known_one(tmp_path):
    spec = yaml.safe_load((model_dir("death_12m") / "spec.yaml").read_text())
    spec["outcome"] = "readmission"
    bad = tmp_path / "spec.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="unknown outcome 'readmission'"):
        load_spec(bad)
    spec["outcome"] = {
        "name": "ae_attendance", "table": "activity", "date_column": "start_date",
        "where": {"setting": "ae"}, "noun": "an A&E attendance", "plural": "A&E attendances",
        "happened": "attended A&E", "rate": "attendance rate",
    }  # fmt: skip
    bad.write_text(yaml.safe_dump(spec))
    assert load_spec(bad).outcome.where == {"setting": "ae"}


@pytest.mark.slow
def test_censoring_leaves_out_only_time_after_an_intervention_before_the_outcome(tmp_path):
    def censored(review_on: str, admitted_on: str | None) -> tuple[int, int]:
        tables = base_tables()
        tables["activity"] = [r for r in tables["activity"] if r["nhs_number"] != P1]
        if admitted_on:
            tables["activity"].append(
                {"nhs_number": P1, "setting": "inpatient", "admission_method": "emergency",
                 "start_date": admitted_on, "end_date": admitted_on, "primary_diagnosis": "",
                 "attended": ""}
            )  # fmt: skip
        tables["observations"].append(
            {"nhs_number": P1, "observed_on": review_on, "code": "MEDICATION_REVIEW", "value": ""}
        )
        root = write_extract(tmp_path / f"c{len(list(tmp_path.iterdir()))}", tables)
        with validate_extract(root, max_reject_share=1.0) as extract:
            frame = build_labels(
                extract.con, index_dates=[D], horizon_days=90,
                censor_codes=["MEDICATION_REVIEW", "FALLS_ASSESSMENT"],
            )  # fmt: skip
        got = frame.set_index("nhs_number").loc[P1]
        return int(got.label), int(got.censored)

    assert censored("2026-02-10", "2026-03-01") == (1, 1)  # reviewed, then admitted
    assert censored("2026-03-05", "2026-03-01") == (1, 0)  # admitted before the review
    assert censored("2026-02-10", None) == (0, 1)  # reviewed, never admitted
    assert censored("2026-01-20", None) == (0, 0)  # reviewed before the index date
    assert censored("2026-05-02", None) == (0, 0)  # after the 90-day window


def test_censoring_names_only_intervention_codes():
    with pytest.raises(UsageError, match="not intervention codes: BMI"):
        build_labels(None, index_dates=[D], censor_codes=["BMI"])  # type: ignore[arg-type]
    spec = load_spec(model_dir())
    assert spec.training.post_intervention == "include"
    with pytest.raises(ValueError, match="not intervention codes"):
        spec.training.model_validate({"post_intervention": "censor", "censor_interventions": ["X"]})


def test_a_shipped_model_is_found_by_its_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_spec("death_12m").name == "riskstrat-death-12m"
    (tmp_path / "death_12m").mkdir()  # a folder here of that name wins, and has no spec
    with pytest.raises(FileNotFoundError):
        load_spec("death_12m")


def test_scoring_refuses_a_cohort_file_written_for_another_model(tmp_path):
    from riskstrat.config import Settings
    from riskstrat.pipelines.score import run_scoring
    from riskstrat.store import Store

    settings = Settings(home=tmp_path / "home", model_name="riskstrat-some-other-model")
    root = write_extract(tmp_path / "x", base_tables())
    with pytest.raises(ConfigError, match="is for model riskstrat-emergency-admission-90d"):
        run_scoring(root, month=date(2026, 10, 1), settings=settings)
    store = Store(settings.serving_database_url)
    # Nothing was published; the refusal is recorded as a failed run, with its reason.
    assert store.runs.latest() is None
    assert [r.status for r in store.runs.all()] == ["failed"]
    store.dispose()
