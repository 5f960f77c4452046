"""Spark's extract validation against DuckDB's on the same folders (issue 26's proof of
equality): the same clean tables (every row and value, and the column types), the same
summary, a byte-identical rejects file, and the same error for a folder that cannot be used.

A few folders carry every case (Spark costs seconds per validation): a clean extract in
each format, and a bad one in each format breaking every rule the format can express (every
table rule, every generic rule, malformed CSV records with too many and too few fields,
duplicate, unknown and rejected patients, check digits), with edge values that are accepted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from riskstrat.data.contract import GENERIC_RULES, TABLE_ORDER, TABLES, all_rule_ids
from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import validate_extract
from riskstrat.data.rules import duck_type
from riskstrat.data.spark_extract import validate_extract_spark
from riskstrat.engines.spark import spark_scratch
from riskstrat.nhs_number import check_digit
from tests.support.extracts import (
    BAD_CHECK,
    CHECK_TEN,
    P1,
    P2,
    P_UNKNOWN,
    base_tables,
    write_extract,
)

pytestmark = pytest.mark.spark

_SPARK_TYPES = {
    "DATE": "date",
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "DOUBLE": "double",
    "VARCHAR": "string",
}


def _fresh_numbers():
    """Valid synthetic NHS numbers not used by the base extract."""
    taken = {P1, P2, "9993030325", P_UNKNOWN}
    for n in range(100000, 999999):
        nine = f"999{n:06d}"
        digit = check_digit(nine)
        if digit is not None and nine + str(digit) not in taken:
            yield nine + str(digit)


# (table, base row to copy, changes, typed value: CSV only). Each case is a new row at the
# end of its table; patients rows get a fresh NHS number unless the case sets one.
BAD: list[tuple[str, int, dict[str, str], bool]] = [
    ("patients", 0, {"nhs_number": ""}, False),
    ("patients", 0, {"nhs_number": "999833637"}, False),
    ("patients", 0, {"nhs_number": "999 833 6376"}, False),
    ("patients", 0, {"nhs_number": BAD_CHECK}, False),
    ("patients", 0, {"nhs_number": CHECK_TEN}, False),
    ("patients", 0, {"date_of_birth": ""}, False),
    ("patients", 0, {"date_of_birth": "1940/05/01"}, True),
    ("patients", 0, {"date_of_birth": "2023-02-29"}, True),
    ("patients", 0, {"sex": "f"}, False),
    ("patients", 0, {"ethnic_category": "I"}, False),
    ("patients", 0, {"lsoa_code": "E0100001"}, False),
    ("patients", 0, {"practice_code": "A81001\n"}, False),  # a line break after a good value
    ("patients", 0, {"pcn_code": ""}, False),
    ("patients", 0, {"registered_from": ""}, False),
    ("patients", 0, {"imd_decile": "3.5"}, True),
    ("patients", 0, {"imd_decile": " 3"}, True),
    ("patients", 0, {"type1_opt_out": "TRUE"}, True),
    ("patients", 0, {"date_of_birth": "2026-11-02"}, False),
    ("patients", 0, {"date_of_birth": "1911-11-01"}, False),
    ("patients", 0, {"imd_decile": "11"}, False),
    ("patients", 0, {"registered_to": "1999-12-31"}, False),
    ("patients", 0, {"date_of_death": "1940-04-30"}, False),
    ("patients", 0, {"date_of_death": "2026-11-01"}, False),
    ("patients", 1, {"nhs_number": P2}, False),  # P2 twice: both rows rejected, events too
    # accepted on the edge
    ("patients", 0, {"date_of_birth": "1911-11-02", "imd_decile": "+1"}, False),
    ("patients", 0, {"date_of_death": "2026-10-31", "type1_opt_out": "true"}, False),
    ("activity", 0, {"nhs_number": ""}, False),
    ("activity", 0, {"nhs_number": P_UNKNOWN}, False),
    ("activity", 0, {"nhs_number": "12"}, False),
    ("activity", 2, {"setting": "A&E"}, False),
    ("activity", 0, {"setting": ""}, False),
    ("activity", 0, {"admission_method": "urgent"}, False),
    ("activity", 0, {"admission_method": ""}, False),
    ("activity", 2, {"admission_method": "emergency"}, False),
    ("activity", 0, {"start_date": "10/01/2026"}, True),
    ("activity", 0, {"start_date": "2026-11-01", "end_date": ""}, False),
    ("activity", 0, {"start_date": "1940-04-30", "end_date": "1940-05-02"}, False),
    ("activity", 0, {"end_date": "2026-01-09"}, False),
    ("activity", 2, {"end_date": "2026-01-11"}, False),
    ("activity", 0, {"primary_diagnosis": "j44.1"}, False),
    ("activity", 0, {"primary_diagnosis": "J44-1"}, False),
    ("activity", 3, {"attended": "no"}, True),
    ("activity", 0, {"primary_diagnosis": "I10", "end_date": "2026-01-10"}, False),  # edge
    ("conditions", 0, {"condition": "ACTIVE_CANCER"}, False),
    ("conditions", 0, {"diagnosed_on": ""}, False),
    ("conditions", 0, {"diagnosed_on": "2015-04"}, True),
    ("conditions", 0, {"diagnosed_on": "2026-11-01"}, False),
    ("medications", 0, {"medicine": "Amlodipine"}, False),
    ("medications", 0, {"drug_class": "CALCIUM_BLOCKER"}, False),
    ("medications", 0, {"issued_on": "2026-11-01"}, False),
    ("medications", 0, {"medicine": 'co-codamol "30/500",\nsoluble'}, False),  # edge
    ("observations", 2, {"code": "FALLEN"}, False),
    ("observations", 2, {"observed_on": "2026-12-01"}, False),
    ("observations", 0, {"value": ""}, False),
    ("observations", 2, {"value": "1"}, False),
    ("observations", 0, {"value": "9.9"}, False),
    ("observations", 1, {"value": "10"}, False),
    ("observations", 1, {"value": "5.5"}, False),
    ("observations", 0, {"value": "normal"}, True),
    ("observations", 0, {"value": "nan"}, False),
    ("observations", 0, {"value": "inf"}, False),
    ("observations", 0, {"value": "1e400"}, True),
    ("observations", 0, {"value": "2.45e1"}, False),  # edge
    ("observations", 1, {"value": "9.0"}, False),  # edge
]


def _bad_tables(fmt: str) -> dict[str, list[dict[str, str]]]:
    tables = base_tables()
    tables["patients"][1]["favourite_colour"] = "blue"  # an unknown column: a warning
    fresh = _fresh_numbers()
    for table, index, changes, typed in BAD:
        if typed and fmt == "parquet":
            continue
        row = dict(tables[table][index])
        if table == "patients":
            row["nhs_number"] = next(fresh)
        row.update(changes)
        tables[table].append(row)
    # An event of a patient whose rows are rejected (P2, repeated)
    tables["conditions"].append(
        {"nhs_number": P2, "condition": "COPD", "diagnosed_on": "2020-01-01"}
    )
    return tables


def _malform(root: Path) -> None:
    """Records with too many and too few fields between good ones (CSV)."""
    for name, at, extra in (("activity", 3, 2), ("observations", 2, 0), ("medications", 2, 0)):
        path = root / f"{name}.csv"
        text = path.read_text(encoding="utf-8")
        header, *rows = _records(text)
        width = len(header.split(","))
        rows.insert(at, ",".join([P1] * (width + 1 + extra)))  # too many
        rows.insert(at + 2, f"{P1},x")  # too few
        rows.append(",".join([P1] * (width - 1)))  # too few, last
        # Medications with a byte-order mark and Windows line endings (a quoted field keeps
        # its own line break).
        end = "\r\n" if name == "medications" else "\n"
        bom = b"\xef\xbb\xbf" if name == "medications" else b""
        path.write_bytes(bom + (end.join([header, *rows]) + end).encode("utf-8"))


def _records(text: str) -> list[str]:
    """The file's records (a quoted field may hold a line break)."""
    out, current, quoted = [], "", False
    for line in text.split("\n")[:-1]:
        current = f"{current}\n{line}" if quoted else line
        quoted = (current.count('"') % 2) == 1
        if not quoted:
            out.append(current)
    return out


def _rejects_rules(path: Path) -> set[tuple[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return {(r["table"], r["rule"]) for r in csv.DictReader(fh)}


def _compare(spark, root: Path, out: Path, **kwargs) -> tuple[Path, object]:
    """Validate ``root`` with both engines; assert the same clean tables, summary and rejects
    file. Returns DuckDB's rejects file and summary."""
    duck_rejects, spark_rejects = out / "duckdb" / "rejects.csv", out / "spark" / "rejects.csv"
    duck = validate_extract(root, rejects_path=duck_rejects, **kwargs)
    sx = validate_extract_spark(spark, root, rejects_path=spark_rejects, **kwargs)
    try:
        for name in TABLE_ORDER:
            columns = [c.name for c in TABLES[name].columns]
            frame = spark.table(name)
            assert frame.columns == columns, name
            assert [f.dataType.simpleString() for f in frame.schema.fields] == [
                _SPARK_TYPES[duck_type(c)] for c in TABLES[name].columns
            ], name
            got = [tuple(r) for r in frame.collect()]
            want = duck.con.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
            assert sorted(got, key=repr) == sorted(want, key=repr), name
        assert dataclasses.replace(sx.summary, rejects_path=None) == dataclasses.replace(
            duck.summary, rejects_path=None
        )
        assert sx.summary.rejects_path == spark_rejects
        assert spark_rejects.read_bytes() == duck_rejects.read_bytes()
    finally:
        duck.close()
        sx.close()
    # The same folder at a URI (file://, through Hadoop's file system as s3a:// would be):
    # the same summary but for where it lies, and the same rejects file.
    uri = root.as_uri()
    uri_rejects = out / "spark-uri" / "rejects.csv"
    with validate_extract_spark(spark, uri, rejects_path=uri_rejects, **kwargs) as at_uri:
        assert at_uri.summary.extract_dir == uri
        assert at_uri.summary.files == {
            name: path.replace(str(root), uri) for name, path in duck.summary.files.items()
        }
        assert dataclasses.replace(
            at_uri.summary, rejects_path=None, extract_dir=root, files=duck.summary.files
        ) == dataclasses.replace(duck.summary, rejects_path=None)
    assert uri_rejects.read_bytes() == duck_rejects.read_bytes()
    assert not any(Path(spark_scratch(spark)).glob("csv-scan-*")), "a CSV copy was left"
    return duck_rejects, duck.summary


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_clean_extract_reads_the_same(spark, tmp_path, fmt):
    tables = base_tables()
    for row in tables["patients"]:
        row["shoe_size"] = "9"
    if fmt == "parquet":
        # Pseudonyms (checked for shape, never digit by digit); one bad, one repeated.
        names = {P1: "1042", P2: "person-7.b_9", "9993030325": "9990000000"}
        for rows in tables.values():
            for row in rows:
                row["nhs_number"] = names.get(row["nhs_number"], row["nhs_number"])
        tables["patients"] += [dict(tables["patients"][0], nhs_number="has space")]
        manifest = {"contract_version": 2, "extract_date": "2026-11-01",
                    "identifier_kind": "pseudonym"}  # fmt: skip
    else:
        tables["medications"] = []  # a header-only file: an empty table
        manifest = None
    root = write_extract(tmp_path / "x", tables, fmt=fmt, manifest=manifest)
    rejects, summary = _compare(spark, root, tmp_path, max_reject_share=1.0)
    assert summary.rows_read["patients"] == len(tables["patients"])
    assert summary.warnings == [f"patients.{fmt}: ignored unknown columns shoe_size"]
    expected = {("patients", "invalid_pseudonym_format")} if fmt == "parquet" else set()
    assert _rejects_rules(rejects) == expected
    assert sum(summary.rows_rejected.values()) == len(expected)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_rule_rejects_the_same_rows(spark, tmp_path, fmt):
    tables = _bad_tables(fmt)
    root = write_extract(tmp_path / "x", tables, fmt=fmt)
    if fmt == "csv":
        _malform(root)
    rejects, summary = _compare(spark, root, tmp_path, max_reject_share=1.0)
    found = _rejects_rules(rejects)
    # Every rule was broken (Parquet's types cannot hold the bad text of a typed column).
    typed = {"invalid_date", "invalid_boolean", "invalid_integer", "malformed_row"}
    generic = set(GENERIC_RULES) - {"invalid_pseudonym_format"}
    if fmt == "parquet":
        generic -= typed
    assert all_rule_ids() <= found
    assert generic <= {rule for _, rule in found}
    assert ("activity", "patient_rejected") in found
    assert summary.rows_read["activity"] == len(tables["activity"]) + (3 if fmt == "csv" else 0)
    assert 0 < sum(summary.rows_rejected.values()) < sum(summary.rows_read.values())


def test_structural_errors_are_the_same(spark, tmp_path):
    def both(root: Path) -> tuple[ExtractError, ExtractError]:
        with pytest.raises(ExtractError) as duck:
            validate_extract(root, max_reject_share=1.0).close()
        with pytest.raises(ExtractError) as sx:
            validate_extract_spark(spark, root, max_reject_share=1.0).close()
        # At a URI, the same error naming the file by its URI.
        with pytest.raises(ExtractError) as at_uri:
            validate_extract_spark(spark, root.as_uri(), max_reject_share=1.0).close()
        assert str(at_uri.value) == str(duck.value).replace(str(root), root.as_uri())
        return duck.value, sx.value

    missing = write_extract(tmp_path / "missing", drop_columns={"activity": ["setting"]})
    duck, sx = both(missing)
    assert type(sx) is type(duck) and str(sx) == str(duck)
    assert "required column setting missing" in str(duck)

    counts = {t: len(rows) for t, rows in base_tables().items()}
    wrong = write_extract(
        tmp_path / "count",
        fmt="parquet",
        manifest={"contract_version": 2, "extract_date": "2026-11-01",
                  "row_counts": {**counts, "patients": 4}},
    )  # fmt: skip
    before = {t.name for t in spark.catalog.listTables()}
    duck, sx = both(wrong)
    assert type(sx) is type(duck) and str(sx) == str(duck)
    assert "row_counts says 4 rows" in str(duck)
    # Nothing is left behind in the session (the patients view was made before the check).
    assert {t.name for t in spark.catalog.listTables()} == before
