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

import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from riskstrat.data.contract import (
    TABLE_ORDER,
    TABLES,
    IdentifierKind,
    Table,
)
from riskstrat.data.duck import (
    connect,
    ident,
    quote,
    remove_database,
    scratch_database,
    sql_path,
)
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan, scan_csv, scan_csv_at
from riskstrat.data.manifest import FileFormat, Manifest, locate_files, read_manifest
from riskstrat.data.rules import (
    REJECTS_TABLE,
    RuleCount,
    clean_rows_sql,
    clean_sql,
    count_rejects,
    parsed_sql,
    record_rejects,
    top_rule,
    write_rejects,
)
from riskstrat.data.structure import (
    check_columns,
    check_row_count,
    reconcile_rows,
    redact_duckdb,
)
from riskstrat.engines.hadoop_fs import is_uri
from riskstrat.errors import UsageError

# The folder's manifest and files (manifest.py), DuckDB connections and scratch files
# (duck.py) and the rules as SQL (rules.py) live beside this module; their public names stay
# importable from here.
__all__ = [
    "Extract",
    "ExtractError",
    "Manifest",
    "RuleCount",
    "TooManyRejectsError",
    "ValidationSummary",
    "connect",
    "locate_files",
    "read_manifest",
    "read_oracle",
    "remove_database",
    "scratch_database",
    "validate_extract",
]


class TooManyRejectsError(ExtractError):
    """More rows broke the rules than the configured share allows (rejects file written)."""

    def __init__(self, message: str, *, file: str, summary: ValidationSummary):
        super().__init__(
            message,
            file=file,
            hint="the rejects file lists each rejected row with the rule it broke "
            "(docs/data-contract.md explains each rule): fix the source, or allow more with "
            "--max-reject-share",
        )
        self.summary = summary


@dataclass
class ValidationSummary:
    """What validation found: row counts per table and reject counts per table and rule."""

    #: A local folder, or a URI (read by the Spark engine).
    extract_dir: Path | str
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
    if is_uri(extract_dir):
        raise UsageError(
            f"{extract_dir} is a URI: extracts in an object store are read by the Spark engine",
            hint="pass --engine spark (or set RISKSTRAT_ENGINE=spark), or copy the extract "
            "to a local folder",
        )
    folder = read_structure(extract_dir)
    manifest, files, headers, scans = folder.manifest, folder.files, folder.headers, folder.scans
    own_con = con is None
    db = con if con is not None else connect()
    try:
        db.execute(REJECTS_TABLE)
        rows_read: dict[str, int] = {}
        for name in TABLE_ORDER:
            path, fmt = Path(files[name][0]), files[name][1]
            rows_read[name] = _load_table(
                db, TABLES[name], path, fmt, headers[name], manifest, scans.get(name)
            )
            check_row_count(manifest, name, path, rows_read[name])
        rule_counts, rows_rejected = count_rejects(db)
        summary = folder.summary(rows_read, rows_rejected, rule_counts)
        if rejects_path is not None:
            write_rejects(db, rejects_path)
            summary.rejects_path = rejects_path
        check_reject_share(summary, max_reject_share)
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


@dataclass
class ExtractFolder:
    """An extract folder's structure, checked before any row is read (by either engine)."""

    #: A local folder, or a URI (read by the Spark engine).
    root: Path | str
    manifest: Manifest
    files: dict[str, tuple[Path | str, FileFormat]]
    #: {table: {column: source type}} (``check_columns``).
    headers: dict[str, dict[str, str]]
    scans: dict[str, CsvScan]
    warnings: list[str]

    def summary(
        self,
        rows_read: dict[str, int],
        rows_rejected: dict[str, int],
        rule_counts: list[RuleCount],
    ) -> ValidationSummary:
        return ValidationSummary(
            extract_dir=self.root,
            manifest=self.manifest,
            files={n: str(p) for n, (p, _) in self.files.items()},
            rows_read=rows_read,
            rows_rejected=rows_rejected,
            rule_counts=rule_counts,
            warnings=self.warnings,
        )


def read_structure(
    extract_dir: Path | str, fs: Any = None, scratch: Path | None = None
) -> ExtractFolder:
    """Check the folder, its manifest, its files and their columns (CSVs are scanned).

    ``fs``: an fsspec file system to read ``extract_dir``, a URI, through (the Spark
    engine's ``riskstrat.engines.hadoop_fs``); its CSVs are copied to ``scratch`` one at a
    time to be scanned (``scan_csv_at``). Without it, ``extract_dir`` is a local folder.

    Raises:
        ExtractError: as ``validate_extract`` does for a structural problem.
    """
    root: Path | str
    if fs is not None:
        root = str(extract_dir).rstrip("/")
        exists = bool(fs.isdir(root))
    else:
        root = Path(extract_dir)
        exists = root.is_dir()
    if not exists:
        raise ExtractError(
            "extract folder does not exist",
            file=str(root),
            hint="check the path: an extract is a folder holding manifest.json and one file "
            "per table (docs/data-contract.md)",
        )
    manifest = read_manifest(root, fs)
    files = locate_files(root, fs)
    warnings: list[str] = []
    headers: dict[str, dict[str, str]] = {}
    scans: dict[str, CsvScan] = {}
    for name, (path, fmt) in files.items():
        scan = None
        if fmt == "csv":
            if fs is not None:
                scan = scan_csv_at(fs, str(path), scratch or Path(tempfile.gettempdir()))
            else:
                scan = scan_csv(Path(path))
            scans[name] = scan
        headers[name] = check_columns(TABLES[name], path, fmt, warnings, scan, fs)
    return ExtractFolder(root, manifest, files, headers, scans, warnings)


def check_reject_share(summary: ValidationSummary, max_reject_share: float) -> None:
    """Raise ``TooManyRejectsError`` when a table's reject share is above the limit."""
    rows_read, rows_rejected = summary.rows_read, summary.rows_rejected
    over = [t for t in TABLE_ORDER if summary.reject_share(t) > max_reject_share]
    if over:
        detail = "; ".join(
            f"{t}: {rows_rejected[t]:,} of {rows_read[t]:,} rows rejected "
            f"({summary.reject_share(t):.1%}), most often {top_rule(summary.rule_counts, t)}"
            for t in over
        )
        rejects_path = summary.rejects_path
        raise TooManyRejectsError(
            f"too many rejected rows (limit {max_reject_share:.1%} of a table): {detail}"
            + (f". See {rejects_path}" if rejects_path else ""),
            file=Path(summary.files[over[0]]).name,
            summary=summary,
        )


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
        raise ExtractError(
            f"cannot be read as Parquet ({redact_duckdb(exc)})", file=str(path)
        ) from None
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
        cols = ", ".join(ident(c) for c in known)
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW _raw_{name} AS SELECT file_row_number + 1 AS _row, "
                f"{cols} FROM read_parquet('{sql_path(path)}', file_row_number = true)"
            )
            _parse_table(con, table, fmt, present, manifest)
            _split_rows(con, table, manifest.identifier_kind)
        except duckdb.Error as exc:
            raise ExtractError(
                f"cannot be read as Parquet ({redact_duckdb(exc)})", file=str(path)
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
    record_rejects(con, table, kind)
    bad = con.execute(f"SELECT count(*) FROM _bad_{name}").fetchall()[0][0]
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {clean_rows_sql(table, any_bad=bool(bad))}")


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
    # ``_bad``: the row breaks at least one check. A view for the event tables, read once
    # for its bad rows (``_split_rows``): cheaper than writing tens of millions of
    # raw-and-parsed rows out and reading them back. Patients are a table, as every later
    # table joins them.
    kind = "TABLE" if name == "patients" else "VIEW"
    sql = parsed_sql(table, present, manifest.identifier_kind, manifest.extract_date)
    con.execute(f"CREATE OR REPLACE TEMP {kind} _parsed_{name} AS {sql}")
    # The same rows' typed values by a shorter road, right for the rows that break no check
    # (and only those): the clean table is built from it without the checks and joins.
    con.execute(f"CREATE OR REPLACE TEMP VIEW _clean_{name} AS {clean_sql(table, present)}")
