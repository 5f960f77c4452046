"""File-level behaviour of the extract reader: fatal errors, CSV details, Parquet types."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from riskstrat.data.extract import (
    ExtractError,
    TooManyRejectsError,
    validate_extract,
)
from riskstrat.data.rules import check_digit_sql
from riskstrat.data.structure import redact_duckdb
from riskstrat.nhs_number import is_valid_nhs_number
from tests.support.extracts import P1, P2, base_tables, write_extract


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("manifest", "column", "words"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "JSON object"),
        ({"extract_date": "2026-11-01"}, "contract_version", "contract_version is missing"),
        (
            {"contract_version": 3, "extract_date": "2026-11-01"},
            "contract_version",
            "must be 1 or 2",
        ),
        ({"contract_version": True, "extract_date": "2026-11-01"}, "contract_version", "1 or 2"),
        ({"contract_version": 1}, "extract_date", "extract_date is missing"),
        ({"contract_version": 1, "extract_date": "2026-11-1"}, "extract_date", "ISO 8601"),
        ({"contract_version": 1, "extract_date": "2026-02-30"}, "extract_date", "calendar date"),
        ({"contract_version": 1, "extract_date": 20261101}, "extract_date", "ISO 8601"),
        ({"contract_version": 1, "extract_date": "2026-11-01", "source": 5}, "source", "text"),
        # version 2's keys: what the identifier is, row counts, provenance
        (
            {"contract_version": 1, "extract_date": "2026-11-01", "identifier_kind": "pseudonym"},
            "identifier_kind",
            "needs contract_version 2",
        ),
        (
            {"contract_version": 2, "extract_date": "2026-11-01", "identifier_kind": "person_id"},
            "identifier_kind",
            "nhs_number or pseudonym",
        ),
        (
            {"contract_version": 2, "extract_date": "2026-11-01", "row_counts": {"patients": -1}},
            "row_counts",
            "whole numbers",
        ),
        (
            {"contract_version": 2, "extract_date": "2026-11-01", "row_counts": {"people": 3}},
            "row_counts",
            "contract table names",
        ),
        (
            {"contract_version": 2, "extract_date": "2026-11-01", "row_counts": [3]},
            "row_counts",
            "whole numbers",
        ),
        (
            {"contract_version": 2, "extract_date": "2026-11-01", "provenance": "omop"},
            "provenance",
            "JSON object",
        ),
    ],
)
def test_bad_manifest_stops_and_names_the_field(tmp_path, manifest, column, words):
    root = write_extract(
        tmp_path / "x", manifest=manifest if isinstance(manifest, str) else json.dumps(manifest)
    )
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(ExtractError) as info:
        validate_extract(root, rejects_path=rejects)
    assert "manifest.json" in str(info.value) and words in str(info.value)
    assert info.value.column == column
    assert not rejects.exists()  # nothing is written


def test_missing_manifest(tmp_path):
    root = write_extract(tmp_path / "x")
    (root / "manifest.json").unlink()
    with pytest.raises(ExtractError, match=r"manifest\.json.*missing"):
        validate_extract(root)


def test_missing_folder(tmp_path):
    with pytest.raises(ExtractError, match="does not exist"):
        validate_extract(tmp_path / "nowhere")


def test_missing_table_file_names_it(tmp_path):
    root = write_extract(tmp_path / "x")
    (root / "conditions.csv").unlink()
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(ExtractError, match=r"conditions\.csv.*table conditions is missing"):
        validate_extract(root, rejects_path=rejects)
    assert not rejects.exists()


def test_both_csv_and_parquet_is_ambiguous(tmp_path):
    root = write_extract(tmp_path / "x")
    write_extract(tmp_path / "y", fmt="parquet")
    (root / "patients.parquet").write_bytes((tmp_path / "y" / "patients.parquet").read_bytes())
    with pytest.raises(ExtractError, match="keep exactly one"):
        validate_extract(root)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_required_column_names_file_and_column(tmp_path, fmt):
    root = write_extract(tmp_path / "x", fmt=fmt, drop_columns={"activity": ["setting"]})
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(ExtractError) as info:
        validate_extract(root, rejects_path=rejects)
    assert f"activity.{fmt}" in str(info.value)
    assert "setting" in str(info.value) and info.value.column == "setting"
    assert not rejects.exists()


def test_missing_optional_column_is_read_as_missing_values(tmp_path):
    root = write_extract(
        tmp_path / "x", drop_columns={"patients": ["ethnic_category", "type1_opt_out"]}
    )
    with validate_extract(root) as extract:
        rows = extract.con.execute(
            "SELECT count(*), count(ethnic_category), count(type1_opt_out) FROM patients"
        ).fetchone()
    assert rows == (3, 0, 0)


def test_unknown_columns_are_ignored_with_one_warning(tmp_path):
    tables = base_tables()
    for row in tables["patients"]:
        row["favourite_colour"] = "blue"
        row["shoe_size"] = "9"
    root = write_extract(tmp_path / "x", tables)
    with validate_extract(root) as extract:
        warnings = extract.summary.warnings
        cols = [r[0] for r in extract.con.execute("DESCRIBE patients").fetchall()]
    assert warnings == ["patients.csv: ignored unknown columns favourite_colour, shoe_size"]
    assert "shoe_size" not in cols


def test_too_many_rejects_stops_after_writing_the_rejects_file(tmp_path):
    tables = base_tables()
    tables["activity"][1]["setting"] = "walk-in"  # 1 of 6 rows (17%) > 1%
    root = write_extract(tmp_path / "x", tables)
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(TooManyRejectsError) as info:
        validate_extract(root, rejects_path=rejects)
    message = str(info.value)
    assert "activity: 1 of 6 rows rejected" in message and "setting invalid_code" in message
    assert [(r["table"], r["row_number"], r["rule"]) for r in _rejects(rejects)] == [
        ("activity", "2", "invalid_code")
    ]
    # a higher limit lets the same extract through
    validate_extract(root, max_reject_share=0.2).close()


def test_source_files_are_never_changed(tmp_path):
    tables = base_tables()
    tables["activity"][1]["setting"] = "walk-in"
    root = write_extract(tmp_path / "x", tables)
    before = _digests(root)
    validate_extract(root, max_reject_share=1.0, rejects_path=tmp_path / "r.csv").close()
    with pytest.raises(TooManyRejectsError):
        validate_extract(root, rejects_path=tmp_path / "r2.csv")
    assert _digests(root) == before


def test_rejects_file_is_written_even_when_empty(tmp_path):
    root = write_extract(tmp_path / "x")
    rejects = tmp_path / "deep" / "rejects.csv"
    validate_extract(root, rejects_path=rejects).close()
    assert rejects.read_text().splitlines() == ["table,row_number,column,rule,message"]


def test_rfc4180_quoting_bom_and_crlf(tmp_path):
    root = write_extract(tmp_path / "x")
    meds = root / "medications.csv"
    meds.write_bytes(
        b"\xef\xbb\xbfnhs_number,issued_on,medicine,drug_class\r\n"
        + f'{P1},2026-09-01,"co-codamol, 30/500",OPIOID\r\n'.encode()
        + f'{P1},2026-09-02,"paracetamol ""500""\nsoluble",OTHER\r\n'.encode()
        + f"{P1},2026-09-03,,OTHER\r\n".encode()
    )
    with validate_extract(root, max_reject_share=1.0, rejects_path=tmp_path / "r.csv") as extract:
        medicines = extract.con.execute(
            "SELECT medicine FROM medications ORDER BY issued_on"
        ).fetchall()
    assert medicines == [("co-codamol, 30/500",), ('paracetamol "500"\nsoluble',)]
    # the empty medicine (row 3) is missing, so it breaks 'required'
    assert [(r["row_number"], r["rule"]) for r in _rejects(tmp_path / "r.csv")] == [
        ("3", "required")
    ]


def test_malformed_rows_are_rejected_and_later_rows_keep_their_numbers(tmp_path):
    root = write_extract(tmp_path / "x")
    path = root / "activity.csv"
    lines = path.read_text().splitlines()
    lines.insert(2, f"{P1},gp")  # becomes data row 2: too few fields
    lines.insert(4, f"{P1},gp,,2026-01-01,,,true,extra")  # data row 4: too many
    lines.append(f"{P2},gp,,2026-13-01,,,true")  # data row 9: bad date
    path.write_text("\n".join(lines) + "\n")
    with validate_extract(root, max_reject_share=1.0, rejects_path=tmp_path / "r.csv") as extract:
        assert extract.summary.rows_read["activity"] == 9
        assert extract.con.execute("SELECT count(*) FROM activity").fetchone()[0] == 6
    found = [(r["row_number"], r["column"], r["rule"]) for r in _rejects(tmp_path / "r.csv")]
    assert found == [
        ("2", "*", "malformed_row"),
        ("4", "*", "malformed_row"),
        ("9", "start_date", "invalid_date"),
    ]


def test_a_header_only_table_is_an_empty_table(tmp_path):
    tables = base_tables()
    tables["conditions"] = []
    root = write_extract(tmp_path / "x", tables)
    with validate_extract(root) as extract:
        assert extract.summary.rows_read["conditions"] == 0
        assert extract.con.execute("SELECT count(*) FROM conditions").fetchone()[0] == 0


def test_empty_csv_without_header_is_unreadable(tmp_path):
    root = write_extract(tmp_path / "x")
    (root / "observations.csv").write_text("")
    with pytest.raises(ExtractError, match=r"observations\.csv.*no header"):
        validate_extract(root)


def test_garbage_parquet_is_unreadable(tmp_path):
    root = write_extract(tmp_path / "x", fmt="parquet")
    (root / "activity.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(ExtractError, match=r"activity\.parquet.*cannot be read as Parquet"):
        validate_extract(root)


@pytest.mark.parametrize(
    ("table", "column", "sql_type"),
    [
        ("patients", "nhs_number", "BIGINT"),
        ("patients", "date_of_birth", "VARCHAR"),
        ("activity", "attended", "VARCHAR"),
        ("patients", "imd_decile", "DOUBLE"),
        ("observations", "value", "VARCHAR"),
        ("activity", "start_date", "TIMESTAMP"),
    ],
)
def test_parquet_column_of_the_wrong_type_stops(tmp_path, table, column, sql_type):
    root = write_extract(tmp_path / "x", fmt="parquet")
    path = root / f"{table}.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * REPLACE (TRY_CAST({column} AS {sql_type}) AS {column}) "
        f"FROM read_parquet('{path}')) TO '{tmp_path / 'tmp.parquet'}' (FORMAT parquet)"
    )
    con.close()
    path.write_bytes((tmp_path / "tmp.parquet").read_bytes())
    with pytest.raises(ExtractError) as info:
        validate_extract(root)
    assert info.value.column == column and f"{table}.parquet" in str(info.value)


def test_parquet_all_null_optional_column_of_any_type_is_accepted(tmp_path):
    root = write_extract(tmp_path / "x", fmt="parquet")
    path = root / "patients.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * REPLACE (CAST(NULL AS INTEGER) AS lsoa_code) "
        f"FROM read_parquet('{path}')) TO '{tmp_path / 'tmp.parquet'}' (FORMAT parquet)"
    )
    con.close()
    path.write_bytes((tmp_path / "tmp.parquet").read_bytes())
    with validate_extract(root) as extract:
        assert extract.con.execute("SELECT count(lsoa_code) FROM patients").fetchone()[0] == 0


def test_sql_and_python_check_digits_agree():
    rng = np.random.default_rng(0)
    numbers = [f"{n:010d}" for n in rng.integers(0, 10**10, size=20_000)]
    numbers += ["9990000000", "9990000001", "9998336376", "9998336377"]
    con = duckdb.connect()
    frame = pd.DataFrame({"v": numbers})
    con.register("n", frame)
    sql = dict(con.execute(f"SELECT v, {check_digit_sql('v')} FROM n").fetchall())
    assert all(sql[x] == is_valid_nhs_number(x) for x in numbers)
    assert sum(sql.values()) > 1000  # both outcomes well represented


def test_duckdb_messages_lose_long_digit_runs():
    message = redact_duckdb(
        RuntimeError("Error near line 3: '9998336376,gp' bad\nmore detail 999 833 6376")
    )
    assert "9998336376" not in message and "more detail" not in message


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_pipelines_open_extracts_within_the_deployments_duckdb_limits(tmp_path, fmt):
    from riskstrat.config import Settings
    from riskstrat.pipelines.common import open_extract

    folder = write_extract(tmp_path / "extract", base_tables(), fmt=fmt)
    settings = Settings(home=tmp_path / "home", duckdb_memory_limit="1GB", duckdb_threads=1)
    with open_extract(settings, folder) as extract:
        limit = extract.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        threads = extract.con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        temp = extract.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
        tables = {
            r[0]
            for r in extract.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    assert limit in ("1.0 GB", "953.6 MiB") and int(threads) == 1
    assert Path(temp) == settings.home / "duckdb-tmp"
    # only the clean tables stay loaded: no raw or parsed copies
    assert not [t for t in tables if t.startswith(("_raw_", "_parsed_"))]
    assert {"patients", "activity", "conditions", "medications", "observations"} <= tables


def test_pipelines_keep_the_validated_tables_in_a_scratch_file_deleted_on_close(tmp_path):
    from riskstrat.config import Settings
    from riskstrat.pipelines.common import open_extract

    folder = write_extract(tmp_path / "extract", base_tables())
    settings = Settings(home=tmp_path / "home")
    scratch = settings.home / "duckdb-tmp"
    with open_extract(settings, folder) as extract:
        assert extract.database is not None and extract.database.parent == scratch
        assert extract.database.is_file()
        path = extract.con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()[0][0]
        assert Path(path) == extract.database
        people = extract.con.execute("SELECT count(*) FROM patients").fetchall()[0][0]
    assert people == len(base_tables()["patients"])
    assert not list(scratch.glob("extract-*"))


def test_a_failed_validation_leaves_no_scratch_file(tmp_path):
    from riskstrat.config import Settings
    from riskstrat.pipelines.common import open_extract

    folder = write_extract(tmp_path / "extract", drop_columns={"patients": ["date_of_birth"]})
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(ExtractError, match="date_of_birth"):
        open_extract(settings, folder)
    assert not list((settings.home / "duckdb-tmp").glob("extract-*"))


def test_scratch_files_of_killed_processes_are_deleted_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from riskstrat.data.extract import scratch_database

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    left = tmp_path / f"extract-{int(dead.stdout)}-{'a' * 32}.duckdb"
    left_wal = tmp_path / (left.name + ".wal")
    mine = tmp_path / f"extract-{os.getpid()}-{'b' * 32}.duckdb"
    other = tmp_path / "notes.txt"
    for f in (left, left_wal, mine, other):
        f.write_text("x")
    new = scratch_database(tmp_path)
    assert not left.exists() and not left_wal.exists()
    assert mine.exists() and other.exists()
    assert new.parent == tmp_path and not new.exists() and str(os.getpid()) in new.name
    assert new != scratch_database(tmp_path)
