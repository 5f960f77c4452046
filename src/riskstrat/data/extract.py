"""Read and validate an extract through DuckDB.

The only module that reads extract files. ``validate_extract`` checks the folder against the
data contract (``riskstrat.data.contract``) and returns an ``Extract``: a DuckDB database holding
the clean, typed tables under their contract names (in memory, or in a scratch file that
closing the extract deletes, see ``scratch_database``). Rows that break a rule
are left out and listed in a rejects file (table, row number, column, rule); the source
files are only ever read.

Validation is two steps per table: the rules (``_check_rows``: one read of the file, which
lists the rejected rows) and the load (``_load_rows``: one read, the clean rows typed into
the table). ``check_extract`` runs the rules alone; ``load_tables`` the load alone, for an
extract whose rejected rows a validation recorded earlier (``riskstrat.data.validated``).

Row numbers count data rows from 1: in a CSV the first row after the header is row 1; in
Parquet it is the file's first row.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from riskstrat.data.contract import (
    TABLE_ORDER,
    TABLES,
    Table,
)
from riskstrat.data.duck import (
    connect,
    ident,
    remove_database,
    scratch_database,
)
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan, scan_csv, scan_csv_at
from riskstrat.data.manifest import FileFormat, Manifest, locate_files, read_manifest
from riskstrat.data.reading import drop_relation, read_raw, reading
from riskstrat.data.rules import (
    PATIENT_LOOKUP_SQL,
    REJECTS_TABLE,
    RuleCount,
    broken_values_sql,
    clean_expr,
    clean_rows_sql,
    clean_sql,
    count_rejects,
    parsed_by_type,
    parsed_sql,
    record_rejects,
    top_rule,
    unparsed_values_sql,
    value_checks,
    values_sql,
    write_rejects,
)
from riskstrat.data.structure import (
    check_columns,
    check_row_count,
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
    "check_extract",
    "connect",
    "load_tables",
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
    #: True when this outcome is a validation recorded earlier, recognised by the digest of
    #: the extract's files (``riskstrat.data.validated``): the rules were not run again.
    recognised: bool = field(default=False, compare=False)
    #: Wall-clock seconds by step: ``digest`` (hashing the files, reading the record),
    #: ``rules`` (reading the folder and running the rules; 0 when recognised) and ``load``
    #: (building the clean tables). Neither this nor ``recognised`` is an outcome: they are
    #: left out of ``as_dict`` and of comparisons.
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

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
    own_con = con is None
    db = con if con is not None else connect()
    try:
        summary = run_validation(
            extract_dir,
            db,
            max_reject_share=max_reject_share,
            rejects_path=rejects_path,
            load=True,
        )
        return Extract(con=db, summary=summary)
    except BaseException:
        if own_con:
            db.close()
        raise


def check_extract(
    extract_dir: Path | str,
    *,
    max_reject_share: float = 0.01,
    rejects_path: Path | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> ValidationSummary:
    """Run the contract's rules on an extract folder without loading its clean rows: the
    summary, rejects file and errors of ``validate_extract``, for ``riskstrat validate``,
    which has no use for the tables.

    Args and raises as ``validate_extract`` (``con``, if given, is left open; nothing of the
    extract stays in it).
    """
    db = con if con is not None else connect()
    try:
        return run_validation(
            extract_dir,
            db,
            max_reject_share=max_reject_share,
            rejects_path=rejects_path,
            load=False,
        )
    finally:
        if con is None:
            db.close()


#: Called with what the rules found, before the reject share is judged (so an extract with
#: too many rejects is recorded too): the folder, the summary and the connection holding
#: ``_rejects``.
Checked = Callable[["ExtractFolder", ValidationSummary, duckdb.DuckDBPyConnection], None]


def run_validation(
    extract_dir: Path | str,
    db: duckdb.DuckDBPyConnection,
    *,
    max_reject_share: float,
    rejects_path: Path | None,
    load: bool,
    checked: Checked | None = None,
) -> ValidationSummary:
    """Validate ``extract_dir`` in ``db``: ``validate_extract`` with ``load``, else
    ``check_extract``; ``checked`` sees the outcome before the reject share is judged."""
    if is_uri(extract_dir):
        raise UsageError(
            f"{extract_dir} is a URI: extracts in an object store are read by the Spark engine",
            hint="pass --engine spark (or set RISKSTRAT_ENGINE=spark), or copy the extract "
            "to a local folder",
        )
    started = time.perf_counter()
    loading = 0.0
    folder = read_structure(extract_dir)
    manifest, files, headers, scans = folder.manifest, folder.files, folder.headers, folder.scans
    db.execute(REJECTS_TABLE)
    rows_read: dict[str, int] = {}
    try:
        for name in TABLE_ORDER:
            table, present = TABLES[name], headers[name]
            path, fmt = Path(files[name][0]), files[name][1]
            with reading(path, fmt):
                malformed = read_raw(db, table, path, fmt, present, scans.get(name))
                _check_rows(db, table, present, manifest)
                # The rows read, counted where they are cheapest to count (a Parquet file's
                # metadata).
                count = db.execute(f"SELECT count(*) FROM _raw_{name}").fetchall()[0][0]
                rows_read[name] = int(count) + malformed
                check_row_count(manifest, name, path, rows_read[name])
                if load:
                    loaded = time.perf_counter()
                    _load_rows(db, table, present)
                    loading += time.perf_counter() - loaded
            # Only the clean table stays: the raw copy of a 50-million-row CSV would
            # otherwise hold memory until every table is loaded.
            _drop_work(db, name)
        rule_counts, rows_rejected = count_rejects(db)
        summary = folder.summary(rows_read, rows_rejected, rule_counts)
        summary.seconds = {
            "digest": 0.0,
            "rules": time.perf_counter() - started - loading,
            "load": loading,
        }
        if rejects_path is not None:
            write_rejects(db, rejects_path)
            summary.rejects_path = rejects_path
        if checked is not None:
            checked(folder, summary, db)
        check_reject_share(summary, max_reject_share)
    finally:
        _drop_all_work(db, "_patient_lookup")
    if load:
        # A file database's tables move from its write-ahead log into compressed blocks.
        db.execute("CHECKPOINT")
    return summary


def load_tables(
    db: duckdb.DuckDBPyConnection,
    folder: ExtractFolder,
    rejects: pd.DataFrame,
) -> dict[str, int]:
    """Build the clean tables of an extract whose rejects are known, without the rules: each
    table is its file's rows, typed, less the rejected rows (by row number), exactly as
    ``validate_extract`` builds it.

    Args:
        db: the connection to build the tables in.
        folder: the extract's files, their columns (``headers``) and CSV scans, as the
            validation that found the rejects read them.
        rejects: that validation's rejects (the columns of ``REJECTS_TABLE``).

    Returns:
        {table: rows accepted}, as counted in the tables built.

    Raises:
        ExtractError: a file that can no longer be read as it was.
    """
    accepted: dict[str, int] = {}
    db.execute(REJECTS_TABLE)  # a CSV's malformed records are listed as they are read
    db.register("_rejects_recorded", rejects)
    try:
        for name in TABLE_ORDER:
            table, present = TABLES[name], folder.headers[name]
            path, fmt = Path(folder.files[name][0]), folder.files[name][1]
            # The rows the rules rejected; malformed CSV records are never read as rows.
            db.execute(
                f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS SELECT DISTINCT "
                "CAST(row_number AS BIGINT) AS _row FROM _rejects_recorded "
                "WHERE table_name = ? AND rule <> 'malformed_row'",
                [name],
            )
            with reading(path, fmt):
                read_raw(db, table, path, fmt, present, folder.scans.get(name))
                _load_rows(db, table, present)
            accepted[name] = int(db.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])
            _drop_work(db, name)
    finally:
        with suppress(duckdb.Error):
            db.unregister("_rejects_recorded")
        _drop_all_work(db, "_rejects")
    db.execute("CHECKPOINT")
    return accepted


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


def _check_rows(
    con: duckdb.DuckDBPyConnection, table: Table, present: dict[str, str], manifest: Manifest
) -> None:
    """Run the rules on ``_raw_<table>`` in one read: the rows that break a check (usually
    few) are kept in ``_bad_<table>`` and their rejects go to ``_rejects``.

    The later tables check their NHS numbers against the patients through
    ``_patient_lookup``, one row per patient as read, joined once."""
    name = table.name
    kind = manifest.identifier_kind
    as_found, typed, joins, unbroken = _learn_values(con, table, present, manifest)
    lookup = None if name == "patients" else "_patient_lookup"
    sql = parsed_sql(
        table, present, kind, manifest.extract_date, as_found=as_found, typed=typed,
        joins=joins, patient_lookup=lookup, unbroken=unbroken,
    )  # fmt: skip
    # The bad rows' numbers first, reading only the columns the checks left to run need (in
    # a clean extract, few); then, if there are any, those rows whole. Patients keep each
    # row's NHS number, date of birth and verdict, for the later tables' lookup.
    if name == "patients":
        keep = "SELECT _row, _raw_nhs_number, date_of_birth, _bad"
    else:
        keep = "SELECT _row, _bad"
    where = "" if name == "patients" else " WHERE _bad"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _parsed_{name} AS {keep} FROM ({sql}){where}")
    if con.execute(f"SELECT count(*) FROM _parsed_{name} WHERE _bad").fetchall()[0][0]:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS SELECT * FROM ({sql}) "
            f"WHERE _row IN (SELECT _row FROM _parsed_{name} WHERE _bad)"
        )
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _bad_{name} AS SELECT * FROM ({sql}) LIMIT 0")
    if name == "patients":
        con.execute(f"CREATE OR REPLACE TEMP TABLE _patient_lookup AS {PATIENT_LOOKUP_SQL}")
    drop_relation(con, f"_parsed_{name}")
    record_rejects(con, table, kind)


#: Columns with more distinct values than this are checked row by row: their values would
#: cost about what the rows do.
MAX_VALUES = 1_000_000


def _learn_values(
    con: duckdb.DuckDBPyConnection, table: Table, present: dict[str, str], manifest: Manifest
) -> tuple[dict[str, str], dict[str, str], str, set[tuple[str, str]]]:
    """What each column's distinct values tell the rules, for ``parsed_sql``: ({column: value
    as found SQL}, {column: typed value SQL}, joins, the checks no row breaks).

    A column's typed value, and every check that reads that column alone (``value_checks``),
    depend on its value alone, so they are worked out once per distinct value, and the
    checks no value breaks (in a clean extract, all of them) are not evaluated row by row:
    testing 50 million codes against a list row by row took seconds, the distinct values
    of a column stored with a dictionary, as Parquet stores codes, a fraction of one. Where
    every value parses, each row's typed value is its value cast (``clean_expr``); where
    some text does not, the rows join the column's values and their typed values. NHS
    numbers, as many as the people, and values stored typed, which cost little to compare,
    are checked row by row (``parsed_by_type`` says which of their checks cannot break)."""
    as_found: dict[str, str] = {}
    typed: dict[str, str] = {}
    joins = ""
    unbroken = parsed_by_type(table, present)
    kind = manifest.identifier_kind
    for i, col in enumerate(table.columns):
        source = present.get(col.name)
        if source != "VARCHAR" or col.name == "nhs_number":
            # Dates, numbers and booleans stored as such cost little to check row by row.
            continue
        values = f"_values_{table.name}_{i}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {values} AS "
            f"{values_sql(col, f'_raw_{table.name}', source, kind)}"
        )
        if con.execute(f"SELECT count(*) FROM {values}").fetchall()[0][0] > MAX_VALUES:
            drop_relation(con, values)
            continue
        checks = value_checks(table, kind, col.name)
        if checks:
            sql = broken_values_sql(col, source, checks, values, manifest.extract_date)
            broken = con.execute(sql).fetchall()[0]
            unbroken |= {
                (c, rule) for (c, rule, _), hit in zip(checks, broken, strict=True) if not hit
            }
        raw = f"r.{ident(col.name)}"
        empty = con.execute(f"SELECT count(*) FROM {values} WHERE raw = ''").fetchall()[0][0]
        if empty == 0:
            # No empty text to read as missing: the value as found is the column itself.
            as_found[col.name] = raw
        if con.execute(unparsed_values_sql(values, source)).fetchall()[0][0] == 0:
            # Every value parses: a code or a string is then itself, anything else cast.
            itself = col.kind in ("code", "string") and empty == 0
            typed[col.name] = raw if itself else clean_expr(col, raw, source)
            drop_relation(con, values)
        else:
            typed[col.name] = f"_v{i}.typed"
            joins += f" LEFT JOIN {values} _v{i} ON _v{i}.raw = {raw}"
    return as_found, typed, joins, unbroken


def _load_rows(con: duckdb.DuckDBPyConnection, table: Table, present: dict[str, str]) -> None:
    """Create the clean table from ``_raw_<table>`` less the rows of ``_bad_<table>``.

    The typed values come by a shorter road than the rules' (``clean_sql``), right for the
    rows that break no check, which are told apart by row number, so the checks are not
    evaluated again. Rows are not put back in file order: nothing downstream depends on the
    order of a table, and sorting 50 million prescriptions took longer than checking them.
    """
    name = table.name
    con.execute(f"CREATE OR REPLACE TEMP VIEW _clean_{name} AS {clean_sql(table, present)}")
    bad = con.execute(f"SELECT count(*) FROM _bad_{name}").fetchall()[0][0]
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {clean_rows_sql(table, any_bad=bool(bad))}")


def _drop_all_work(con: duckdb.DuckDBPyConnection, *others: str) -> None:
    """Drop what validation made besides the clean tables, as far as the connection still
    allows (after an error it may not: that error is the one to report)."""
    with suppress(duckdb.Error):
        for name in TABLE_ORDER:
            _drop_work(con, name)
        for other in others:
            drop_relation(con, other)


def _drop_work(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop the relations validating table ``name`` made, all but its clean table."""
    for prefix in ("_raw_", "_parsed_", "_bad_", "_clean_"):
        drop_relation(con, prefix + name)
    for (values,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND starts_with(table_name, ?)",
        [f"_values_{name}_"],
    ).fetchall():
        drop_relation(con, str(values))
