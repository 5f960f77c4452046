"""OMOP mapping coverage as a data-quality drift check: the share of each source table's rows
mapped to the contract, from the import's mapping report, in the latest extract against the
training extract's (or the first monitored extract's); amber from a 2-point drop, red above 5;
an extract not imported from OMOP is said so and skipped."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from riskstrat.data.errors import ExtractError
from riskstrat.data.omop.report import is_omop_import, mapping_coverage, read_mapping_coverage
from riskstrat.modelling.spec import MonitoringConfig
from riskstrat.monitoring.checks import summarise
from riskstrat.monitoring.coverage import (
    COVERAGE_DROP_AMBER,
    COVERAGE_DROP_RED,
    NOT_OMOP,
    coverage_checks,
    coverage_thresholds,
)
from riskstrat.pipelines.monitor import coverage_against_reference
from riskstrat.store import Store
from tests.support.runs import make_run

CONFIG = MonitoringConfig()


def _report(**mapped: tuple[int, int]) -> dict:
    """A mapping report's ``source_tables``: table -> (rows read, mapped)."""
    tables = {t: {"rows_read": r, "mapped": m, "unmapped": r - m, "present": True}
              for t, (r, m) in mapped.items()}  # fmt: skip
    tables["observation_period"] = {"rows_read": 10, "mapped": 5, "unmapped": 5}
    tables["concept"] = {"rows_read": 500}
    return {"source_tables": tables}


def _coverage(**mapped: tuple[int, int]) -> dict:
    return mapping_coverage(_report(**mapped))


def test_coverage_per_source_table_from_the_mapping_report():
    cov = _coverage(person=(1000, 990), drug_exposure=(20_000, 19_000), death=(0, 0))
    # the vocabulary tables carry no mapping; the observation periods are used by design
    assert set(cov) == {"person", "death", "drug_exposure"}
    assert cov["drug_exposure"] == {"rows_read": 20_000, "mapped": 19_000, "coverage": 0.95}
    assert cov["death"]["coverage"] is None  # no rows: no share


def test_the_defaults_are_a_two_and_a_five_point_drop():
    assert (COVERAGE_DROP_AMBER, COVERAGE_DROP_RED) == (0.02, 0.05)
    assert coverage_thresholds(CONFIG) == (0.02, 0.05)


def test_drops_in_coverage_are_amber_and_red_per_table():
    reference = _coverage(
        person=(10_000, 9_900), visit_occurrence=(50_000, 45_000),
        condition_occurrence=(80_000, 20_000), drug_exposure=(40_000, 38_000),
    )  # fmt: skip
    latest = _coverage(
        person=(10_500, 10_380),  # 99.0% -> 98.9%: green
        visit_occurrence=(52_000, 45_240),  # 90% -> 87%: a 3-point drop, amber
        condition_occurrence=(82_000, 15_580),  # 25% -> 19%: a 6-point drop, red
        drug_exposure=(41_000, 39_360),  # 95% -> 96%: a rise is fine
    )  # fmt: skip
    found = coverage_checks(reference, latest, CONFIG, omop=True, reference_source="training")
    rows = {r["table"]: r for r in found["tables"]}
    assert rows["person"]["status"] == "green"
    assert rows["visit_occurrence"]["drop"] == pytest.approx(0.03)
    assert rows["visit_occurrence"]["status"] == "amber"
    assert rows["condition_occurrence"]["drop"] == pytest.approx(0.06)
    assert rows["condition_occurrence"]["status"] == "red"
    assert rows["drug_exposure"]["drop"] == pytest.approx(-0.01)
    assert rows["drug_exposure"]["status"] == "green"
    assert found["status"] == "red" and found["applies"] and found["note"] is None
    assert found["reference_source"] == "training" and found["latest"] == latest


def test_small_tables_are_shown_not_judged_and_an_emptied_table_is_red():
    reference = _coverage(death=(40, 40), measurement=(5_000, 4_000), person=(2_000, 2_000))
    latest = _coverage(death=(45, 30), measurement=(0, 0), person=(2_000, 2_000))
    rows = {r["table"]: r for r in coverage_checks(reference, latest, CONFIG, omop=True)["tables"]}
    assert rows["death"]["status"] == "unknown" and "fewer than" in rows["death"]["reason"]
    assert rows["death"]["drop"] == pytest.approx(1 - 30 / 45)  # shown all the same
    assert rows["measurement"]["status"] == "red"
    assert "no rows now" in rows["measurement"]["reason"]
    # a lower bar for small sources (tests, small practices)
    small = coverage_checks(reference, latest, CONFIG, omop=True, min_rows=10)
    assert {r["table"]: r["status"] for r in small["tables"]}["death"] == "red"


def test_without_a_reference_coverage_is_kept_but_not_judged():
    latest = _coverage(person=(2_000, 1_990))
    found = coverage_checks(None, latest, CONFIG, omop=True)
    assert found["status"] == "unknown" and "no reference coverage" in found["note"]
    assert found["tables"][0]["coverage"] == pytest.approx(0.995)
    assert found["latest"] == latest  # the next check's reference


def test_an_extract_not_imported_from_omop_is_skipped_and_said_so():
    found = coverage_checks(None, None, CONFIG, omop=False)
    assert found["applies"] is False and found["note"] == NOT_OMOP
    assert "not an OMOP import" in NOT_OMOP
    assert found["tables"] == [] and found["status"] == "unknown"
    missing = coverage_checks(_coverage(person=(2_000, 2_000)), None, CONFIG, omop=True)
    assert "no mapping report" in missing["note"] and missing["status"] == "unknown"


def test_summarise_adds_the_check_only_for_omop_imports():
    drift = [{"kind": "feature", "status": {"psi": "green", "missingness": "green"}}]
    red = coverage_checks(
        _coverage(person=(5_000, 5_000)), _coverage(person=(5_000, 4_000)), CONFIG, omop=True
    )
    status = summarise([], drift, [], red)
    assert status["mapping_coverage"] == "red" and status["overall"] == "red"
    skipped = summarise([], drift, [], coverage_checks(None, None, CONFIG, omop=False))
    assert "mapping_coverage" not in skipped and skipped["overall"] == "green"
    assert "mapping_coverage" not in summarise([], drift, [])


def test_the_mapping_report_is_read_from_the_extract_folder(tmp_path):
    from riskstrat.data.omop.importer import REPORT_JSON
    from riskstrat.data.omop.report import REPORT_FILE

    assert REPORT_FILE == REPORT_JSON  # where the importer writes it
    assert read_mapping_coverage(tmp_path) is None  # not an OMOP import
    (tmp_path / "mapping-report.json").write_text(json.dumps(_report(person=(200, 150))))
    assert read_mapping_coverage(tmp_path) == {
        "person": {"rows_read": 200, "mapped": 150, "coverage": 0.75}
    }
    (tmp_path / "mapping-report.json").write_text("{not json")
    with pytest.raises(ExtractError, match="not valid JSON"):
        read_mapping_coverage(tmp_path)
    assert is_omop_import({"adapter": "riskstrat import omop"})
    assert not is_omop_import({}) and not is_omop_import({"adapter": "csv export"})


def _store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    return store


def _monitored(store: Store, check_date: date, version: str, coverage: dict) -> None:
    scores, cohorts = make_run(20, 1)
    run_id = store.runs.publish_run(
        month=date(2026, 7, 1), extract_date=check_date, model_name="m", model_version=version,
        scores=scores, cohorts=cohorts, n_type1_opt_outs_excluded=0,
        started_at=datetime.now(UTC), details={},
    )  # fmt: skip
    payload = {"mapping_coverage": coverage_checks(None, coverage, CONFIG, omop=True)}
    store.monitoring.replace(run_id=run_id, month=date(2026, 7, 1), check_date=check_date,
                             model_name="m", model_version=version, status="green",
                             payload=payload)  # fmt: skip


def test_the_reference_is_the_training_extract_else_the_first_checked_one(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mapping-report.json").write_text(
        json.dumps(_report(drug_exposure=(10_000, 9_000)))
    )
    store = _store(tmp_path)
    try:
        args = (store, "m", "2", CONFIG)
        # the training extract's coverage, stored in the version's reference
        trained = {"mapping_coverage": _coverage(drug_exposure=(10_000, 9_600))}
        notes: list[str] = []
        found = coverage_against_reference(tmp_path / "x", True, trained, *args, notes)
        assert found["tables"][0]["status"] == "red"  # 96% -> 90%
        assert found["reference_source"] == "the training extract's mapping report"
        # a version trained before that was stored: no reference yet, then the first check
        assert coverage_against_reference(tmp_path / "x", True, {}, *args, notes)[
            "status"
        ] == "unknown"  # fmt: skip
        _monitored(store, date(2026, 9, 1), "1", _coverage(drug_exposure=(10_000, 10_000)))
        _monitored(store, date(2026, 10, 1), "2", _coverage(drug_exposure=(10_000, 9_300)))
        _monitored(store, date(2026, 11, 1), "2", _coverage(drug_exposure=(10_000, 9_000)))
        found = coverage_against_reference(tmp_path / "x", True, {}, *args, notes)
        # version 2's first check (93%), not version 1's nor the latest
        assert found["tables"][0]["reference_coverage"] == pytest.approx(0.93)
        assert found["tables"][0]["status"] == "amber"
        assert "2026-10-01" in found["reference_source"]
        skipped = coverage_against_reference(tmp_path, False, trained, *args, notes)
        assert skipped["applies"] is False and skipped["note"] == NOT_OMOP
        assert notes == []
    finally:
        store.dispose()


@pytest.mark.slow
def test_an_import_whose_drugs_stop_mapping_is_red(tmp_path):
    """Two imports of a tiny CDM with the OMOP test builders: in the second, a third of the
    drug records carry a concept with no ingredient, so drug_exposure coverage falls."""
    from riskstrat.data.omop import import_omop
    from tests.support.omop_cdm import EXTRACT_DATE, Cdm

    def imported(name: str, unmapped: int):
        cdm = Cdm()
        for pid in range(1, 31):
            cdm.person(pid)
            cdm.drug(pid, cdm.cid("RxNorm", "17767"), date(2026, 9, 1))
            cdm.drug(pid, cdm.cid("RxNorm", "17767"), date(2026, 9, 2))
            if pid <= unmapped:
                cdm.drug(pid, 0, date(2026, 9, 3))  # no concept: not mapped
        source = cdm.write_duckdb(tmp_path / f"{name}.duckdb")
        return import_omop(str(source), tmp_path / name, practice_code="A81001",
                           pcn_code="U12345", extract_date=EXTRACT_DATE,
                           scratch_dir=tmp_path / "s")  # fmt: skip

    first = imported("first", unmapped=0)
    second = imported("second", unmapped=30)
    assert read_mapping_coverage(first.out_dir)["drug_exposure"]["coverage"] == 1.0
    latest = read_mapping_coverage(second.out_dir)
    assert latest is not None and latest["drug_exposure"]["coverage"] == pytest.approx(2 / 3)
    manifest = json.loads((second.out_dir / "manifest.json").read_text())
    assert is_omop_import(manifest["provenance"])
    found = coverage_checks(read_mapping_coverage(first.out_dir), latest, CONFIG, omop=True,
                            min_rows=10)  # fmt: skip
    rows = {r["table"]: r["status"] for r in found["tables"]}
    assert rows["drug_exposure"] == "red" and rows["person"] == "green"
    assert found["status"] == "red"
