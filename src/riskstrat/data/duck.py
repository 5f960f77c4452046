"""DuckDB for extracts: connections with the settings riskstrat relies on, the scratch
database files validated tables live in, and quoting for the SQL built around them."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import duckdb

from riskstrat.errors import AlreadyExistsError

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
        raise AlreadyExistsError(
            f"{database} exists; a scratch database must be new",
            hint="remove the leftover file, or let riskstrat choose the scratch name",
        )
    con = duckdb.connect(":memory:" if database is None else str(database))
    con.execute("SET preserve_insertion_order = true")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        temp_directory.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{sql_path(temp_directory)}'")
    return con


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote(text: str) -> str:
    return text.replace("'", "''")


def sql_path(path: Path) -> str:
    return quote(str(path))
