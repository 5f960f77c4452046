"""DuckDB reading an extract's files as found: each table's ``_raw_<table>`` (``_row``, the
file's row number from 1, and the contract's columns, uncast), for the rules and the load
(``riskstrat.data.extract``). A Parquet file is a view over the file; a CSV is read as text
into a table, its malformed records rejected as they are read and every record reconciled
with the file's scan (``riskstrat.data.files``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from riskstrat.data.contract import Table
from riskstrat.data.duck import ident, quote, sql_path
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan
from riskstrat.data.manifest import FileFormat, locate_files
from riskstrat.data.structure import reconcile_rows, redact_duckdb


@contextmanager
def reading(path: Path, fmt: FileFormat) -> Iterator[None]:
    """A DuckDB error while a Parquet file is read names the file (a corrupt or truncated
    file fails here, not at the folder check)."""
    if fmt != "parquet":
        yield
        return
    try:
        yield
    except duckdb.Error as exc:
        raise ExtractError(
            f"cannot be read as Parquet ({redact_duckdb(exc)})", file=str(path)
        ) from None


def read_raw(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    path: Path,
    fmt: FileFormat,
    present: dict[str, str],
    scan: CsvScan | None = None,
) -> int:
    """Create ``_raw_<table>``: ``_row`` and the file's contract columns as found. Returns
    the count of malformed CSV records (rejected as they are read)."""
    name = table.name
    known = [c.name for c in table.columns if c.name in present]
    if fmt == "csv":
        assert scan is not None
        return _read_csv(con, name, path, list(present), known, scan)
    # A view, not a copy: a 50-million-row raw copy never has to fit in DuckDB's memory
    # limit. (The file is read twice, for the rejects and for the clean rows, which costs
    # less than writing a parsed copy out and reading it back.)
    cols = ", ".join(ident(c) for c in known)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _raw_{name} AS SELECT file_row_number + 1 AS _row, "
        f"{cols} FROM read_parquet('{sql_path(path)}', file_row_number = true)"
    )
    return 0


def drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop the temporary table or view ``name`` if there is one."""
    kinds = con.execute(
        "SELECT 'VIEW' FROM duckdb_views() WHERE view_name = ? AND temporary "
        "UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE table_name = ? AND temporary",
        [name, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {kind} IF EXISTS {name}")


#: DuckDB's CSV errors that a row-level reject cannot describe: the file's structure is broken
#: and later rows may be lost with it. (``scan_csv`` finds these first; this is the backstop.)
_FATAL_CSV_ERRORS = (
    "UNQUOTED VALUE",
    "INVALID ENCODING",
    "INVALID STATE",
    "LINE SIZE OVER MAXIMUM",
)


def _read_csv(
    con: duckdb.DuckDBPyConnection,
    name: str,
    path: Path,
    header: list[str],
    known: list[str],
    scan: CsvScan,
) -> int:
    """Read a CSV as text with DuckDB; rows with the wrong number of fields become rejects.
    Returns their count, after checking that every record of the file was either read or
    rejected (``scan`` counted them)."""
    columns = "{" + ", ".join(f"'{quote(c)}': 'VARCHAR'" for c in header) + "}"
    select = ", ".join(f"NULLIF({ident(c)}, '') AS {ident(c)}" for c in known)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _csv_{name} AS SELECT {select} FROM read_csv(?, "
            f"header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
            f"columns = {columns}, store_rejects = true, rejects_table = '_csv_errors_{name}', "
            f"rejects_scan = '_csv_scans_{name}', strict_mode = true, encoding = 'utf-8')",
            [str(path)],
        )
    except duckdb.Error as exc:
        raise ExtractError(
            f"cannot be read as CSV ({redact_duckdb(exc)})", file=str(path)
        ) from None
    fatal = con.execute(
        f"SELECT min(line), any_value(error_type) FROM _csv_errors_{name} "
        "WHERE error_type IN (SELECT unnest(?))",
        [list(_FATAL_CSV_ERRORS)],
    ).fetchall()[0]
    if fatal[0] is not None:
        raise ExtractError(
            f"cannot be read as CSV ({str(fatal[1]).lower()})", file=str(path), line=int(fatal[0])
        )
    _reconcile(con, name, path, scan)
    # DuckDB reports a bad record by its record number counting the header as 1.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _csv_bad_{name} AS "
        f"SELECT DISTINCT CAST(line - 1 AS BIGINT) AS rec FROM _csv_errors_{name}"
    )
    malformed = int(con.execute(f"SELECT count(*) FROM _csv_bad_{name}").fetchall()[0][0])
    if malformed == 0:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _raw_{name} AS "
            f"SELECT rowid + 1 AS _row, * FROM _csv_{name}"
        )
    else:
        # The k-th good row (1-based) is record k + #{bad records r_j with r_j - j < k}.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _csv_gap_{name} AS "
            f"SELECT rec - row_number() OVER (ORDER BY rec) AS good_before FROM _csv_bad_{name}"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _raw_{name} AS "
            f"SELECT g._k + (SELECT count(*) FROM _csv_gap_{name} WHERE good_before < g._k) "
            f"AS _row, g.* EXCLUDE (_k) FROM (SELECT rowid + 1 AS _k, * FROM _csv_{name}) g "
            f"ORDER BY _row"
        )
        con.execute(
            f"INSERT INTO _rejects SELECT '{name}', rec, '*', 'malformed_row' FROM _csv_bad_{name}"
        )
    for suffix in ("_csv_", "_csv_bad_", "_csv_gap_", "_csv_errors_", "_csv_scans_"):
        con.execute(f"DROP TABLE IF EXISTS {suffix}{name}")
    return malformed


def _reconcile(con: duckdb.DuckDBPyConnection, name: str, path: Path, scan: CsvScan) -> None:
    """Every record the scan found must have been read or rejected by DuckDB; blank lines,
    which it skips, are counted only when the totals differ."""
    read = con.execute(
        f"SELECT (SELECT count(*) FROM _csv_{name}) + "
        f"(SELECT count(DISTINCT line) FROM _csv_errors_{name})"
    ).fetchall()[0][0]
    reconcile_rows(int(read), path, scan)


def copy_as_found(extract_dir: Path, con: duckdb.DuckDBPyConnection) -> bool:
    """Copy each of an extract's Parquet files, as it is (no rules, no types), into a table of
    ``con`` named after it, then checkpoint: what DuckDB itself takes to write the files'
    rows, the floor under building the validated tables (``riskstrat bench`` times it beside
    them). False, with nothing copied, for an extract with a CSV file, whose columns DuckDB
    would first have to type."""
    files = locate_files(extract_dir)
    if any(fmt != "parquet" for _, fmt in files.values()):
        return False
    for name, (path, _) in files.items():
        con.execute(
            f"CREATE TABLE {ident(name)} AS SELECT * FROM read_parquet('{sql_path(Path(path))}')"
        )
    con.execute("CHECKPOINT")
    return True
