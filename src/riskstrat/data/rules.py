"""The contract's rules as DuckDB SQL: how each column's raw text is parsed and checked, how
rows that break a rule are recorded, and the rejects file that lists them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from riskstrat.data.contract import (
    GENERIC_RULES,
    PSEUDONYM_PATTERN,
    TABLE_ORDER,
    TABLES,
    Column,
    IdentifierKind,
    Table,
)
from riskstrat.data.duck import ident, sql_path

REJECTS_COLUMNS = ("table", "row_number", "column", "rule", "message")
_NUMBER_PATTERN = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"


@dataclass(frozen=True)
class RuleCount:
    table: str
    column: str
    rule: str
    rows: int


def raw_expr(raw: str, source_type: str) -> str:
    """The value as found, with empty text treated as missing."""
    if source_type == "VARCHAR":
        return f"NULLIF({raw}, '')"
    return raw


def parsed_expr(
    col: Column, raw: str, source_type: str, identifier_kind: IdentifierKind = "nhs_number"
) -> str:
    """SQL turning the source value into the contract type; NULL when it does not parse."""
    text = source_type == "VARCHAR"
    if source_type == "NULL":
        return f"CAST(NULL AS {duck_type(col)})"
    value = f"NULLIF({raw}, '')" if text else raw
    if col.kind == "date":
        if not text:
            return value
        return (
            f"CASE WHEN regexp_full_match({value}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
            f"THEN TRY_CAST({value} AS DATE) END"
        )
    if col.kind == "boolean":
        if not text:
            return value
        return f"CASE {value} WHEN 'true' THEN true WHEN 'false' THEN false END"
    if col.kind == "integer":
        if not text:
            return f"CAST({value} AS BIGINT)"
        return (
            f"CASE WHEN regexp_full_match({value}, '[+-]?[0-9]{{1,18}}') "
            f"THEN TRY_CAST({value} AS BIGINT) END"
        )
    if col.kind == "number":
        if not text:
            return f"CASE WHEN isfinite(CAST({value} AS DOUBLE)) THEN CAST({value} AS DOUBLE) END"
        return (
            f"CASE WHEN regexp_full_match({value}, '{_NUMBER_PATTERN}') "
            f"AND isfinite(TRY_CAST({value} AS DOUBLE)) THEN TRY_CAST({value} AS DOUBLE) END"
        )
    if col.kind == "code":
        codes = ", ".join(f"'{c}'" for c in col.codes or ())
        return f"CASE WHEN {value} IN ({codes}) THEN {value} END"
    if col.kind == "nhs_number" and identifier_kind == "pseudonym":
        return f"CASE WHEN regexp_full_match({value}, '{PSEUDONYM_PATTERN}') THEN {value} END"
    if col.kind == "nhs_number":
        return (
            f"CASE WHEN regexp_full_match({value}, '[0-9]{{10}}') AND nhs_check_digit_ok({value}) "
            f"THEN {value} END"
        )
    if col.pattern:
        return f"CASE WHEN regexp_full_match({value}, '{col.pattern}') THEN {value} END"
    return value


def clean_expr(col: Column, raw: str, source_type: str) -> str:
    """``parsed_expr`` for a value in a row that breaks no check, without the tests that
    the checks have already passed: a code, an NHS number or a patterned string that
    passed is the value itself, and text that passed its date or number pattern casts."""
    value = f"NULLIF({raw}, '')" if source_type == "VARCHAR" else raw
    if col.kind in ("date", "integer", "number") and source_type == "VARCHAR":
        return f"TRY_CAST({value} AS {duck_type(col)})"
    if col.kind == "boolean":
        return parsed_expr(col, raw, source_type)
    return f"CAST({value} AS {duck_type(col)})"


def duck_type(col: Column) -> str:
    return {"date": "DATE", "boolean": "BOOLEAN", "integer": "BIGINT", "number": "DOUBLE"}.get(
        col.kind, "VARCHAR"
    )


def _generic_checks(
    table: Table, identifier_kind: IdentifierKind
) -> Iterator[tuple[str, str, str]]:
    """(column, rule, SQL predicate) for the rules every column gets from its kind."""
    for col in table.columns:
        raw, parsed = ident("_raw_" + col.name), ident(col.name)
        if col.required:
            yield col.name, "required", f"{raw} IS NULL"
        if col.kind == "nhs_number" and identifier_kind == "pseudonym":
            # A pseudonym has a shape but no check digit: nothing to read digit by digit.
            yield (
                col.name,
                "invalid_pseudonym_format",
                f"{raw} IS NOT NULL "
                f"AND NOT regexp_full_match(CAST({raw} AS VARCHAR), '{PSEUDONYM_PATTERN}')",
            )
            yield col.name, "duplicate_nhs_number", "_nhs_count > 1"
            continue
        if col.kind == "nhs_number":
            # In event tables, a number equal to an accepted patient's passed these checks
            # there; only the others are read digit by digit.
            known = "NOT _patient_clean AND " if table.name != "patients" else ""
            yield (
                col.name,
                "invalid_nhs_number_format",
                f"{known}{raw} IS NOT NULL "
                f"AND NOT regexp_full_match(CAST({raw} AS VARCHAR), '[0-9]{{10}}')",
            )
            yield (
                col.name,
                "nhs_number_check_digit",
                f"{known}regexp_full_match(CAST({raw} AS VARCHAR), '[0-9]{{10}}') "
                f"AND NOT nhs_check_digit_ok(CAST({raw} AS VARCHAR))",
            )
            yield col.name, "duplicate_nhs_number", "_nhs_count > 1"
            continue
        rule = {
            "date": "invalid_date",
            "boolean": "invalid_boolean",
            "integer": "invalid_integer",
            "number": "invalid_number",
            "code": "invalid_code",
            "string": "invalid_format" if col.pattern else None,
        }[col.kind]
        if rule is not None:
            yield col.name, rule, f"{raw} IS NOT NULL AND {parsed} IS NULL"
    if table.name != "patients":
        yield "nhs_number", "unknown_patient", "_raw_nhs_number IS NOT NULL AND NOT _patient_known"
        yield "nhs_number", "patient_rejected", "_patient_known AND NOT _patient_clean"


def _checks(table: Table, identifier_kind: IdentifierKind) -> list[tuple[str, str, str]]:
    """Every (column, rule, violation predicate) a row of ``table`` is checked against."""
    return list(_generic_checks(table, identifier_kind)) + [
        (r.column, r.rule, r.violation) for r in table.rules
    ]


def any_violation(table: Table, identifier_kind: IdentifierKind) -> str:
    """SQL true for a row that breaks at least one check (never NULL)."""
    return " OR ".join(
        f"coalesce(({pred}), false)" for _, _, pred in _checks(table, identifier_kind)
    )


def record_rejects(
    con: duckdb.DuckDBPyConnection, table: Table, identifier_kind: IdentifierKind
) -> None:
    """Every (row, column, rule) that is broken goes to _rejects. Only the rows marked
    ``_bad`` build the list of what they break (building a list for each of 50 million
    clean rows cost more than the checks)."""
    cases = ", ".join(
        f"CASE WHEN coalesce(({pred}), false) THEN '{col}|{rule}' END"
        for col, rule, pred in _checks(table, identifier_kind)
    )
    con.execute(
        f"INSERT INTO _rejects SELECT '{table.name}', _row, split_part(v, '|', 1), "
        f"split_part(v, '|', 2) FROM (SELECT _row, unnest(list_filter([{cases}], "
        f"lambda x: x IS NOT NULL)) AS v FROM _bad_{table.name})"
    )


def create_check_digit_macro(con: duckdb.DuckDBPyConnection) -> None:
    # Modulus 11 (see riskstrat.nhs_number): weights 10..2; 11 -> 0; 10 -> invalid, which can
    # never equal a single digit, so the equality below rejects it.
    terms = " + ".join(f"TRY_CAST(substr(n, {i + 1}, 1) AS INTEGER) * {10 - i}" for i in range(9))
    con.execute(
        "CREATE OR REPLACE TEMP MACRO nhs_check_digit_ok(n) AS "
        f"(11 - ({terms}) % 11) % 11 = TRY_CAST(substr(n, 10, 1) AS INTEGER)"
    )


def count_rejects(con: duckdb.DuckDBPyConnection) -> tuple[list[RuleCount], dict[str, int]]:
    rule_rows = con.execute(
        "SELECT table_name, column_name, rule, count(DISTINCT row_number) FROM _rejects "
        "GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3"
    ).fetchall()
    per_table = dict(
        con.execute(
            "SELECT table_name, count(DISTINCT row_number) FROM _rejects GROUP BY 1"
        ).fetchall()
    )
    counts = [RuleCount(str(t), str(c), str(r), int(n)) for t, c, r, n in rule_rows]
    return counts, {t: int(per_table.get(t, 0)) for t in TABLE_ORDER}


def top_rule(counts: list[RuleCount], table: str) -> str:
    for c in counts:
        if c.table == table:
            return f"{c.column} {c.rule} ({c.rows:,} rows)"
    return "none"


def write_rejects(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Write the rejects CSV via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    messages = {rule: msg for rule, msg in GENERIC_RULES.items()}
    for t in TABLES.values():
        messages.update({r.rule: r.message for r in t.rules})
    con.execute("CREATE OR REPLACE TEMP TABLE _rule_messages (rule VARCHAR, message VARCHAR)")
    con.executemany("INSERT INTO _rule_messages VALUES (?, ?)", list(messages.items()))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        con.execute(
            'COPY (SELECT r.table_name AS "table", r.row_number, r.column_name AS "column", '
            "r.rule, m.message FROM _rejects r LEFT JOIN _rule_messages m USING (rule) "
            "ORDER BY array_position(?, r.table_name), r.row_number, r.column_name, r.rule) "
            f"TO '{sql_path(Path(tmp))}' (FORMAT csv, HEADER)",
            [list(TABLE_ORDER)],
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
