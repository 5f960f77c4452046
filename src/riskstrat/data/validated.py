"""Validate once: an extract validated earlier is recognised by a digest of its files.

Every command that reads an extract (``score``, ``train``, ``predict``, ``evaluate``,
``monitor``, ...) needs what validation gives: the summary, the rejects file and the clean
tables. Running the rules again on an unchanged extract gives the same answer, so a
validation leaves a record under the home (``Settings.validation_records_dir``, one file per
extract folder), and the next command that opens the folder uses it instead of the rules.

The record is recognised by its key, a digest of everything that decides the outcome:

* for ``manifest.json`` and each table's file: its name, size, modification time (ns) and
  the SHA-256 of its whole content, so any change to any file (its content, even one byte at
  the same size and time; its size; its time) makes a new key;
* riskstrat's version, the contract's version, the SHA-256 of the source of the modules
  whose code decides the outcome (the contract, its rules and codes, the readers) and
  DuckDB's version.

The reject limit (``max_reject_share``) is not part of the key: it is judged afresh on every
open, from the recorded counts, exactly as after the rules.

What a record holds is the outcome without any value from the extract: the row counts, the
rejects by rule, the warnings, each file's columns and CSV scan, and each reject's table,
row number, column and rule (the rejects file's content, less its messages). From that, a
recognised extract gets the same summary, the same rejects file (rewritten byte for byte)
and the same clean tables: each file's rows, typed, less the rejected row numbers
(``riskstrat.data.extract.load_tables``), without the rules. A record that cannot be read,
is of another format, or holds another key is ignored, and the extract is validated again;
so is one whose tables, once built, do not hold the recorded row counts, or whose files
changed while they were read.

Building the tables from the files again is most of a recognised open (23.5 s of a
909,091-person run), so the validated tables themselves are kept too (``keep_tables``,
``RISKSTRAT_KEEP_VALIDATED_TABLES``): once a command's tables are built, its scratch
database is copied beside the record, named by the folder and the key
(``kept_tables_path``), and a later command that recognises the extract opens a copy of it
instead, after checking that every table holds the recorded row count. Unlike the record,
that file is personal data (the extract's rows), created for its owner only.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from riskstrat.data.contract import CONTRACT_VERSION, SUPPORTED_CONTRACT_VERSIONS, TABLE_ORDER
from riskstrat.data.duck import copy_private, ident, remove_database
from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import (
    Extract,
    ExtractFolder,
    ValidationSummary,
    check_reject_share,
    load_tables,
    run_validation,
)
from riskstrat.data.files import CsvScan, check_plain_file
from riskstrat.data.manifest import locate_files, read_manifest
from riskstrat.data.rules import RuleCount, load_rejects, write_rejects
from riskstrat.engines.hadoop_fs import is_uri

__all__ = [
    "RECORD_FORMAT",
    "Fingerprint",
    "Record",
    "check_and_record",
    "fingerprint",
    "kept_tables_path",
    "open_validated",
    "read_record",
]

_log = logging.getLogger(__name__)

#: The layout of a record; a record of another format is ignored.
RECORD_FORMAT = 1
#: The modules whose code decides a validation's outcome (``riskstrat.data.<name>``).
_DECIDING_MODULES = (
    "contract", "rules", "extract", "reading", "structure", "files", "manifest", "duck",
    "validated",
)  # fmt: skip

#: Says what is happening, in words (a progress bar's stage).
Stage = Callable[[str], None]
#: Opens the run's DuckDB database, as a copy of the given file if not None.
Connect = Callable[[Path | None], duckdb.DuckDBPyConnection]


@dataclass(frozen=True)
class Fingerprint:
    """An extract folder's key, and what its files looked like when they were hashed."""

    key: str
    #: {file name: (size, modification time in ns)}.
    stats: dict[str, tuple[int, int]]
    #: Where the folder's record is kept.
    path: Path


@dataclass(frozen=True)
class Record:
    """A validation's outcome as recorded: no value from the extract."""

    rows_read: dict[str, int]
    rows_rejected: dict[str, int]
    rule_counts: list[RuleCount]
    warnings: list[str]
    #: {table: {column: source type}}, as the folder check found them.
    headers: dict[str, dict[str, str]]
    scans: dict[str, CsvScan]
    #: Every reject: the columns of ``riskstrat.data.rules.REJECTS_TABLE``.
    rejects: pd.DataFrame


def fingerprint(extract_dir: Path, records_dir: Path) -> Fingerprint | None:
    """The key of an extract folder (see the module's docstring) and where its record lives.

    Returns:
        None when the folder cannot be fingerprinted (no manifest, a table missing, a file
        that cannot be read, or one that changed while it was hashed): validation then
        runs, and says what is wrong.
    """
    folder = Path(extract_dir)
    try:
        # Plain files inside the folder only (a FIFO is never opened).
        check_plain_file(folder, folder / "manifest.json")
        names = ["manifest.json"] + [Path(p).name for p, _ in locate_files(folder).values()]
        files = {name: _hash_file(folder / name) for name in names}
    except (OSError, ExtractError):
        return None
    if any(f is None for f in files.values()):
        return None
    parts = {
        "record_format": RECORD_FORMAT,
        "riskstrat": riskstrat_version(),
        "contract": [CONTRACT_VERSION, list(SUPPORTED_CONTRACT_VERSIONS)],
        "rules": rules_digest(),
        "duckdb": duckdb.__version__,
        "files": files,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    name = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    stats = {n: (int(f[0]), int(f[1])) for n, f in files.items() if f is not None}
    return Fingerprint(key=key, stats=stats, path=records_dir / f"{name}.json")


def _hash_file(path: Path) -> tuple[int, int, str] | None:
    """(size, modification time in ns, SHA-256 of the whole content), or None if the file
    changed while it was read."""
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        after = os.fstat(fh.fileno())
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return before.st_size, before.st_mtime_ns, digest


def _stats(folder: Path, names: list[str]) -> dict[str, tuple[int, int]] | None:
    try:
        return {n: _stat(folder / n) for n in names}
    except OSError:
        return None


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def riskstrat_version() -> str:
    """The installed riskstrat's version (part of every key)."""
    try:
        return version("riskstrat")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def rules_digest() -> str:
    """SHA-256 of the source of the modules whose code decides a validation's outcome."""
    digest = hashlib.sha256()
    for name in _DECIDING_MODULES:
        module = importlib.import_module(f"riskstrat.data.{name}")
        digest.update(name.encode() + b"\0" + Path(str(module.__file__)).read_bytes() + b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Reading and writing records


def read_record(fp: Fingerprint) -> Record | None:
    """The record at ``fp.path`` if it is whole, of this format and holds ``fp.key``; None
    otherwise (it is then ignored, and the extract validated again)."""
    try:
        data = json.loads(fp.path.read_bytes())
        if data.get("record_format") != RECORD_FORMAT or data.get("key") != fp.key:
            return None
        return _parse_record(data)
    except Exception:  # whatever is wrong with a record, it is not used
        return None


def _parse_record(data: dict[str, Any]) -> Record | None:
    tables = list(TABLE_ORDER)
    rows_read = {str(t): int(n) for t, n in data["rows_read"].items()}
    rows_rejected = {str(t): int(n) for t, n in data["rows_rejected"].items()}
    headers = {
        str(t): {str(c): str(k) for c, k in cols.items()} for t, cols in data["headers"].items()
    }
    if list(rows_read) != tables or list(rows_rejected) != tables or list(headers) != tables:
        return None
    scans = {
        str(t): CsvScan(
            header=[str(h) for h in s["header"]],
            rows=int(s["rows"]),
            blank_lines=None if s["blank_lines"] is None else int(s["blank_lines"]),
            unterminated_last_row_fields=(
                None
                if s["unterminated_last_row_fields"] is None
                else int(s["unterminated_last_row_fields"])
            ),
        )
        for t, s in data["scans"].items()
    }
    rejects = data["rejects"]
    frame = pd.DataFrame(
        {
            "table_name": pd.Series([str(r[0]) for r in rejects], dtype=object),
            "row_number": pd.Series([int(r[1]) for r in rejects], dtype="int64"),
            "column_name": pd.Series([str(r[2]) for r in rejects], dtype=object),
            "rule": pd.Series([str(r[3]) for r in rejects], dtype=object),
        }
    )
    # The rejected rows it lists are the rows it counts as rejected, table by table.
    listed = frame.groupby("table_name")["row_number"].nunique().to_dict()
    if any(int(listed.get(t, 0)) != n for t, n in rows_rejected.items()):
        return None
    return Record(
        rows_read=rows_read,
        rows_rejected=rows_rejected,
        rule_counts=[RuleCount(str(t), str(c), str(r), int(n)) for t, c, r, n in data["rules"]],
        warnings=[str(w) for w in data["warnings"]],
        headers=headers,
        scans=scans,
        rejects=frame,
    )


def write_record(
    fp: Fingerprint,
    folder: ExtractFolder,
    summary: ValidationSummary,
    db: duckdb.DuckDBPyConnection,
) -> None:
    """Record a validation's outcome under ``fp.key``, atomically (a temporary file renamed
    over the old record). Nothing is recorded if a file changed since it was hashed (what
    was validated may not be what the key says), and a record that cannot be written is
    only logged: the validation itself stands."""
    if _stats(Path(folder.root), list(fp.stats)) != fp.stats:
        _log.warning("extract files changed while they were validated; nothing recorded")
        return
    rejects = db.execute(
        "SELECT table_name, row_number, column_name, rule FROM _rejects ORDER BY ALL"
    ).fetchall()
    data = {
        "record_format": RECORD_FORMAT,
        "key": fp.key,
        "rows_read": summary.rows_read,
        "rows_rejected": summary.rows_rejected,
        "rules": [[r.table, r.column, r.rule, r.rows] for r in summary.rule_counts],
        "warnings": summary.warnings,
        "headers": folder.headers,
        "scans": {
            t: {
                "header": s.header,
                "rows": s.rows,
                "blank_lines": s.blank_lines,
                "unterminated_last_row_fields": s.unterminated_last_row_fields,
            }
            for t, s in folder.scans.items()
        },
        "rejects": [[t, int(n), c, r] for t, n, c, r in rejects],
    }
    try:
        fp.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{fp.path.name}.", suffix=".tmp", dir=fp.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
            os.replace(tmp, fp.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        _log.warning("could not record the validation (%s)", type(exc).__name__)


# --------------------------------------------------------------------------------------
# Opening an extract


class _RecordMismatch(Exception):
    """The tables built from a record do not hold its counts, or a file changed meanwhile."""


def open_validated(
    extract_dir: Path | str,
    connect: Connect,
    *,
    records_dir: Path,
    max_reject_share: float,
    rejects_path: Path | None,
    stage: Stage | None = None,
    database: Path | None = None,
    keep_tables: bool = False,
) -> Extract:
    """``validate_extract`` into a connection from ``connect``, run once per extract: an
    extract recognised by its record (``summary.recognised``) opens a copy of the tables
    kept by the validation (``keep_tables``, with the scratch ``database`` file
    ``connect`` opens), or has its clean tables built without the rules; any other is
    validated and recorded (and with ``keep_tables``, its tables kept).

    ``connect(copy_of)`` opens ``database`` (None: in memory), starting it as a copy of
    ``copy_of`` if given (``riskstrat.data.duck.connect``). Returns, raises and writes as
    ``validate_extract`` would (the same summary, rejects file, tables and errors), with
    ``summary.seconds`` saying where the time went. On an error, the connection it opened
    is closed (the caller deletes ``database``).
    """
    started = time.perf_counter()
    fp = None if is_uri(extract_dir) else fingerprint(Path(extract_dir), records_dir)
    record = read_record(fp) if fp is not None else None
    digest_seconds = time.perf_counter() - started
    keep = keep_tables and database is not None
    if fp is not None and not keep:
        _forget_tables(fp)
    if fp is not None and record is not None and keep and database is not None:
        extract = _open_kept(
            Path(extract_dir), connect, database, fp, record, max_reject_share, rejects_path,
            stage,
        )  # fmt: skip
        if extract is not None:
            extract.summary.seconds["digest"] = digest_seconds
            return extract
    db = connect(None)
    try:
        extract = None
        if fp is not None and record is not None:
            if stage is not None:
                stage("extract validated earlier, recognised by its digest; loading its rows")
            try:
                extract = _open_recorded(
                    Path(extract_dir), db, fp, record, max_reject_share, rejects_path
                )
            except _RecordMismatch:
                _log.warning("the validation record did not match the extract; validating again")
        if extract is None:
            if stage is not None:
                stage("validate extract: running the contract's rules")
            summary = run_validation(
                extract_dir,
                db,
                max_reject_share=max_reject_share,
                rejects_path=rejects_path,
                load=True,
                checked=_recorder(fp),
            )
            extract = Extract(con=db, summary=summary)
        extract.summary.seconds["digest"] = digest_seconds
        if fp is not None and keep and database is not None:
            keep_seconds = time.perf_counter()
            if _keep_tables(fp, db, database):
                extract.summary.seconds["keep"] = time.perf_counter() - keep_seconds
        return extract
    except BaseException:
        db.close()
        raise


def check_and_record(
    extract_dir: Path | str,
    db: duckdb.DuckDBPyConnection,
    *,
    records_dir: Path,
    max_reject_share: float,
    rejects_path: Path | None,
) -> ValidationSummary:
    """``check_extract`` into ``db`` (the rules, always run), refreshing the extract's record
    (``riskstrat validate``)."""
    started = time.perf_counter()
    fp = None if is_uri(extract_dir) else fingerprint(Path(extract_dir), records_dir)
    digest_seconds = time.perf_counter() - started
    summary = run_validation(
        extract_dir,
        db,
        max_reject_share=max_reject_share,
        rejects_path=rejects_path,
        load=False,
        checked=_recorder(fp),
    )
    summary.seconds["digest"] = digest_seconds
    return summary


def _recorder(
    fp: Fingerprint | None,
) -> Callable[[ExtractFolder, ValidationSummary, duckdb.DuckDBPyConnection], None] | None:
    if fp is None:
        return None

    def record(
        folder: ExtractFolder, summary: ValidationSummary, db: duckdb.DuckDBPyConnection
    ) -> None:
        write_record(fp, folder, summary, db)

    return record


def _open_recorded(
    folder_path: Path,
    db: duckdb.DuckDBPyConnection,
    fp: Fingerprint,
    record: Record,
    max_reject_share: float,
    rejects_path: Path | None,
) -> Extract:
    """The extract as its record says validation found it, its tables built without the
    rules."""
    summary = _recorded_summary(folder_path, record, db, max_reject_share, rejects_path)
    loading = time.perf_counter()
    accepted = load_tables(db, _recorded_folder(folder_path, record), record.rejects)
    summary.seconds = {"digest": 0.0, "rules": 0.0, "load": time.perf_counter() - loading}
    if accepted != summary.rows_accepted or _stats(folder_path, list(fp.stats)) != fp.stats:
        raise _RecordMismatch
    return Extract(con=db, summary=summary)


def _recorded_folder(folder_path: Path, record: Record) -> ExtractFolder:
    """The extract's files as the validation that made ``record`` found them."""
    return ExtractFolder(
        root=folder_path,
        manifest=read_manifest(folder_path),
        files=locate_files(folder_path),
        headers=record.headers,
        scans=record.scans,
        warnings=list(record.warnings),
    )


def _recorded_summary(
    folder_path: Path,
    record: Record,
    db: duckdb.DuckDBPyConnection,
    max_reject_share: float,
    rejects_path: Path | None,
) -> ValidationSummary:
    """The summary ``record`` says validation gave, its rejects file written from ``db``
    (which gets the recorded rejects) and the reject limit judged afresh."""
    folder = _recorded_folder(folder_path, record)
    summary = folder.summary(
        dict(record.rows_read), dict(record.rows_rejected), list(record.rule_counts)
    )
    summary.recognised = True
    if rejects_path is not None:
        load_rejects(db, record.rejects)
        write_rejects(db, rejects_path)
        summary.rejects_path = rejects_path
    check_reject_share(summary, max_reject_share)
    return summary


# --------------------------------------------------------------------------------------
# The validated tables kept between commands


def kept_tables_path(fp: Fingerprint) -> Path:
    """Where the validated tables of the extract folder ``fp`` describes are kept: beside
    its record, named by the folder and the key, so that tables kept under another key
    (the files, riskstrat or DuckDB changed since) are never opened."""
    return fp.path.with_name(f"{fp.path.stem}-{fp.key[:32]}.duckdb")


def _kept_for_folder(fp: Fingerprint) -> list[Path]:
    """Every kept database of ``fp``'s extract folder, under any key."""
    return sorted(fp.path.parent.glob(f"{fp.path.stem}-*.duckdb"))


def _forget_tables(fp: Fingerprint) -> None:
    """Delete the folder's kept tables (keeping is turned off)."""
    for path in _kept_for_folder(fp):
        path.unlink(missing_ok=True)


def _keep_tables(fp: Fingerprint, db: duckdb.DuckDBPyConnection, database: Path) -> bool:
    """Keep a copy of the scratch ``database`` (just validated, or built from the record)
    as the folder's kept tables, replacing any kept under an older key; only if the
    record holds ``fp.key`` (nothing is kept for what was not recorded). A copy that
    cannot be made is only logged: the run itself stands."""
    if read_record(fp) is None:
        return False
    target = kept_tables_path(fp)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        db.execute("CHECKPOINT")  # every table in the file, none in its write-ahead log
        wal = database.with_name(database.name + ".wal")
        if wal.exists() and wal.stat().st_size:
            return False
        copy_private(database, tmp)
        os.replace(tmp, target)
    except (OSError, duckdb.Error) as exc:
        tmp.unlink(missing_ok=True)
        _log.warning("could not keep the validated tables (%s)", type(exc).__name__)
        return False
    for old in _kept_for_folder(fp):
        if old != target:
            old.unlink(missing_ok=True)
    return True


def _open_kept(
    folder_path: Path,
    connect: Connect,
    database: Path,
    fp: Fingerprint,
    record: Record,
    max_reject_share: float,
    rejects_path: Path | None,
    stage: Stage | None,
) -> Extract | None:
    """The extract as its record says validation found it, its tables a copy of the kept
    ones; None (and the kept copy deleted) if there are none, they cannot be opened, or
    they do not hold the recorded row counts."""
    kept = kept_tables_path(fp)
    if not kept.is_file():
        return None
    if stage is not None:
        stage("extract validated earlier, recognised by its digest; opening its kept tables")
    opening = time.perf_counter()
    try:
        db = connect(kept)
    except (OSError, duckdb.Error) as exc:
        remove_database(database)
        _log.warning("could not open the kept validated tables (%s)", type(exc).__name__)
        return None
    try:
        summary = _recorded_summary(folder_path, record, db, max_reject_share, rejects_path)
        sql = ", ".join(f"(SELECT count(*) FROM {ident(t)})" for t in TABLE_ORDER)
        (row,) = db.execute(f"SELECT {sql}").fetchall()  # every result read to its end
        counts = dict(zip(TABLE_ORDER, (int(n) for n in row), strict=True))
        if counts != summary.rows_accepted or _stats(folder_path, list(fp.stats)) != fp.stats:
            raise _RecordMismatch
    except (_RecordMismatch, duckdb.Error):
        db.close()
        remove_database(database)
        kept.unlink(missing_ok=True)
        _log.warning("the kept validated tables did not match the record; not used")
        return None
    except BaseException:
        db.close()
        raise
    summary.seconds = {"digest": 0.0, "rules": 0.0, "load": time.perf_counter() - opening}
    return Extract(con=db, summary=summary)
