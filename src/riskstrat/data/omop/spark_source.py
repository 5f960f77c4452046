"""Opening a folder of OMOP CDM tables on Apache Spark (``import omop --engine spark``).

The folder is local, or at a URI Spark reads through Hadoop's file systems (``s3a://``,
``abfss://``, ``gs://`` where their connectors are installed; ``file://`` for a local
folder). Each table becomes the view ``cdm_raw_<table>``, as DuckDB's reader makes it, and
``source.open_source`` then types them with the same SQL as on DuckDB. A CSV table is read as
text, with DuckDB's quoting rules, parsed once and kept (memory, then disk); one Spark job
checks that no record has too many or too few fields and, for local files, that every record
the file's scan counted was read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from riskstrat.data.errors import ExtractError
from riskstrat.data.files import CsvScan, scan_csv
from riskstrat.data.omop.source import CDM_COLUMNS, _delimiter, _folder_files
from riskstrat.data.omop.spark_con import SparkConnection, SparkSqlError
from riskstrat.engines.spark import is_spark_error, redact

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


#: What the Spark engine reads (the error for any other source says so).
SPARK_SOURCES = (
    "the Spark engine reads a folder of CDM tables as Parquet or CSV, local or at an "
    "object-store URI such as s3a://bucket/cdm/; a DuckDB file or PostgreSQL schema is read "
    "by --engine duckdb"
)
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def check_spark_source(source: str) -> None:
    """Refuse, before Spark starts, a source the Spark engine does not read.

    Raises:
        ExtractError: a PostgreSQL URL, a local file (a DuckDB database), or a local path
            that does not exist.
    """
    if re.match(r"postgres(ql)?(\+\w+)?://", source):
        raise ExtractError(f"a PostgreSQL source: {SPARK_SOURCES}")
    if not _URI.match(source):
        path = Path(source)
        if path.is_file():
            raise ExtractError(f"not a folder: {SPARK_SOURCES}", file=source)
        if not path.is_dir():
            raise ExtractError(f"OMOP source not found ({SPARK_SOURCES})", file=source)


def open_on_spark(con: SparkConnection, source: str) -> tuple[str, str, dict[str, list[str]]]:
    """Read a folder of CDM tables (local, or a URI Spark reads) into ``cdm_raw_<table>``
    views on Spark. Returns (kind, description, table -> lower-case columns)."""
    check_spark_source(source)
    if not _URI.match(source):
        path = Path(source)
        files = {t: str(p.resolve()) for t, p in _folder_files(path).items()}
        description = f"folder {path}"
    else:
        files = _uri_files(con, source)
        description = f"folder {source}"
    counts: list[str] = []
    scans: dict[str, CsvScan] = {}
    for table, location in files.items():
        name = location.rstrip("/").rsplit("/", 1)[-1].lower()
        try:
            if name.endswith((".csv", ".tsv")):
                if _URI.match(location):
                    delim = _uri_delimiter(con, location)
                    header = None
                else:
                    delim = _delimiter(Path(location))
                    scans[table] = scan_csv(Path(location), delimiter=delim)
                    header = scans[table].header
                # Parsed once, kept (memory, then disk): every later query reads the cache,
                # and Spark checks the records' fields only on a parsed copy.
                con.cache(f"cdm_csv_{table}", _spark_csv(con, location, delim, header))
                counts.append(
                    f"SELECT '{table}' AS t, count(*) AS n, count({_MALFORMED}) AS bad "
                    f"FROM cdm_csv_{table}"
                )
            else:
                con.view(f"cdm_raw_{table}", con.spark.read.parquet(location), persist=False)
        except Exception as exc:
            if not is_spark_error(exc):
                raise
            raise ExtractError(f"cannot be read ({redact(exc)})", file=location) from None
    if counts:
        _check_csv_counts(con, counts, files, scans, description)
    found = {t: [c.lower() for c in con.columns(f"cdm_raw_{t}")] for t in files}
    return "folder", description, found


def _check_csv_counts(
    con: SparkConnection,
    counts: list[str],
    files: dict[str, str],
    scans: dict[str, CsvScan],
    description: str,
) -> None:
    """One Spark job checks every CSV table: no malformed record, and (for local files)
    every record the scan counted was read; then the check column is dropped."""
    try:
        rows = con.execute(" UNION ALL ".join(counts)).fetchall()
    except SparkSqlError as exc:
        raise ExtractError(str(exc), file=description) from None
    for table, n, bad in rows:
        if bad:
            raise ExtractError(
                f"cannot be read as CSV ({bad:,} records with too many or too few fields)",
                file=files[table],
            )
        scan = scans.get(table)
        if scan is not None and n != scan.rows:
            path = Path(files[table])
            blank = scan_csv(path, delimiter=_delimiter(path), count_blank=True)
            if n != blank.rows:
                raise ExtractError(
                    f"the CSV reader returned {n:,} rows but the file holds {scan.rows:,}",
                    file=files[table],
                )
        frame = con.spark.table(f"cdm_csv_{table}").drop(_MALFORMED)
        con.view(f"cdm_raw_{table}", frame, persist=False)


#: Spark's corrupt-record column: set for a CSV record whose field count is not the header's.
_MALFORMED = "_riskstrat_malformed_record"


def _spark_csv(
    con: SparkConnection, location: str, delim: str, header: list[str] | None
) -> DataFrame:
    """A CDM CSV file as text columns, as DuckDB reads it (header, quotes for commas only,
    quoted line breaks), with the malformed-record column. ``header``: the file's, when
    already scanned."""
    from pyspark.sql import types as T

    quote = '"' if delim == "," else ""
    options = {"header": "true", "sep": delim, "quote": quote, "escape": quote,
               "encoding": "UTF-8"}  # fmt: skip
    if header is None:
        header = con.spark.read.options(**options).csv(location).columns
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in header]
        + [T.StructField(_MALFORMED, T.StringType())]
    )
    return (
        con.spark.read.schema(schema)
        .options(
            **options, multiLine="true", mode="PERMISSIVE",
            columnNameOfCorruptRecord=_MALFORMED, enforceSchema="true",
            ignoreLeadingWhiteSpace="false", ignoreTrailingWhiteSpace="false",
            maxCharsPerColumn="-1",
        )
        .csv(location)
    )  # fmt: skip


def _uri_delimiter(con: SparkConnection, location: str) -> str:
    if location.lower().endswith(".tsv"):
        return "\t"
    first = con.spark.read.text(location).first()
    line = str(first[0]) if first is not None else ""
    return "\t" if "\t" in line and "," not in line else ","


def _uri_files(con: SparkConnection, uri: str) -> dict[str, str]:
    """The CDM tables at a URI Spark reads (through Hadoop's file system, so s3a://, abfss://
    and gs:// work where their connectors are installed): ``person.parquet``, ``PERSON.csv``
    or ``person/`` (a folder of Parquet parts), one per table."""
    try:
        jvm = con.spark.sparkContext._jvm
        assert jvm is not None
        root = jvm.org.apache.hadoop.fs.Path(uri)
        fs = root.getFileSystem(con.spark.sparkContext._jsc.hadoopConfiguration())
        if not fs.exists(root) or not fs.getFileStatus(root).isDirectory():
            raise ExtractError(f"OMOP source not found or not a folder ({SPARK_SOURCES})",
                               file=uri)  # fmt: skip
        entries = [(str(s.getPath().getName()), str(s.getPath().toString()), bool(s.isDirectory()))
                   for s in fs.listStatus(root)]  # fmt: skip
    except ExtractError:
        raise
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        raise ExtractError(f"cannot be listed ({redact(exc)})", file=uri) from None
    found: dict[str, str] = {}
    for name, location, is_dir in sorted(entries):
        stem, _, ext = name.lower().partition(".")
        if stem not in CDM_COLUMNS or not (
            ext in ("csv", "parquet", "tsv") or (is_dir and not ext)
        ):
            continue
        if stem in found:
            raise ExtractError(f"two entries for table {stem}", file=location)
        found[stem] = location
    return found
