"""Validate once: an extract validated earlier is recognised by the digest of its files.

A recognised extract skips the rules and gets exactly what validation gave (the summary, the
rejects file, the clean tables); any change to a file, to riskstrat's version or to the
record itself sends it back through the rules.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

import riskstrat.data.extract as extract_module
import riskstrat.data.validated as validated_module
from riskstrat.config import Settings
from riskstrat.data.contract import TABLE_ORDER
from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import (
    Extract,
    TooManyRejectsError,
    check_extract,
    validate_extract,
)
from riskstrat.data.validated import fingerprint, read_record
from riskstrat.pipelines.common import open_extract, rejects_path_for
from tests.support.extracts import P1, P2, P3, P_UNKNOWN, base_tables, write_extract

#: A synthetic NHS number (999 prefix, valid check digit) for a patient whose row is rejected.
P_REJECTED = "9990000018"


def _with_rejects() -> dict[str, list[dict[str, str]]]:
    """The base extract with rejects in every table (kinds, table rules, patients)."""
    tables = base_tables()
    tables["patients"].append(dict(tables["patients"][0], sex="X", nhs_number=P_REJECTED))
    tables["activity"].append(dict(tables["activity"][0], setting="ward"))
    tables["activity"].append(dict(tables["activity"][0], nhs_number=P_UNKNOWN))
    tables["conditions"].append(dict(tables["conditions"][0], diagnosed_on="2026-11-05"))
    tables["medications"].append(dict(tables["medications"][0], medicine="Aspirin"))
    tables["observations"].append(dict(tables["observations"][0], nhs_number=P_REJECTED))
    return tables


@pytest.fixture(params=["csv", "parquet"])
def folder(request, tmp_path) -> Path:
    return write_extract(tmp_path / "extract", _with_rejects(), fmt=request.param)


@pytest.fixture
def home_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", max_reject_share=0.5)


@pytest.fixture
def rule_runs(monkeypatch) -> list[str]:
    """Every table the rules run on, in order (the rule runner, counted)."""
    runs: list[str] = []
    real = extract_module._check_rows

    def counted(con, table, present, manifest):
        runs.append(table.name)
        return real(con, table, present, manifest)

    monkeypatch.setattr(extract_module, "_check_rows", counted)
    return runs


def _tables(extract: Extract) -> dict[str, pd.DataFrame]:
    """Every clean table, rows in the order the table holds them."""
    return {t: extract.con.execute(f"SELECT * FROM {t}").df() for t in TABLE_ORDER}


def _open(settings: Settings, folder: Path) -> tuple[dict, dict[str, pd.DataFrame], bytes, bool]:
    with open_extract(settings, folder) as extract:
        tables = _tables(extract)
        summary = extract.summary
    rejects = rejects_path_for(settings, folder).read_bytes()
    return summary.as_dict(), tables, rejects, summary.recognised


def test_a_recognised_extract_skips_the_rules_and_gets_what_validation_gave(
    folder, home_settings, rule_runs
):
    first = _open(home_settings, folder)
    assert rule_runs == list(TABLE_ORDER) and not first[3]
    assert first[0]["rows_rejected"] and sum(first[0]["rows_rejected"].values()) >= 6

    rule_runs.clear()
    rejects_path_for(home_settings, folder).unlink()  # the rejects file is written again
    second = _open(home_settings, folder)
    assert rule_runs == [] and second[3]
    assert second[0] == first[0]
    assert second[2] == first[2]
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(second[1][name], first[1][name])


def test_the_cached_tables_equal_a_fresh_validation_in_memory(folder, home_settings):
    _open(home_settings, folder)  # recorded
    with open_extract(home_settings, folder) as cached:
        assert cached.summary.recognised
        cached_tables, cached_summary = _tables(cached), cached.summary.as_dict()
    with validate_extract(folder, max_reject_share=0.5) as fresh:
        fresh_tables, fresh_summary = _tables(fresh), fresh.summary.as_dict()
    assert cached_summary == fresh_summary
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(cached_tables[name], fresh_tables[name])


def test_the_summary_says_how_long_each_step_took(folder, home_settings):
    with open_extract(home_settings, folder) as extract:
        first = extract.summary
    with open_extract(home_settings, folder) as extract:
        second = extract.summary
    # the first open also keeps its validated tables for the next
    assert set(first.seconds) == {"digest", "rules", "load", "keep"}
    assert set(second.seconds) == {"digest", "rules", "load"}
    assert first.seconds["rules"] > 0 and second.seconds["rules"] == 0.0
    assert second.seconds["load"] > 0 and second.seconds["digest"] > 0
    assert "seconds" not in first.as_dict() and "recognised" not in first.as_dict()


def test_touching_a_file_sends_the_extract_through_the_rules_again(
    folder, home_settings, rule_runs
):
    _open(home_settings, folder)
    rule_runs.clear()
    table = next(folder.glob("medications.*"))
    st = table.stat()
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))
    assert not _open(home_settings, folder)[3]
    assert rule_runs == list(TABLE_ORDER)


def test_one_byte_changed_at_the_same_size_and_time_is_seen(tmp_path, home_settings, rule_runs):
    folder = write_extract(tmp_path / "extract", _with_rejects(), fmt="csv")
    before = _open(home_settings, folder)
    table = folder / "medications.csv"
    st = table.stat()
    text = table.read_bytes()
    assert text.count(b"Aspirin") == 1
    table.write_bytes(text.replace(b"Aspirin", b"aspirin"))  # no longer a reject
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (table.stat().st_size, table.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    rule_runs.clear()
    after = _open(home_settings, folder)
    assert rule_runs == list(TABLE_ORDER) and not after[3]
    assert after[0]["rows_rejected"]["medications"] == before[0]["rows_rejected"]["medications"] - 1


def test_a_new_riskstrat_version_sends_the_extract_through_the_rules_again(
    folder, home_settings, rule_runs, monkeypatch
):
    _open(home_settings, folder)
    rule_runs.clear()
    monkeypatch.setattr(validated_module, "riskstrat_version", lambda: "99.0.0")
    assert not _open(home_settings, folder)[3]
    assert rule_runs == list(TABLE_ORDER)


def test_other_rules_send_the_extract_through_the_rules_again(
    folder, home_settings, rule_runs, monkeypatch
):
    _open(home_settings, folder)
    rule_runs.clear()
    monkeypatch.setattr(validated_module, "rules_digest", lambda: "0" * 64)
    assert not _open(home_settings, folder)[3]
    assert rule_runs == list(TABLE_ORDER)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "not json",
        lambda text: json.dumps(json.loads(text) | {"record_format": 0}),  # another format
        lambda text: json.dumps(json.loads(text) | {"key": "0" * 64}),  # another extract's
        lambda text: json.dumps(json.loads(text) | {"rows_read": {"patients": 1}}),
        lambda text: json.dumps(json.loads(text) | {"rejects": [["patients"]]}),
    ],
    ids=["cut", "garbage", "format", "foreign", "tables", "rejects"],
)
def test_a_corrupt_or_foreign_record_is_ignored_and_replaced(
    folder, home_settings, rule_runs, damage
):
    first = _open(home_settings, folder)
    fp = fingerprint(folder, home_settings.validation_records_dir)
    assert fp is not None and fp.path.is_file()
    fp.path.write_text(damage(fp.path.read_text()))
    rule_runs.clear()
    again = _open(home_settings, folder)
    assert rule_runs == list(TABLE_ORDER) and not again[3]
    assert again[0] == first[0]
    assert read_record(fp) is not None  # written afresh
    rule_runs.clear()
    assert _open(home_settings, folder)[3] and rule_runs == []


def test_a_record_whose_rows_do_not_add_up_is_not_trusted(folder, home_settings, rule_runs):
    first = _open(home_settings, folder)
    fp = fingerprint(folder, home_settings.validation_records_dir)
    assert fp is not None
    data = json.loads(fp.path.read_text())
    data["rejects"] = [r for r in data["rejects"] if r[0] != "medications"]
    fp.path.write_text(json.dumps(data))
    rule_runs.clear()
    again = _open(home_settings, folder)
    assert rule_runs == list(TABLE_ORDER) and not again[3]
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(again[1][name], first[1][name])


def test_the_record_holds_no_identifier_and_no_value(folder, home_settings):
    _open(home_settings, folder)
    fp = fingerprint(folder, home_settings.validation_records_dir)
    assert fp is not None
    text = fp.path.read_text()
    tables = _with_rejects()
    values = {v for rows in tables.values() for r in rows for v in r.values() if len(v) > 3}
    assert {P1, P2, P3, P_UNKNOWN} <= values
    # dates and codes may also be column names or rules; identifiers and free text never
    assert not [v for v in values if v in text and not v.replace("_", "").isalpha()]
    assert "Aspirin" not in text and str(folder) not in text


def test_the_reject_limit_is_judged_afresh_on_every_open(folder, tmp_path, rule_runs):
    lenient = Settings(home=tmp_path / "home", max_reject_share=0.5)
    strict = Settings(home=tmp_path / "home", max_reject_share=0.0)
    _open(lenient, folder)
    with pytest.raises(TooManyRejectsError) as fresh:
        validate_extract(folder, max_reject_share=0.0, rejects_path=tmp_path / "r.csv")
    rule_runs.clear()
    with pytest.raises(TooManyRejectsError) as cached:
        open_extract(strict, folder)
    assert rule_runs == []
    assert str(cached.value).replace(str(rejects_path_for(strict, folder)), "R") == str(
        fresh.value
    ).replace(str(tmp_path / "r.csv"), "R")
    assert not list((strict.home / "duckdb-tmp").glob("extract-*"))


def test_reuse_can_be_turned_off(folder, tmp_path, rule_runs):
    settings = Settings(home=tmp_path / "home", max_reject_share=0.5, reuse_validation=False)
    _open(settings, folder)
    _open(settings, folder)
    assert rule_runs == list(TABLE_ORDER) * 2
    assert not settings.validation_records_dir.exists()


def test_the_validate_command_always_runs_the_rules_and_refreshes_the_record(
    folder, tmp_path, rule_runs, monkeypatch
):
    from typer.testing import CliRunner

    from riskstrat.cli import app

    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RISKSTRAT_MAX_REJECT_SHARE", "0.5")
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["validate", str(folder)])
        assert result.exit_code == 0, result.output
    assert rule_runs == list(TABLE_ORDER) * 2
    settings = Settings(home=tmp_path / "home", max_reject_share=0.5)
    rejects = rejects_path_for(settings, folder).read_bytes()
    rule_runs.clear()
    _, _, cached_rejects, recognised = _open(settings, folder)
    assert recognised and rule_runs == [] and cached_rejects == rejects


def test_checking_alone_gives_validations_summary_and_rejects(folder, tmp_path):
    summary = check_extract(folder, max_reject_share=0.5, rejects_path=tmp_path / "a.csv")
    with validate_extract(folder, max_reject_share=0.5, rejects_path=tmp_path / "b.csv") as e:
        assert summary.as_dict() == e.summary.as_dict()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_checking_every_value_row_by_row_finds_the_same_rejects(folder, tmp_path, monkeypatch):
    """The rules learn from each column's distinct values; a column with too many values is
    checked row by row instead, with the same outcome."""
    check_extract(folder, max_reject_share=0.5, rejects_path=tmp_path / "values.csv")
    monkeypatch.setattr(extract_module, "MAX_VALUES", 0)
    check_extract(folder, max_reject_share=0.5, rejects_path=tmp_path / "rows.csv")
    assert (tmp_path / "values.csv").read_bytes() == (tmp_path / "rows.csv").read_bytes()


@pytest.mark.slow
def test_features_of_a_recognised_extract_equal_a_fresh_validations(tmp_path):
    from riskstrat.features.build import build_features
    from riskstrat.synth import generate_extract

    folder = tmp_path / "extract"
    generate_extract(
        folder, n_patients=400, seed=3, months=24, extract_date=date(2026, 11, 1), fmt="parquet"
    )
    settings = Settings(home=tmp_path / "home")
    months = [date(2026, 6, 1), date(2026, 10, 1)]
    with open_extract(settings, folder) as first:
        fresh = build_features(first.con, index_dates=months)
    with open_extract(settings, folder) as second:
        assert second.summary.recognised
        cached = build_features(second.con, index_dates=months)
    pd.testing.assert_frame_equal(cached, fresh)


def test_a_fifo_in_the_manifests_place_is_named_and_never_opened(tmp_path, home_settings):
    folder = write_extract(tmp_path / "extract")
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")
    with pytest.raises(ExtractError, match="FIFO"):
        open_extract(home_settings, folder)


# --------------------------------------------------------------------------------------
# The validated tables kept between commands


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every time an extract's tables are built from its files without the rules."""
    runs: list[str] = []
    real = validated_module.load_tables

    def counted(db, folder, rejects):
        runs.append("load")
        return real(db, folder, rejects)

    monkeypatch.setattr(validated_module, "load_tables", counted)
    return runs


def _kept(settings: Settings, folder: Path) -> list[Path]:
    return sorted(settings.validation_records_dir.glob("*.duckdb"))


def test_the_validated_tables_are_kept_for_the_owner_and_a_later_command_opens_a_copy(
    folder, home_settings, rule_runs, loads
):
    first = _open(home_settings, folder)
    fp = fingerprint(folder, home_settings.validation_records_dir)
    assert fp is not None
    kept = _kept(home_settings, folder)
    assert kept == [validated_module.kept_tables_path(fp)]
    assert kept[0].stat().st_mode & 0o777 == 0o600  # personal data: the owner's only
    before = kept[0].read_bytes()

    rule_runs.clear()
    rejects_path_for(home_settings, folder).unlink()
    with open_extract(home_settings, folder) as extract:
        assert extract.summary.recognised and extract.database is not None
        assert extract.database != kept[0] and extract.database.parent.name == "duckdb-tmp"
        tables = _tables(extract)
        summary = extract.summary.as_dict()
        extract.con.execute("DELETE FROM medications")  # a run writes into its own copy
        extract.con.execute("CREATE TABLE scratch AS SELECT 1 AS one")
        extract.con.execute("CHECKPOINT")
    assert rule_runs == [] and loads == []  # neither the rules nor the files were read
    assert summary == first[0]
    assert rejects_path_for(home_settings, folder).read_bytes() == first[2]
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(tables[name], first[1][name])
    assert kept[0].read_bytes() == before
    assert not list((home_settings.home / "duckdb-tmp").glob("extract-*"))


def test_a_changed_extract_replaces_its_kept_tables(folder, home_settings, rule_runs):
    _open(home_settings, folder)
    (old,) = _kept(home_settings, folder)
    table = next(folder.glob("medications.*"))
    st = table.stat()
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))
    rule_runs.clear()
    assert not _open(home_settings, folder)[3]
    assert rule_runs == list(TABLE_ORDER)
    (new,) = _kept(home_settings, folder)
    assert new != old and not old.exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"not a database"), id="not-a-database"),
        pytest.param(
            lambda path: _delete_rows(path, "DELETE FROM activity WHERE rowid = 0"),
            id="a-row-missing",
        ),
        pytest.param(lambda path: _delete_rows(path, "DROP TABLE conditions"), id="a-table-gone"),
    ],
)
def test_kept_tables_that_do_not_hold_the_record_are_not_used(
    folder, home_settings, rule_runs, loads, damage
):
    first = _open(home_settings, folder)
    (kept,) = _kept(home_settings, folder)
    damage(kept)
    rule_runs.clear()
    again = _open(home_settings, folder)
    # the record still stands: the tables are built from the files, and kept afresh
    assert again[3] and rule_runs == [] and loads == ["load"]
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(again[1][name], first[1][name])
    assert _kept(home_settings, folder) == [kept]
    loads.clear()
    assert _open(home_settings, folder)[3] and loads == []


def _delete_rows(path: Path, sql: str) -> None:
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute(sql)
        con.execute("CHECKPOINT")


def test_keeping_the_tables_can_be_turned_off_and_deletes_those_kept(
    folder, tmp_path, rule_runs, loads
):
    keeping = Settings(home=tmp_path / "home", max_reject_share=0.5)
    not_keeping = Settings(
        home=tmp_path / "home", max_reject_share=0.5, keep_validated_tables=False
    )
    first = _open(keeping, folder)
    assert len(_kept(keeping, folder)) == 1
    rule_runs.clear()
    again = _open(not_keeping, folder)
    assert again[3] and rule_runs == [] and loads == ["load"]  # recognised, files read
    assert _kept(keeping, folder) == []
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(again[1][name], first[1][name])
    _open(not_keeping, folder)
    assert _kept(keeping, folder) == [] and loads == ["load", "load"]
