"""Small pieces the pipelines share: progress reporting and where run files go."""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from riskstrat.config import Settings
from riskstrat.data.extract import (
    Extract,
    connect,
    remove_database,
    scratch_database,
    validate_extract,
)
from riskstrat.data.manifest import Manifest, read_manifest
from riskstrat.data.validated import open_validated
from riskstrat.engines.hadoop_fs import is_uri, uri_name
from riskstrat.errors import NotFoundError, UsageError
from riskstrat.store import Store
from riskstrat.store.records import RunInfo

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

    from riskstrat.data.spark_extract import SparkExtract

_log = logging.getLogger(__name__)

#: progress(stage, fraction_done) — the CLI draws it as a bar; None means silent.
Progress = Callable[[str, float], None] | None


def release_freed_memory() -> None:
    """Hand the memory that freed frames leave in the C heap back to the system (glibc's
    ``malloc_trim``), so that the process's resident size falls when a big frame is let go.

    A frame's columns of a few MB each are carved from the heap, not mapped on their own,
    and glibc keeps a freed heap's pages until told otherwise: without this, a million
    people's frames freed before the evaluation still counted in its peak. Does nothing
    where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    return function


def report(progress: Progress, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def rejects_path_for(settings: Settings, extract_dir: Path | str) -> Path:
    """Where validating ``extract_dir`` (a folder or a URI) writes its rejects: a local
    file under the home, outside the extract, named after the extract's folder."""
    own = uri_name(str(extract_dir)) if is_uri(extract_dir) else Path(extract_dir).resolve().name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(own)) or "extract"
    return settings.rejects_dir / f"{name}.rejects.csv"


def check_engine_reads(settings: Settings, extract_dir: Path | str) -> None:
    """Refuse a URI unless the engine is Spark (DuckDB reads local folders)."""
    if is_uri(extract_dir) and settings.engine != "spark":
        raise UsageError(
            f"{extract_dir} is a URI: extracts in an object store are read by the Spark engine",
            hint="pass --engine spark (or set RISKSTRAT_ENGINE=spark), or copy the extract "
            "to a local folder",
        )


@contextmanager
def engine_for(settings: Settings, extract_dir: Path | str) -> Iterator[None]:
    """For an extract at a URI, a Spark session held for the block, which the pipeline's own
    ``spark_session`` then reuses (one start for the manifest and the run); nothing for a
    local folder."""
    check_engine_reads(settings, extract_dir)
    if not is_uri(extract_dir):
        yield
        return
    from riskstrat.engines.spark import spark_session

    with spark_session(settings):
        yield


def read_extract_manifest(settings: Settings, extract_dir: Path | str) -> Manifest:
    """The extract's manifest, checked: from a local folder, or at a URI through Spark's
    file system (a session is started unless one is active: see ``engine_for``)."""
    check_engine_reads(settings, extract_dir)
    if not is_uri(extract_dir):
        return read_manifest(Path(extract_dir))
    from riskstrat.engines.hadoop_fs import hadoop_files
    from riskstrat.engines.spark import spark_session

    with spark_session(settings) as spark:
        return read_manifest(extract_dir, hadoop_files(spark, str(extract_dir)))


def open_extract(
    settings: Settings, extract_dir: Path | str, *, progress: Progress = None, at: float = 0.0
) -> Extract:
    """Validate an extract with the deployment's reject limit, writing its rejects file.

    An extract validated earlier (by any command, or ``riskstrat validate``) and unchanged
    since is recognised by the digest of its files and not checked again: its summary,
    rejects file and tables are what validation gave (``riskstrat.data.validated``;
    ``extract.summary.recognised`` and ``.seconds`` say so, and so do the progress stage,
    reported at ``at``, and the log). Its validated tables are kept beside the record
    (``RISKSTRAT_KEEP_VALIDATED_TABLES``), so that a later command opens a copy of them
    instead of loading the files again. ``RISKSTRAT_REUSE_VALIDATION=false`` runs the rules
    every time.

    DuckDB gets the deployment's memory limit and threads, and spills to a folder under
    the home beyond the limit (its own default is 80% of the machine's memory). The
    validated tables are kept in a scratch database file in that folder, deleted when the
    extract is closed, so that they do not fill the memory limit (``scratch_database``)."""
    check_engine_reads(settings, extract_dir)
    scratch = settings.home / "duckdb-tmp"
    database = scratch_database(scratch)
    rejects_path = rejects_path_for(settings, extract_dir)

    def open_database(copy_of: Path | None = None) -> duckdb.DuckDBPyConnection:
        return connect(
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
            temp_directory=scratch,
            database=database,
            copy_of=copy_of,
        )

    try:
        if settings.reuse_validation:
            extract = open_validated(
                extract_dir,
                open_database,
                records_dir=settings.validation_records_dir,
                max_reject_share=settings.max_reject_share,
                rejects_path=rejects_path,
                stage=lambda words: report(progress, words, at),
                database=database,
                keep_tables=settings.keep_validated_tables,
            )
        else:
            con = open_database()
            try:
                extract = validate_extract(
                    extract_dir,
                    max_reject_share=settings.max_reject_share,
                    rejects_path=rejects_path,
                    con=con,
                )
            except BaseException:
                con.close()
                raise
    except BaseException:
        remove_database(database)
        raise
    extract.database = database
    summary = extract.summary
    seconds = {k: round(v, 2) for k, v in summary.seconds.items()}
    if summary.recognised:
        _log.info(
            "extract validated earlier and recognised by the digest of its files; the rules "
            "were not run again",
            extra={"validation_recognised": True, "validation_seconds": seconds},
        )
    else:
        _log.info(
            "extract validated",
            extra={"validation_recognised": False, "validation_seconds": seconds},
        )
    return extract


def open_spark_extract(
    settings: Settings, extract_dir: Path | str, spark: SparkSession
) -> SparkExtract:
    """``open_extract`` on Spark: the extract validated by ``validate_extract_spark`` (the
    same rules, rejects file and limits), its clean tables temp views in ``spark``."""
    from riskstrat.data.spark_extract import validate_extract_spark

    return validate_extract_spark(
        spark,
        extract_dir,
        max_reject_share=settings.max_reject_share,
        rejects_path=rejects_path_for(settings, extract_dir),
    )


def published_run(store: Store, month: date) -> RunInfo:
    """The published run of ``month``, or a :class:`NotFoundError` that says there is none."""
    store.create_schema()
    run = store.runs.for_month(month)
    if run is None:
        raise NotFoundError(
            f"no published run for {month.strftime('%Y-%m')}",
            hint="score that month first (`riskstrat score --month YYYY-MM`)",
        )
    return run
