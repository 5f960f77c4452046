"""Hand-built tiny extracts for tests: a valid base and a writer (CSV or Parquet).

All NHS numbers are synthetic (999 prefix). Values are strings as they appear in a CSV;
empty string means a missing value.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from riskstrat.data.contract import TABLES

# Valid synthetic NHS numbers (Modulus 11 holds) and one invalid one.
P1, P2, P3 = "9998336376", "9999126146", "9993030325"
P_UNKNOWN = "9990052654"  # valid, but not in patients
BAD_CHECK = "9998336377"  # P1 with the wrong check digit
CHECK_TEN = "9990000000"  # 999000000 gives check digit 10: no valid number starts so
EXTRACT_DATE = "2026-11-01"

Row = dict[str, str]


def base_tables() -> dict[str, list[Row]]:
    """A small extract that passes every rule."""
    patients = [
        {
            "nhs_number": P1,
            "date_of_birth": "1940-05-01",
            "sex": "F",
            "ethnic_category": "A",
            "lsoa_code": "E01000001",
            "imd_decile": "3",
            "practice_code": "A81001",
            "pcn_code": "U12345",
            "registered_from": "2000-01-01",
            "registered_to": "",
            "date_of_death": "",
            "type1_opt_out": "false",
        },
        {
            "nhs_number": P2,
            "date_of_birth": "1980-02-29",
            "sex": "M",
            "ethnic_category": "",
            "lsoa_code": "",
            "imd_decile": "",
            "practice_code": "A81002",
            "pcn_code": "U12345",
            "registered_from": "2010-06-01",
            "registered_to": "2025-01-01",
            "date_of_death": "",
            "type1_opt_out": "",
        },
        {
            "nhs_number": P3,
            "date_of_birth": "1930-01-01",
            "sex": "U",
            "ethnic_category": "Z",
            "lsoa_code": "W01000002",
            "imd_decile": "10",
            "practice_code": "B82001",
            "pcn_code": "U54321",
            "registered_from": "1990-01-01",
            "registered_to": "",
            "date_of_death": "2026-03-01",
            "type1_opt_out": "true",
        },
    ]
    activity = [
        {
            "nhs_number": P1,
            "setting": "inpatient",
            "admission_method": "emergency",
            "start_date": "2026-01-10",
            "end_date": "2026-01-15",
            "primary_diagnosis": "J44.1",
            "attended": "",
        },
        {
            "nhs_number": P1,
            "setting": "inpatient",
            "admission_method": "elective",
            "start_date": "2026-10-30",
            "end_date": "",
            "primary_diagnosis": "",
            "attended": "",
        },
        {
            "nhs_number": P1,
            "setting": "ae",
            "admission_method": "",
            "start_date": "2026-01-10",
            "end_date": "2026-01-10",
            "primary_diagnosis": "R55",
            "attended": "",
        },
        {
            "nhs_number": P1,
            "setting": "outpatient",
            "admission_method": "",
            "start_date": "2026-02-01",
            "end_date": "",
            "primary_diagnosis": "",
            "attended": "false",
        },
        {
            "nhs_number": P2,
            "setting": "gp",
            "admission_method": "",
            "start_date": "2024-03-01",
            "end_date": "",
            "primary_diagnosis": "",
            "attended": "true",
        },
        {
            "nhs_number": P3,
            "setting": "community",
            "admission_method": "",
            "start_date": "2026-02-01",
            "end_date": "",
            "primary_diagnosis": "",
            "attended": "",
        },
    ]
    conditions = [
        {"nhs_number": P1, "condition": "COPD", "diagnosed_on": "2015-04-01"},
        {"nhs_number": P3, "condition": "HEART_FAILURE", "diagnosed_on": "2020-01-01"},
    ]
    medications = [
        {
            "nhs_number": P1,
            "issued_on": "2026-09-01",
            "medicine": "amlodipine",
            "drug_class": "ANTIHYPERTENSIVE",
        },
        {
            "nhs_number": P1,
            "issued_on": "2026-09-01",
            "medicine": "co-codamol 30/500",
            "drug_class": "OPIOID",
        },
    ]
    observations = [
        {"nhs_number": P1, "observed_on": "2026-05-01", "code": "BMI", "value": "24.5"},
        {"nhs_number": P1, "observed_on": "2026-05-01", "code": "CFS", "value": "6"},
        {"nhs_number": P1, "observed_on": "2026-06-01", "code": "FALL", "value": ""},
        {"nhs_number": P1, "observed_on": "2026-06-01", "code": "LIVES_ALONE", "value": ""},
    ]
    return {"patients": patients, "activity": activity, "conditions": conditions,
            "medications": medications, "observations": observations}  # fmt: skip


def write_extract(
    root: Path,
    tables: dict[str, list[Row]] | None = None,
    *,
    fmt: str = "csv",
    manifest: dict[str, Any] | str | None = None,
    drop_columns: dict[str, list[str]] | None = None,
) -> Path:
    """Write ``tables`` (default the valid base) as an extract folder under ``root``."""
    tables = copy.deepcopy(tables if tables is not None else base_tables())
    root.mkdir(parents=True, exist_ok=True)
    man = (
        manifest
        if manifest is not None
        else {"contract_version": 1, "extract_date": EXTRACT_DATE, "source": "tests"}
    )
    (root / "manifest.json").write_text(man if isinstance(man, str) else json.dumps(man))
    for name, rows in tables.items():
        columns = [c.name for c in TABLES[name].columns]
        columns += [k for r in rows for k in r if k not in columns]
        columns = list(dict.fromkeys(columns))
        for col in (drop_columns or {}).get(name, []):
            columns.remove(col)
        if fmt == "csv":
            _write_csv(root / f"{name}.csv", columns, rows)
        else:
            _write_parquet(root / f"{name}.parquet", name, columns, rows)
    return root


def _csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_csv(path: Path, columns: list[str], rows: list[Row]) -> None:
    lines = [",".join(_csv_field(c) for c in columns)]
    lines += [",".join(_csv_field(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_parquet(path: Path, name: str, columns: list[str], rows: list[Row]) -> None:
    """Parquet with the contract's types: dates date32, booleans bool, codes strings."""
    con = duckdb.connect()
    table = TABLES[name]
    known = {c.name: c for c in table.columns}
    col_defs = ", ".join(f'"{c}" VARCHAR' for c in columns)
    con.execute(f"CREATE TABLE t ({col_defs})")
    if rows:
        placeholders = ", ".join("?" for _ in columns)
        con.executemany(
            f"INSERT INTO t VALUES ({placeholders})",
            [[r.get(c, "") or None for c in columns] for r in rows],
        )
    casts = []
    for c in columns:
        kind = known[c].kind if c in known else "string"
        sql_type = {
            "date": "DATE",
            "boolean": "BOOLEAN",
            "integer": "INTEGER",
            "number": "DOUBLE",
        }.get(kind, "VARCHAR")
        casts.append(f'CAST("{c}" AS {sql_type}) AS "{c}"')
    con.execute(f"COPY (SELECT {', '.join(casts)} FROM t) TO '{path}' (FORMAT parquet)")
    con.close()


def generated_in_small_row_groups(tmp_path: Path, n_patients: int = 1500) -> Any:
    """A generated extract (its tables in NHS-number order, as the generator writes them)
    validated into a database file of 2,048-row row groups (as pipelines validate into a
    scratch file), so that a small population spans many row groups as a large one does."""
    from riskstrat.data.extract import connect, validate_extract
    from riskstrat.synth import generate_extract

    out = generate_extract(
        tmp_path / "gen", n_patients=n_patients, seed=3, months=30,
        extract_date=date(2026, 6, 1), fmt="parquet",
    )  # fmt: skip
    con = connect()
    path = str(tmp_path / "small_groups.duckdb").replace("'", "''")
    con.execute(f"ATTACH '{path}' AS small_groups (ROW_GROUP_SIZE 2048)")
    con.execute("USE small_groups")
    return validate_extract(out.out_dir, max_reject_share=1.0, con=con)
