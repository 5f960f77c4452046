"""Read and validate an extract through DuckDB.

The only module that reads extract files. ``validate_extract`` checks the folder against the
data contract (``riskstrat.data.contract``) and returns an ``Extract``: a DuckDB database holding
the clean, typed tables under their contract names (in memory, or in a scratch file that
closing the extract deletes, see ``scratch_database``). Rows that break a rule
are left out and listed in a rejects file (table, row number, column, rule); the source
files are only ever read.

Row numbers count data rows from 1: in a CSV the first row after the header is row 1; in
Parquet it is the file's first row.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from riskstrat.data.contract import (
    GENERIC_RULES,
    IDENTIFIER_KINDS,
    PSEUDONYM_PATTERN,
    SUPPORTED_CONTRACT_VERSIONS,
    TABLE_ORDER,
    TABLES,
    Column,
    IdentifierKind,
    Table,
)
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan, check_plain_file, scan_csv

__all__ = ["Extract", "ExtractError", "Manifest", "TooManyRejectsError", "validate_extract"]

FileFormat = Literal["csv", "parquet"]
REJECTS_COLUMNS = ("table", "row_number", "column", "rule", "message")
_NUMBER_PATTERN = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Anything that looks like an NHS number (or other long digit run) is removed from messages
# that come from DuckDB, because its CSV errors quote the offending line.
_DIGIT_RUN = re.compile(r"\d[\d \-]{7,}\d")


class TooManyRejectsError(ExtractError):
    """More rows broke the rules than the configured share allows (rejects file written)."""

    def __init__(self, message: str, *, file: str, summary: ValidationSummary):
        super().__init__(message, file=file)
        self.summary = summary


@dataclass(frozen=True)
class Manifest:
    contract_version: int
    extract_date: date
    source: str | None
    #: What the identifier column holds: NHS numbers, or pseudonyms (contract version 2).
    identifier_kind: IdentifierKind = "nhs_number"
    #: Data rows per table as the writer counted them, checked when present (version 2).
    row_counts: dict[str, int] = field(default_factory=dict)
    #: Where the extract came from (free JSON, e.g. an OMOP import's codelist versions).
    provenance: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleCount:
    table: str
    column: str
    rule: str
    rows: int


@dataclass
class ValidationSummary:
    """What validation found: row counts per table and reject counts per table and rule."""

    extract_dir: Path
    manifest: Manifest
    files: dict[str, str]
    rows_read: dict[str, int]
    rows_rejected: dict[str, int]
    rule_counts: list[RuleCount]
    warnings: list[str] = field(default_factory=list)
    rejects_path: Path | None = None

    @property
    def rows_accepted(self) -> dict[str, int]:
        return {t: self.rows_read[t] - self.rows_rejected[t] for t in self.rows_read}

    def reject_share(self, table: str) -> float:
        read = self.rows_read[table]
        return self.rows_rejected[table] / read if read else 0.0

    def as_dict(self) -> dict[str, object]:
        """Counts only (no identifiers), for logs and MLflow."""
        return {
            "extract_date": self.manifest.extract_date.isoformat(),
            "rows_read": dict(self.rows_read),
            "rows_rejected": dict(self.rows_rejected),
            "rejects_by_rule": [
                {"table": r.table, "column": r.column, "rule": r.rule, "rows": r.rows}
                for r in self.rule_counts
            ],
            "warnings": list(self.warnings),
        }


@dataclass
class Extract:
    """A validated extract: clean, typed contract tables in a DuckDB connection."""

    con: duckdb.DuckDBPyConnection
    summary: ValidationSummary
    #: The scratch database file the tables are kept in, deleted on close (None: in memory).
    database: Path | None = None

    @property
    def extract_date(self) -> date:
        return self.summary.manifest.extract_date

    def close(self) -> None:
        self.con.close()
        if self.database is not None:
            remove_database(self.database)

    def __enter__(self) -> Extract:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(extract_dir: Path) -> Manifest:
    """Read and check ``manifest.json``.

    Raises:
        ExtractError: the manifest is missing, not JSON, or breaks the contract.
    """
    path = extract_dir / "manifest.json"
    if not os.path.lexists(path):
        raise ExtractError("manifest is missing", file=str(path))
    check_plain_file(extract_dir, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExtractError(
            f"manifest is not valid JSON ({type(exc).__name__})", file=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ExtractError("manifest must be a JSON object", file=str(path))
    version = data.get("contract_version")
    if version is None:
        raise ExtractError("contract_version is missing", file=str(path), column="contract_version")
    if isinstance(version, bool) or version not in SUPPORTED_CONTRACT_VERSIONS:
        raise ExtractError(
            "contract_version must be " + " or ".join(str(v) for v in SUPPORTED_CONTRACT_VERSIONS),
            file=str(path),
            column="contract_version",
        )
    raw_date = data.get("extract_date")
    if raw_date is None:
        raise ExtractError("extract_date is missing", file=str(path), column="extract_date")
    if not isinstance(raw_date, str) or not _ISO_DATE.fullmatch(raw_date):
        raise ExtractError(
            "extract_date must be an ISO 8601 date (YYYY-MM-DD)",
            file=str(path),
            column="extract_date",
        )
    try:
        extract_date = date.fromisoformat(raw_date)
    except ValueError:
        raise ExtractError(
            "extract_date is not a real calendar date", file=str(path), column="extract_date"
        ) from None
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise ExtractError("source must be text", file=str(path), column="source")
    if version == 1:
        for key in _VERSION_2_KEYS:
            if key in data:
                raise ExtractError(f"{key} needs contract_version 2", file=str(path), column=key)
    kind = data.get("identifier_kind", "nhs_number")
    if kind not in IDENTIFIER_KINDS:
        raise ExtractError(
            "identifier_kind must be " + " or ".join(IDENTIFIER_KINDS),
            file=str(path),
            column="identifier_kind",
        )
    counts = data.get("row_counts", {})
    if not isinstance(counts, dict) or any(
        t not in TABLES or isinstance(n, bool) or not isinstance(n, int) or n < 0
        for t, n in counts.items()
    ):
        raise ExtractError(
            "row_counts must map contract table names to whole numbers of rows",
            file=str(path),
            column="row_counts",
        )
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise ExtractError("provenance must be a JSON object", file=str(path), column="provenance")
    return Manifest(
        contract_version=int(version),
        extract_date=extract_date,
        source=source,
        identifier_kind=kind,
        row_counts={str(t): int(n) for t, n in counts.items()},
        provenance=provenance,
    )


_VERSION_2_KEYS = ("identifier_kind", "row_counts", "provenance")


def locate_files(extract_dir: Path) -> dict[str, tuple[Path, FileFormat]]:
    """Find each contract table's file (``name.csv`` or ``name.parquet``).

    Raises:
        ExtractError: a table with no file or with both, or a file that is not a plain file
            inside the folder (a link leading out of it, a FIFO, a device, a folder).
    """
    found: dict[str, tuple[Path, FileFormat]] = {}
    for name in TABLE_ORDER:
        csv_path, pq_path = extract_dir / f"{name}.csv", extract_dir / f"{name}.parquet"
        has_csv, has_pq = os.path.lexists(csv_path), os.path.lexists(pq_path)
        if has_csv and has_pq:
            raise ExtractError(
                f"both {csv_path.name} and {pq_path.name} exist; keep exactly one",
                file=str(csv_path),
            )
        if not (has_csv or has_pq):
            raise ExtractError(
                f"table {name} is missing (expected {name}.csv or {name}.parquet)",
                file=str(csv_path),
            )
        fmt: FileFormat = "csv" if has_csv else "parquet"
        path = csv_path if has_csv else pq_path
        check_plain_file(extract_dir, path)
        found[name] = (path, fmt)
    return found


#: Scratch databases are named ``extract-<pid>-<random>.duckdb``; the pid tells a file left
#: by a process that was killed (and so never deleted it) from one still in use.
_SCRATCH = re.compile(r"extract-([0-9]+)-[0-9a-f]{32}\.duckdb(\.wal)?")


def scratch_database(directory: Path) -> Path:
    """A new, unused path for an extract's scratch database in ``directory``.

    Kept in a file rather than in memory, the validated tables (about 2 GB at a million
    people) are blocks that DuckDB reads back when a query needs them and drops from memory
    when it does not, instead of taking its memory limit from the queries and making them
    spill. The file holds personal data like DuckDB's spill files beside it, so
    ``Extract.close`` deletes it, and files left by killed processes are deleted here.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        match = _SCRATCH.fullmatch(stale.name)
        if match and not _process_alive(int(match.group(1))):
            stale.unlink(missing_ok=True)
    return directory / f"extract-{os.getpid()}-{uuid.uuid4().hex}.duckdb"


def remove_database(path: Path) -> None:
    """Delete a scratch database and its write-ahead log."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def connect(
    *,
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_directory: Path | None = None,
    database: Path | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the settings riskstrat relies on: in memory, or in the
    ``database`` file (which must not exist yet; see ``scratch_database``)."""
    if database is not None and database.exists():
        raise FileExistsError(f"{database} exists; a scratch database must be new")
    con = duckdb.connect(":memory:" if database is None else str(database))
    con.execute("SET preserve_insertion_order = true")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        temp_directory.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{_sql_path(temp_directory)}'")
    return con


def validate_extract(
    extract_dir: Path | str,
    *,
    max_reject_share: float = 0.01,
    rejects_path: Path | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Extract:
    """Validate an extract folder and load its clean rows.

    Args:
        extract_dir: folder with ``manifest.json`` and the five tables.
        max_reject_share: stop if more than this share of any table's rows is rejected.
        rejects_path: where to write the rejects CSV (written atomically, also when empty).
            None writes nothing.
        con: DuckDB connection to load into; a fresh in-memory one by default.

    Returns:
        The validated extract. Close it (or use it as a context manager) when done.

    Raises:
        ExtractError: a missing or unreadable file, a missing required column, a bad
            manifest, or a Parquet column of the wrong type. Nothing is written.
        TooManyRejectsError: after writing the rejects file, when a table's reject share is
            above ``max_reject_share``.
    """
    root = Path(extract_dir)
    if not root.is_dir():
        raise ExtractError("extract folder does not exist", file=str(root))
    manifest = read_manifest(root)
    files = locate_files(root)
    warnings: list[str] = []
    headers: dict[str, dict[str, str]] = {}
    scans: dict[str, CsvScan] = {}
    for name, (path, fmt) in files.items():
        scan = scan_csv(path) if fmt == "csv" else None
        if scan is not None:
            scans[name] = scan
        headers[name] = _check_columns(TABLES[name], path, fmt, warnings, scan)

    own_con = con is None
    db = con if con is not None else connect()
    try:
        db.execute(
            "CREATE OR REPLACE TEMP TABLE _rejects ("
            "table_name VARCHAR, row_number BIGINT, column_name VARCHAR, rule VARCHAR)"
        )
        rows_read: dict[str, int] = {}
        _create_check_digit_macro(db)
        for name in TABLE_ORDER:
            path, fmt = files[name]
            rows_read[name] = _load_table(
                db, TABLES[name], path, fmt, headers[name], manifest, scans.get(name)
            )
            _check_row_count(manifest, name, path, rows_read[name])
        rule_counts, rows_rejected = _count_rejects(db)
        summary = ValidationSummary(
            extract_dir=root,
            manifest=manifest,
            files={n: str(p) for n, (p, _) in files.items()},
            rows_read=rows_read,
            rows_rejected=rows_rejected,
            rule_counts=rule_counts,
            warnings=warnings,
        )
        if rejects_path is not None:
            _write_rejects(db, rejects_path)
            summary.rejects_path = rejects_path
        over = [t for t in TABLE_ORDER if summary.reject_share(t) > max_reject_share]
        if over:
            detail = "; ".join(
                f"{t}: {rows_rejected[t]:,} of {rows_read[t]:,} rows rejected "
                f"({summary.reject_share(t):.1%}), most often {_top_rule(rule_counts, t)}"
                for t in over
            )
            raise TooManyRejectsError(
                f"too many rejected rows (limit {max_reject_share:.1%} of a table): {detail}"
                + (f". See {rejects_path}" if rejects_path else ""),
                file=files[over[0]][0].name,
                summary=summary,
            )
        for name in TABLE_ORDER:
            for prefix in ("_raw_", "_parsed_", "_bad_", "_clean_"):
                _drop_relation(db, prefix + name)
        # A file database's tables move from its write-ahead log into compressed blocks.
        db.execute("CHECKPOINT")
        return Extract(con=db, summary=summary)
    except BaseException:
        if own_con:
            db.close()
        raise


ORACLE_COLUMNS = ("nhs_number", "index_date", "true_risk")


def read_oracle(path: Path) -> pd.DataFrame:
    """Read a synthetic population's true risks (written by ``riskstrat generate --oracle``).

    Returns:
        Columns ``nhs_number`` (str), ``index_date`` (date) and ``true_risk`` (in [0, 1]).

    Raises:
        ExtractError: the file is missing, unreadable or not an oracle file.
    """
    if not path.is_file():
        raise ExtractError("oracle file is missing", file=str(path))
    con = duckdb.connect(":memory:")
    try:
        frame = con.execute("SELECT * FROM read_parquet(?)", [str(path)]).df()
    except duckdb.Error as exc:
        raise ExtractError(f"cannot be read as Parquet ({_redact(exc)})", file=str(path)) from None
    finally:
        con.close()
    missing = [c for c in ORACLE_COLUMNS if c not in frame.columns]
    if missing:
        raise ExtractError("not an oracle file", file=str(path), column=missing[0])
    risk = frame["true_risk"]
    if risk.isna().any() or (risk < 0).any() or (risk > 1).any():
        raise ExtractError("true_risk must be a probability", file=str(path), column="true_risk")
    frame["nhs_number"] = frame["nhs_number"].astype(str)
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame[list(ORACLE_COLUMNS)]


# --------------------------------------------------------------------------------------
# Columns and file reading


def _check_row_count(manifest: Manifest, table: str, path: Path, rows: int) -> None:
    """Where the manifest says how many rows a table has, the file must hold exactly those."""
    expected = manifest.row_counts.get(table)
    if expected is not None and expected != rows:
        raise ExtractError(
            f"the manifest's row_counts says {expected:,} rows but the file holds {rows:,} "
            "(a file cut short, or replaced after the manifest was written)",
            file=str(path),
        )


def _check_columns(
    table: Table,
    path: Path,
    fmt: FileFormat,
    warnings: list[str],
    scan: CsvScan | None = None,
) -> dict[str, str]:
    """Return {column: source type} for the file, after checking the contract's columns."""
    if scan is not None:
        present = {c: "VARCHAR" for c in scan.header}
    else:
        present = _parquet_schema(path)
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
        warnings.append(f"{path.name}: ignored unknown columns {', '.join(extra)}")
    if fmt == "parquet":
        for col in table.columns:
            if col.name in present and not _parquet_type_ok(col, present[col.name]):
                if not _column_all_null(path, col.name):
                    raise ExtractError(
                        f"Parquet type {present[col.name]} does not match the contract "
                        f"({_expected_parquet(col)})",
                        file=str(path),
                        column=col.name,
                    )
                present[col.name] = "NULL"
    return present


def _parquet_schema(path: Path) -> dict[str, str]:
    try:
        con = duckdb.connect(":memory:")
        try:
            rows = con.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                [str(path)],
            ).fetchall()
        finally:
            con.close()
    except duckdb.Error as exc:
        raise ExtractError(f"cannot be read as Parquet ({_redact(exc)})", file=str(path)) from None
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


def _column_all_null(path: Path, column: str) -> bool:
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(
            f"SELECT count({_ident(column)}) FROM read_parquet(?)", [str(path)]
        ).fetchall()
    finally:
        con.close()
    return bool(row[0][0] == 0)


def _load_table(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    path: Path,
    fmt: FileFormat,
    present: dict[str, str],
    manifest: Manifest,
    scan: CsvScan | None = None,
) -> int:
    """Load one file, record its rejects and create the clean table. Returns rows read."""
    name = table.name
    known = [c.name for c in table.columns if c.name in present]
    if fmt == "csv":
        assert scan is not None
        malformed = _read_csv(con, name, path, list(present), known, scan)
        _parse_table(con, table, fmt, present, manifest)
        _split_rows(con, table, manifest.identifier_kind)
    else:
        # A view, not a copy: a 50-million-row raw copy never has to fit in DuckDB's memory
        # limit. (The file is read twice, for the rejects and for the clean rows, which
        # costs less than writing a parsed copy out and reading it back.)
        cols = ", ".join(_ident(c) for c in known)
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW _raw_{name} AS SELECT file_row_number + 1 AS _row, "
                f"{cols} FROM read_parquet('{_sql_path(path)}', file_row_number = true)"
            )
            _parse_table(con, table, fmt, present, manifest)
            _split_rows(con, table, manifest.identifier_kind)
        except duckdb.Error as exc:
            raise ExtractError(
                f"cannot be read as Parquet ({_redact(exc)})", file=str(path)
            ) from None
        malformed = 0
    # The rows read, counted where they are cheapest to count (a Parquet file's metadata).
    count = con.execute(f"SELECT count(*) FROM _raw_{name}").fetchall()[0][0]
    # Only the clean table stays: the raw and parsed copies of a 50-million-row table would
    # otherwise hold memory until every table is loaded. Later tables check their NHS
    # numbers against the parsed patients, so that one stays until the end.
    _drop_relation(con, f"_raw_{name}")
    _drop_relation(con, f"_bad_{name}")
    _drop_relation(con, f"_clean_{name}")
    if name != "patients":
        _drop_relation(con, f"_parsed_{name}")
    return int(count) + malformed


def _split_rows(con: duckdb.DuckDBPyConnection, table: Table, kind: IdentifierKind) -> None:
    """Record the rejects of ``_parsed_<table>`` and create the clean table from the rest.

    The rows that break a check (usually few) are kept in ``_bad_<table>``, so the checks
    run once; the clean table is every other row, told apart by row number, so building it
    does not evaluate the checks again. Rows are not put back in file order: nothing
    downstream depends on the order of a table, and sorting 50 million prescriptions took
    longer than checking them.
    """
    name = table.name
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS SELECT * FROM _parsed_{name} WHERE _bad"
    )
    _record_rejects(con, table, kind)
    bad = con.execute(f"SELECT count(*) FROM _bad_{name}").fetchall()[0][0]
    clean_cols = ", ".join(_ident(c.name) for c in table.columns)
    where = f" WHERE _row NOT IN (SELECT _row FROM _bad_{name})" if bad else ""
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {clean_cols} FROM _clean_{name}{where}")


def _drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
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
    columns = "{" + ", ".join(f"'{_quote(c)}': 'VARCHAR'" for c in header) + "}"
    select = ", ".join(f"NULLIF({_ident(c)}, '') AS {_ident(c)}" for c in known)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _csv_{name} AS SELECT {select} FROM read_csv(?, "
            f"header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
            f"columns = {columns}, store_rejects = true, rejects_table = '_csv_errors_{name}', "
            f"rejects_scan = '_csv_scans_{name}', strict_mode = true, encoding = 'utf-8')",
            [str(path)],
        )
    except duckdb.Error as exc:
        raise ExtractError(f"cannot be read as CSV ({_redact(exc)})", file=str(path)) from None
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
    if read == scan.rows:
        return
    counted = scan_csv(path, count_blank=True)
    if read == counted.rows:
        return
    raise ExtractError(
        f"the CSV reader returned {read:,} rows but the file holds {counted.rows:,}; "
        "nothing was loaded (check the file's line endings and quoting)",
        file=str(path),
    )


# --------------------------------------------------------------------------------------
# Parsing and rules


def _parse_table(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    fmt: FileFormat,
    present: dict[str, str],
    manifest: Manifest,
) -> None:
    """Create ``_parsed_<table>``: raw values, typed values and the context rules need."""
    name = table.name
    select = ["r._row"]
    for col in table.columns:
        raw = f"r.{_ident(col.name)}" if col.name in present else "CAST(NULL AS VARCHAR)"
        source_type = present.get(col.name, "VARCHAR")
        select.append(f"{_raw_expr(raw, source_type)} AS {_ident('_raw_' + col.name)}")
        parsed = _parsed_expr(col, raw, source_type, manifest.identifier_kind)
        if name != "patients" and col.name == "nhs_number" and col.name in present:
            # A number equal to an accepted patient's has passed the same checks there; only
            # the rest (unknown, malformed) are checked digit by digit, which for tens of
            # millions of event rows was most of the validation time.
            parsed = f"CASE WHEN pc.nhs_number IS NOT NULL THEN pc.nhs_number ELSE {parsed} END"
        select.append(f"{parsed} AS {_ident(col.name)}")
    select.append(f"DATE '{manifest.extract_date.isoformat()}' AS extract_date")
    joins = ""
    if name == "patients":
        nhs = "NULLIF(r.nhs_number, '')"
        select.append(
            f"CASE WHEN {nhs} IS NULL THEN 1 ELSE count(*) OVER (PARTITION BY {nhs}) END "
            "AS _nhs_count"
        )
    else:
        # Patients as read (any row) and as accepted, to tell unknown from rejected patients.
        select.append("pk.nhs_number IS NOT NULL AS _patient_known")
        select.append("pc.nhs_number IS NOT NULL AS _patient_clean")
        select.append("pc.date_of_birth AS patient_date_of_birth")
        nhs = "r.nhs_number" if "nhs_number" in present else "NULL"
        joins = (
            f" LEFT JOIN (SELECT DISTINCT _raw_nhs_number AS nhs_number FROM _parsed_patients) pk "
            f"ON pk.nhs_number = {nhs}"
            f" LEFT JOIN patients pc ON pc.nhs_number = {nhs}"
        )
    # ``_bad``: the row breaks at least one check. A view for the event tables, read once
    # for its bad rows (``_split_rows``): cheaper than writing tens of millions of
    # raw-and-parsed rows out and reading them back. Patients are a table, as every later
    # table joins them.
    kind = "TABLE" if name == "patients" else "VIEW"
    violation = _any_violation(table, manifest.identifier_kind)
    con.execute(
        f"CREATE OR REPLACE TEMP {kind} _parsed_{name} AS SELECT *, ({violation}) "
        f"AS _bad FROM (SELECT {', '.join(select)} FROM _raw_{name} r{joins})"
    )
    # The same rows' typed values by a shorter road, right for the rows that break no check
    # (and only those): the clean table is built from it without the checks and joins.
    clean = ", ".join(
        f"{_clean_expr(col, f'r.{_ident(col.name)}', present[col.name])} AS {_ident(col.name)}"
        if col.name in present
        else f"CAST(NULL AS {_duck_type(col)}) AS {_ident(col.name)}"
        for col in table.columns
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _clean_{name} AS SELECT r._row, {clean} FROM _raw_{name} r"
    )


def _raw_expr(raw: str, source_type: str) -> str:
    """The value as found, with empty text treated as missing."""
    if source_type == "VARCHAR":
        return f"NULLIF({raw}, '')"
    return raw


def _parsed_expr(
    col: Column, raw: str, source_type: str, identifier_kind: IdentifierKind = "nhs_number"
) -> str:
    """SQL turning the source value into the contract type; NULL when it does not parse."""
    text = source_type == "VARCHAR"
    if source_type == "NULL":
        return f"CAST(NULL AS {_duck_type(col)})"
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


def _clean_expr(col: Column, raw: str, source_type: str) -> str:
    """``_parsed_expr`` for a value in a row that breaks no check, without the tests that
    the checks have already passed: a code, an NHS number or a patterned string that
    passed is the value itself, and text that passed its date or number pattern casts."""
    value = f"NULLIF({raw}, '')" if source_type == "VARCHAR" else raw
    if col.kind in ("date", "integer", "number") and source_type == "VARCHAR":
        return f"TRY_CAST({value} AS {_duck_type(col)})"
    if col.kind == "boolean":
        return _parsed_expr(col, raw, source_type)
    return f"CAST({value} AS {_duck_type(col)})"


def _duck_type(col: Column) -> str:
    return {"date": "DATE", "boolean": "BOOLEAN", "integer": "BIGINT", "number": "DOUBLE"}.get(
        col.kind, "VARCHAR"
    )


def _generic_checks(
    table: Table, identifier_kind: IdentifierKind
) -> Iterator[tuple[str, str, str]]:
    """(column, rule, SQL predicate) for the rules every column gets from its kind."""
    for col in table.columns:
        raw, parsed = _ident("_raw_" + col.name), _ident(col.name)
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


def _any_violation(table: Table, identifier_kind: IdentifierKind) -> str:
    """SQL true for a row that breaks at least one check (never NULL)."""
    return " OR ".join(
        f"coalesce(({pred}), false)" for _, _, pred in _checks(table, identifier_kind)
    )


def _record_rejects(
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


def _create_check_digit_macro(con: duckdb.DuckDBPyConnection) -> None:
    # Modulus 11 (see riskstrat.nhs_number): weights 10..2; 11 -> 0; 10 -> invalid, which can
    # never equal a single digit, so the equality below rejects it.
    terms = " + ".join(f"TRY_CAST(substr(n, {i + 1}, 1) AS INTEGER) * {10 - i}" for i in range(9))
    con.execute(
        "CREATE OR REPLACE TEMP MACRO nhs_check_digit_ok(n) AS "
        f"(11 - ({terms}) % 11) % 11 = TRY_CAST(substr(n, 10, 1) AS INTEGER)"
    )


def _count_rejects(con: duckdb.DuckDBPyConnection) -> tuple[list[RuleCount], dict[str, int]]:
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


def _top_rule(counts: list[RuleCount], table: str) -> str:
    for c in counts:
        if c.table == table:
            return f"{c.column} {c.rule} ({c.rows:,} rows)"
    return "none"


def _write_rejects(con: duckdb.DuckDBPyConnection, path: Path) -> None:
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
            f"TO '{_sql_path(Path(tmp))}' (FORMAT csv, HEADER)",
            [list(TABLE_ORDER)],
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------
# Small helpers


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _sql_path(path: Path) -> str:
    return _quote(str(path))


def _redact(exc: BaseException) -> str:
    """The first line of a DuckDB error with long digit runs (possible NHS numbers) removed."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _DIGIT_RUN.sub("[digits removed]", first)[:300]
