"""An extract file's columns and rows, checked before and after it is read, by either engine:
the contract's columns present (a CSV's header, a Parquet file's schema and types), the
manifest's row counts, and a CSV reader's rows reconciled with the file's scan. A Parquet file
at a URI is read through an fsspec file system (the Spark engine's ``hadoop_fs``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb

from riskstrat.data.contract import Column, Table
from riskstrat.data.duck import ident
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan, file_name, scan_csv
from riskstrat.data.manifest import FileFormat, Manifest

# Anything that looks like an NHS number (or other long digit run) is removed from messages
# that come from DuckDB, because its CSV errors quote the offending line.
_DIGIT_RUN = re.compile(r"\d[\d \-]{7,}\d")


def check_row_count(manifest: Manifest, table: str, path: Path | str, rows: int) -> None:
    """Where the manifest says how many rows a table has, the file must hold exactly those."""
    expected = manifest.row_counts.get(table)
    if expected is not None and expected != rows:
        raise ExtractError(
            f"the manifest's row_counts says {expected:,} rows but the file holds {rows:,} "
            "(a file cut short, or replaced after the manifest was written)",
            file=str(path),
        )


def check_columns(
    table: Table,
    path: Path | str,
    fmt: FileFormat,
    warnings: list[str],
    scan: CsvScan | None = None,
    fs: Any = None,
) -> dict[str, str]:
    """Return {column: source type} for the file, after checking the contract's columns
    (a Parquet file at a URI is read through the fsspec file system ``fs``)."""
    if scan is not None:
        present = {c: "VARCHAR" for c in scan.header}
    else:
        present = _parquet_schema(path, fs)
    missing = [c for c in table.required_columns if c not in present]
    if missing:
        raise ExtractError(
            "required column"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(missing)
            + " missing",
            file=str(path),
            column=missing[0],
        )
    known = {c.name for c in table.columns}
    extra = sorted(c for c in present if c not in known)
    if extra:
        warnings.append(f"{file_name(path)}: ignored unknown columns {', '.join(extra)}")
    if fmt == "parquet":
        for col in table.columns:
            if col.name in present and not _parquet_type_ok(col, present[col.name]):
                if not _column_all_null(path, col.name, fs):
                    raise ExtractError(
                        f"Parquet type {present[col.name]} does not match the contract "
                        f"({_expected_parquet(col)})",
                        file=str(path),
                        column=col.name,
                    )
                present[col.name] = "NULL"
    return present


def _parquet_connection(fs: Any) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads Parquet at a URI through ``fs``, where given."""
    con = duckdb.connect(":memory:")
    if fs is not None:
        con.register_filesystem(fs)
    return con


def _parquet_schema(path: Path | str, fs: Any = None) -> dict[str, str]:
    try:
        con = _parquet_connection(fs)
        try:
            rows = con.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                [str(path)],
            ).fetchall()
        finally:
            con.close()
    except duckdb.Error as exc:
        raise ExtractError(
            f"cannot be read as Parquet ({redact_duckdb(exc)})", file=str(path)
        ) from None
    return {str(name): str(kind) for name, kind in rows}


_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
              "UINTEGER", "UBIGINT", "HUGEINT"}  # fmt: skip
_NUM_TYPES = _INT_TYPES | {"FLOAT", "DOUBLE"}


def _parquet_type_ok(col: Column, source_type: str) -> bool:
    if col.kind == "date":
        return source_type == "DATE"
    if col.kind == "boolean":
        return source_type == "BOOLEAN"
    if col.kind == "integer":
        return source_type in _INT_TYPES
    if col.kind == "number":
        return source_type in _NUM_TYPES or source_type.startswith("DECIMAL")
    return source_type == "VARCHAR"


def _expected_parquet(col: Column) -> str:
    return {
        "date": "date32",
        "boolean": "bool",
        "integer": "an integer type",
        "number": "a numeric type",
    }.get(col.kind, "string")


def _column_all_null(path: Path | str, column: str, fs: Any = None) -> bool:
    con = _parquet_connection(fs)
    try:
        row = con.execute(
            f"SELECT count({ident(column)}) FROM read_parquet(?)", [str(path)]
        ).fetchall()
    finally:
        con.close()
    return bool(row[0][0] == 0)


def reconcile_rows(read: int, path: Path | str, scan: CsvScan) -> None:
    """Raise unless ``read`` (records read plus records rejected by a CSV reader) is every
    record of the file: counting blank lines as records (which readers skip) or not."""
    if read == scan.rows:
        return
    if scan.blank_lines is not None:  # counted by the scan itself (scan_csv_at)
        without_blank = scan.rows - scan.blank_lines
    else:
        without_blank = scan_csv(Path(path), count_blank=True).rows
    if read == without_blank:
        return
    raise ExtractError(
        f"the CSV reader returned {read:,} rows but the file holds {without_blank:,}; "
        "nothing was loaded (check the file's line endings and quoting)",
        file=str(path),
    )


def redact_duckdb(exc: BaseException) -> str:
    """The first line of a DuckDB error with long digit runs (possible NHS numbers) removed."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _DIGIT_RUN.sub("[digits removed]", first)[:300]
