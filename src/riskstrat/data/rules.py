"""The contract's rules as SQL: how each column's raw text is parsed and checked, how rows that
break a rule are recorded, and the rejects file that lists them.

The SQL is written once, in DuckDB's dialect, and is portable: DuckDB runs it as written
(``riskstrat.data.extract``) and Spark runs ``riskstrat.engines.dialect.to_spark`` of the same
text (``riskstrat.data.spark_extract``). So it uses no DuckDB macro, ``unnest`` or list
lambda: the check digit is an inline expression (``check_digit_sql``), and each bad row's
broken checks are one text (``broken_sql``) that each engine splits its own way. The
relations it reads are named by convention: ``_raw_<table>`` (``_row`` and the source
columns), ``_parsed_<table>``, ``_bad_<table>``, ``_clean_<table>`` and the clean
``patients``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import duckdb
import pandas as pd

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
#: The table rejects are collected in before they are counted and written.
REJECTS_TABLE = (
    "CREATE OR REPLACE TEMP TABLE _rejects ("
    "table_name VARCHAR, row_number BIGINT, column_name VARCHAR, rule VARCHAR)"
)
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
            f"CASE WHEN regexp_full_match({value}, '[0-9]{{10}}') AND {check_digit_sql(value)} "
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


def _parse_rule(col: Column) -> str | None:
    """The rule a value of ``col`` breaks when it does not parse (None: every value does)."""
    return {
        "date": "invalid_date",
        "boolean": "invalid_boolean",
        "integer": "invalid_integer",
        "number": "invalid_number",
        "code": "invalid_code",
        "string": "invalid_format" if col.pattern else None,
    }.get(col.kind)


def parsed_by_type(table: Table, present: dict[str, str]) -> set[tuple[str, str]]:
    """The parse checks (column, rule) no row of the file can break, by its column types
    alone: a value stored as a date, a boolean or a whole number is its own typed value, and
    a column of nothing but missing values (source type ``NULL``) has no value to parse."""
    unbroken: set[tuple[str, str]] = set()
    for col in table.columns:
        source, rule = present.get(col.name), _parse_rule(col)
        if source is None or rule is None or col.kind == "nhs_number":
            continue
        if source == "NULL" or (source != "VARCHAR" and col.kind in ("date", "boolean", "integer")):
            unbroken.add((col.name, rule))
    return unbroken


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
                f"AND NOT {check_digit_sql(f'CAST({raw} AS VARCHAR)')}",
            )
            yield col.name, "duplicate_nhs_number", "_nhs_count > 1"
            continue
        rule = _parse_rule(col)
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


def any_violation(
    table: Table,
    identifier_kind: IdentifierKind,
    *,
    unbroken: Collection[tuple[str, str]] = (),
) -> str:
    """SQL true for a row that breaks at least one check (never NULL), leaving out the
    checks (column, rule) known to be ``unbroken`` by every row (``value_checks``)."""
    preds = [
        f"coalesce(({pred}), false)"
        for col, rule, pred in _checks(table, identifier_kind)
        if (col, rule) not in unbroken
    ]
    return " OR ".join(preds) if preds else "false"


def value_checks(
    table: Table, identifier_kind: IdentifierKind, column: str
) -> list[tuple[str, str, str]]:
    """The checks of ``table`` that read ``column`` alone (its text, its typed value and the
    extract date): each is a function of the column's value, so a column with few distinct
    values can be checked once per value (``broken_values_sql``) instead of once per row."""
    own = {column, "_raw_" + column}
    return [
        (col, rule, pred)
        for col, rule, pred in _checks(table, identifier_kind)
        if (names := names_read(pred)) is not None
        and names & own
        and names <= own | {"extract_date"}
    ]


@lru_cache(maxsize=512)
def names_read(predicate: str) -> frozenset[str] | None:
    """The column names a predicate reads (None if it cannot be parsed)."""
    import sqlglot

    try:
        tree = sqlglot.parse_one(predicate, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    return frozenset(c.name for c in tree.find_all(sqlglot.exp.Column))


def broken_sql(table: Table, identifier_kind: IdentifierKind) -> str:
    """SQL listing each row of ``_bad_<table>`` (``_row``) with the checks it breaks,
    ``broken``: ``column|rule`` items joined by commas (``split_broken`` reads them). Only the
    rows marked ``_bad`` (usually few) are read, so the checks run a second time on those
    alone (building a list for each of 50 million clean rows cost more than the checks)."""
    cases = ", ".join(
        f"CASE WHEN coalesce(({pred}), false) THEN '{col}|{rule}' END"
        for col, rule, pred in _checks(table, identifier_kind)
    )
    return f"SELECT _row, concat_ws(',', {cases}) AS broken FROM _bad_{table.name}"


def record_rejects(
    con: duckdb.DuckDBPyConnection, table: Table, identifier_kind: IdentifierKind
) -> None:
    """Every (row, column, rule) of ``_bad_<table>`` that is broken goes to _rejects."""
    con.execute(
        f"INSERT INTO _rejects SELECT '{table.name}', _row, split_part(v, '|', 1), "
        f"split_part(v, '|', 2) FROM (SELECT _row, unnest(string_split(broken, ',')) AS v "
        f"FROM ({broken_sql(table, identifier_kind)}))"
    )


def split_broken(table: str, rows: list[tuple[int, str]]) -> pd.DataFrame:
    """``broken_sql``'s rows, one reject a row (the columns of ``_rejects``)."""
    items = [(int(row), *item.split("|", 1)) for row, broken in rows for item in broken.split(",")]
    return pd.DataFrame(
        {
            "table_name": pd.Series([table] * len(items), dtype=object),
            "row_number": pd.Series([i[0] for i in items], dtype="int64"),
            "column_name": pd.Series([i[1] for i in items], dtype=object),
            "rule": pd.Series([i[2] for i in items], dtype=object),
        }
    )


def check_digit_sql(value: str) -> str:
    """SQL true when the 10-digit text ``value`` has a valid Modulus 11 check digit (see
    riskstrat.nhs_number): weights 10..2; 11 -> 0; 10 -> invalid, which can never equal a
    single digit, so the equality rejects it. NULL for NULL; callers test the 10-digit shape
    first."""
    terms = " + ".join(
        f"TRY_CAST(substr({value}, {i + 1}, 1) AS INTEGER) * {10 - i}" for i in range(9)
    )
    return f"((11 - ({terms}) % 11) % 11 = TRY_CAST(substr({value}, 10, 1) AS INTEGER))"


def parsed_sql(
    table: Table,
    present: dict[str, str],
    identifier_kind: IdentifierKind,
    extract_date: date,
    *,
    as_found: Mapping[str, str] | None = None,
    typed: Mapping[str, str] | None = None,
    joins: str = "",
    patient_lookup: str | None = None,
    unbroken: Collection[tuple[str, str]] = (),
) -> str:
    """SQL for ``_parsed_<table>``: each row of ``_raw_<table>`` with its raw values, typed
    values, the context rules need and ``_bad`` (the row breaks at least one check).
    ``present`` is {column: source type} of the file's columns.

    DuckDB's validation passes what it has learnt from the file's distinct values
    (``values_sql``): a column's value as found as ``as_found`` SQL in place of
    ``raw_expr``, its typed value as ``typed`` SQL (over ``r`` and ``joins``) in place of
    ``parsed_expr``, and the checks no row breaks (``unbroken``, left out of ``_bad``); and
    ``patient_lookup``, a relation of the patients as read (``PATIENT_LOOKUP_SQL``), joined
    once where the default joins the patients as read and as accepted. Without them the SQL
    is the portable text Spark runs."""
    name = table.name
    as_found = as_found or {}
    typed = typed or {}
    lookup = patient_lookup is not None
    select = ["r._row"]
    for col in table.columns:
        raw = f"r.{ident(col.name)}" if col.name in present else "CAST(NULL AS VARCHAR)"
        source_type = present.get(col.name, "VARCHAR")
        found = as_found.get(col.name) or raw_expr(raw, source_type)
        select.append(f"{found} AS {ident('_raw_' + col.name)}")
        parsed = typed.get(col.name) or parsed_expr(col, raw, source_type, identifier_kind)
        if name != "patients" and col.name == "nhs_number" and col.name in present:
            # A number equal to an accepted patient's has passed the same checks there; only
            # the rest (unknown, malformed) are checked digit by digit, which for tens of
            # millions of event rows was most of the validation time.
            if lookup:
                parsed = f"CASE WHEN pl.clean THEN pl.nhs_number ELSE {parsed} END"
            else:
                parsed = f"CASE WHEN pc.nhs_number IS NOT NULL THEN pc.nhs_number ELSE {parsed} END"
        select.append(f"{parsed} AS {ident(col.name)}")
    select.append(f"DATE '{extract_date.isoformat()}' AS extract_date")
    if name == "patients":
        nhs = "NULLIF(r.nhs_number, '')"
        select.append(
            f"CASE WHEN {nhs} IS NULL THEN 1 ELSE count(*) OVER (PARTITION BY {nhs}) END "
            "AS _nhs_count"
        )
    elif lookup:
        # One join: each patient as read, whether accepted, and the accepted date of birth.
        select.append("pl.nhs_number IS NOT NULL AS _patient_known")
        select.append("coalesce(pl.clean, false) AS _patient_clean")
        select.append("pl.date_of_birth AS patient_date_of_birth")
        nhs = "r.nhs_number" if "nhs_number" in present else "NULL"
        joins += f" LEFT JOIN {patient_lookup} pl ON pl.nhs_number = {nhs}"
    else:
        # Patients as read (any row) and as accepted, to tell unknown from rejected patients.
        select.append("pk.nhs_number IS NOT NULL AS _patient_known")
        select.append("pc.nhs_number IS NOT NULL AS _patient_clean")
        select.append("pc.date_of_birth AS patient_date_of_birth")
        nhs = "r.nhs_number" if "nhs_number" in present else "NULL"
        joins += (
            f" LEFT JOIN (SELECT DISTINCT _raw_nhs_number AS nhs_number FROM _parsed_patients) pk "
            f"ON pk.nhs_number = {nhs}"
            f" LEFT JOIN patients pc ON pc.nhs_number = {nhs}"
        )
    violation = any_violation(table, identifier_kind, unbroken=unbroken)
    return (
        f"SELECT *, ({violation}) AS _bad FROM "
        f"(SELECT {', '.join(select)} FROM _raw_{name} r{joins}) AS p"
    )


#: The patients as read, one row per NHS number: whether that patient was accepted, and the
#: accepted date of birth (``parsed_sql``'s ``patient_lookup``). A number held by an accepted
#: patient is held by no other row (duplicates are all rejected), so each key has at most one
#: accepted row.
PATIENT_LOOKUP_SQL = (
    "SELECT _raw_nhs_number AS nhs_number, bool_or(NOT _bad) AS clean, "
    "any_value(date_of_birth) FILTER (WHERE NOT _bad) AS date_of_birth "
    "FROM _parsed_patients WHERE _raw_nhs_number IS NOT NULL GROUP BY 1"
)


def values_sql(
    col: Column, relation: str, source_type: str, identifier_kind: IdentifierKind
) -> str:
    """SQL for the distinct values of a column of ``relation`` as found (``raw``, missing
    included) with their typed value (``typed``, NULL where the value does not parse)."""
    typed = parsed_expr(col, "v", source_type, identifier_kind)
    return (
        f"SELECT v AS raw, {typed} AS typed FROM "
        f"(SELECT DISTINCT {ident(col.name)} AS v FROM {relation})"
    )


def unparsed_values_sql(relation: str, source_type: str) -> str:
    """SQL counting the values of a ``values_sql`` relation that do not parse."""
    return (
        f"SELECT count(*) FROM {relation} "
        f"WHERE {raw_expr('raw', source_type)} IS NOT NULL AND typed IS NULL"
    )


def broken_values_sql(
    col: Column,
    source_type: str,
    checks: list[tuple[str, str, str]],
    relation: str,
    extract_date: date,
) -> str:
    """SQL for one row: for each of ``checks`` (``value_checks`` of ``col``), whether any
    value of the ``values_sql`` relation breaks it."""
    flags = ", ".join(
        f"coalesce(bool_or(coalesce(({pred}), false)), false)" for _, _, pred in checks
    )
    return (
        f"SELECT {flags} FROM (SELECT {raw_expr('raw', source_type)} AS "
        f"{ident('_raw_' + col.name)}, typed AS {ident(col.name)}, "
        f"DATE '{extract_date.isoformat()}' AS extract_date FROM {relation}) AS v"
    )


def clean_sql(table: Table, present: dict[str, str]) -> str:
    """SQL for ``_clean_<table>``: the typed values of ``_raw_<table>`` by a shorter road than
    ``parsed_sql``, right for the rows that break no check (and only those)."""
    clean = ", ".join(
        f"{clean_expr(col, f'r.{ident(col.name)}', present[col.name])} AS {ident(col.name)}"
        if col.name in present
        else f"CAST(NULL AS {duck_type(col)}) AS {ident(col.name)}"
        for col in table.columns
    )
    return f"SELECT r._row, {clean} FROM _raw_{table.name} r"


def clean_rows_sql(table: Table, *, any_bad: bool) -> str:
    """SQL for the clean table: ``_clean_<table>`` less the rows of ``_bad_<table>``, told apart
    by row number, so the checks are not evaluated again."""
    name = table.name
    cols = ", ".join(ident(c.name) for c in table.columns)
    where = f" WHERE _row NOT IN (SELECT _row FROM _bad_{name})" if any_bad else ""
    return f"SELECT {cols} FROM _clean_{name}{where}"


def load_rejects(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    """Create ``_rejects`` in ``con`` holding ``rows`` (columns as ``REJECTS_TABLE``): rejects
    found by another engine, counted and written by ``count_rejects`` and ``write_rejects``
    exactly as DuckDB's own."""
    con.execute(REJECTS_TABLE)
    if len(rows):
        con.register("_rejects_found", rows)
        try:
            con.execute(
                "INSERT INTO _rejects SELECT CAST(table_name AS VARCHAR), "
                "CAST(row_number AS BIGINT), CAST(column_name AS VARCHAR), CAST(rule AS VARCHAR) "
                "FROM _rejects_found"
            )
        finally:
            con.unregister("_rejects_found")


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
