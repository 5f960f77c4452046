"""Read and validate an extract on Apache Spark, with the same result as DuckDB's.

``validate_extract_spark`` is ``riskstrat.data.extract.validate_extract`` for the Spark engine:
on the same extract folder it gives the same clean tables (every row and value, the same
column types), the same ``ValidationSummary``, a byte-identical rejects file and the same
``ExtractError`` for a folder that cannot be used. Nothing is restated for Spark:

* the folder's structure (manifest, files, columns, Parquet types, the CSV scan) is checked
  by ``read_structure``, the engine-neutral code DuckDB's path runs;
* the rules are ``riskstrat.data.rules``' SQL (``parsed_sql``, ``broken_sql``, ``clean_sql``,
  ``clean_rows_sql``) run through ``riskstrat.engines.dialect.to_spark``;
* the rejects, few, are collected to the driver and counted and written by the rules'
  own ``count_rejects`` and ``write_rejects`` (an in-memory DuckDB holds them), so the counts
  and the file are DuckDB's by construction.

Row numbers are exact, as the rejects file needs them:

* Parquet: Spark's hidden ``_metadata.row_index`` is the row's place in the file.
* CSV: Spark has no line numbers, so each file is read with ``multiLine`` (a CSV record may
  hold line breaks in quoted fields), which makes the file one partition read from start to
  end; its records are numbered in that order (``monotonically_increasing_id`` is the
  position in the one partition, and every read checks that the numbers are exactly
  1..n). The trade-off: one task reads a whole file, so a single 50-million-row CSV is not
  read in parallel (the five tables are). Parquet, split by row groups, has no such limit
  and is the format to prefer at scale.
* Malformed CSV records (too many or too few fields) are told apart by Spark's corrupt-record
  column (PERMISSIVE mode sets it for any record whose field count differs from the header's),
  rejected as ``malformed_row`` under their record number, as DuckDB numbers them.

The clean tables are temp views under their contract names, each hash-partitioned by NHS
number (``spark.sql.shuffle.partitions`` parts, the same for every table, so joins on the
person need no further shuffle), persisted (memory, then disk) and materialised before this
returns, so later queries read the cache rather than
read and check the files again. ``SparkExtract.close`` drops the views and the caches.

PySpark is imported lazily: this module costs nothing to import without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from riskstrat.data.contract import TABLE_ORDER, TABLES, Table
from riskstrat.data.errors import ExtractError
from riskstrat.data.extract import ValidationSummary, check_reject_share, read_structure
from riskstrat.data.files import CsvScan
from riskstrat.data.manifest import FileFormat, Manifest
from riskstrat.data.rules import (
    broken_sql,
    clean_rows_sql,
    clean_sql,
    count_rejects,
    load_rejects,
    parsed_sql,
    split_broken,
    write_rejects,
)
from riskstrat.data.structure import check_row_count, reconcile_rows
from riskstrat.engines.dialect import to_spark
from riskstrat.engines.hadoop_fs import hadoop_files, is_uri
from riskstrat.engines.spark import is_spark_error, redact, spark_scratch

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkExtract", "validate_extract_spark"]

#: Spark's corrupt-record column: set for a CSV record whose field count is not the header's.
_MALFORMED = "_riskstrat_malformed_record"


@dataclass
class SparkExtract:
    """A validated extract on Spark: the clean, typed contract tables as temp views of
    ``spark`` under their contract names (persisted), and what validation found."""

    spark: SparkSession
    summary: ValidationSummary
    #: The persisted clean table behind each view.
    tables: dict[str, DataFrame] = field(default_factory=dict)

    @property
    def extract_date(self) -> date:
        return self.summary.manifest.extract_date

    def table(self, name: str) -> DataFrame:
        """The clean table ``name`` (also ``spark.table(name)``)."""
        return self.tables[name]

    def close(self) -> None:
        """Drop the views and free their caches."""
        for name, frame in self.tables.items():
            self.spark.catalog.dropTempView(name)
            frame.unpersist()
        self.tables.clear()

    def __enter__(self) -> SparkExtract:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate_extract_spark(
    spark: SparkSession,
    extract_dir: Path | str,
    *,
    max_reject_share: float = 0.01,
    rejects_path: Path | None = None,
) -> SparkExtract:
    """Validate an extract folder on Spark and register its clean rows as temp views.

    Args, returns and raises as ``riskstrat.data.extract.validate_extract`` (with a
    ``SparkExtract`` in place of a DuckDB ``Extract``); the views and caches are dropped
    again when it raises. ``extract_dir`` may also be a URI Spark reads (``s3a://``,
    ``abfss://``, ``gs://``, ``hdfs://``, ``file://``): its structure is then checked
    through the session's own Hadoop file system (``riskstrat.engines.hadoop_fs``).
    """
    if is_uri(extract_dir):
        folder = read_structure(
            extract_dir, hadoop_files(spark, str(extract_dir)), scratch=spark_scratch(spark)
        )
    else:
        folder = read_structure(extract_dir)
    work = _Work(spark)
    try:
        rows_read: dict[str, int] = {}
        found: list[pd.DataFrame] = []
        for name in TABLE_ORDER:
            path, fmt = folder.files[name]
            rows_read[name] = _load_table(
                work,
                TABLES[name],
                path,
                fmt,
                folder.headers[name],
                folder.manifest,
                folder.scans.get(name),
                found,
            )
            check_row_count(folder.manifest, name, path, rows_read[name])
        con = duckdb.connect(":memory:")
        try:
            load_rejects(con, pd.concat(found, ignore_index=True))
            rule_counts, rows_rejected = count_rejects(con)
            summary = folder.summary(rows_read, rows_rejected, rule_counts)
            if rejects_path is not None:
                write_rejects(con, rejects_path)
                summary.rejects_path = rejects_path
        finally:
            con.close()
        check_reject_share(summary, max_reject_share)
        extract = SparkExtract(spark=spark, summary=summary, tables=work.keep())
        work.release()
        return extract
    except BaseException:
        work.release()
        raise


class _Work:
    """The temp views and caches one validation makes, so that all of them are dropped
    again, except the clean tables handed back (``keep``)."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        #: Every clean table is hashed into this many partitions by NHS number, the same
        #: for all, so that the feature queries join a person's events where they lie: the
        #: event tables are shuffled once, here, not once per join.
        self.partitions = int(str(spark.conf.get("spark.sql.shuffle.partitions")))
        self.views: dict[str, DataFrame] = {}
        self.cached: list[DataFrame] = []
        self.clean: dict[str, DataFrame] = {}

    def sql(self, duckdb_sql: str) -> DataFrame:
        return self.spark.sql(to_spark(duckdb_sql))

    def view(self, name: str, frame: DataFrame) -> DataFrame:
        frame.createOrReplaceTempView(name)
        self.views[name] = frame
        return frame

    def persist(self, frame: DataFrame) -> DataFrame:
        from pyspark import StorageLevel

        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.cached.append(frame)
        return frame

    def drop(self, name: str) -> None:
        frame = self.views.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if frame is not None and any(frame is c for c in self.cached):
            frame.unpersist()
            self.cached = [c for c in self.cached if c is not frame]

    def keep(self) -> dict[str, DataFrame]:
        """The clean tables, no longer this validation's to drop."""
        kept = dict(self.clean)
        for name, frame in kept.items():
            self.views.pop(name, None)
            self.cached = [c for c in self.cached if c is not frame]
        self.clean.clear()
        return kept

    def release(self) -> None:
        for name in list(self.views):
            self.spark.catalog.dropTempView(name)
        for frame in self.cached:
            frame.unpersist()
        self.views.clear()
        self.cached.clear()
        self.clean.clear()


def _load_table(
    work: _Work,
    table: Table,
    path: Path | str,
    fmt: FileFormat,
    present: dict[str, str],
    manifest: Manifest,
    scan: CsvScan | None,
    found: list[pd.DataFrame],
) -> int:
    """Load one file, collect its rejects into ``found`` and register the clean table.
    Returns rows read."""
    name = table.name
    known = [c.name for c in table.columns if c.name in present]
    try:
        if fmt == "csv":
            assert scan is not None
            raw, malformed = _read_csv(work, name, path, list(present), known, scan)
        else:
            raw, malformed = _read_parquet(work.spark, path, known), []
        if malformed:
            found.append(
                pd.DataFrame(
                    {
                        "table_name": name,
                        "row_number": pd.Series(malformed, dtype="int64"),
                        "column_name": "*",
                        "rule": "malformed_row",
                    }
                )
            )
        work.view(f"_raw_{name}", raw)
        sql = parsed_sql(table, present, manifest.identifier_kind, manifest.extract_date)
        parsed = work.sql(sql)
        if name == "patients":
            # Every later table joins the patients as read.
            parsed = work.persist(parsed)
        work.view(f"_parsed_{name}", parsed)
        work.view(
            f"_bad_{name}", work.persist(work.sql(f"SELECT * FROM _parsed_{name} WHERE _bad"))
        )
        broken = work.sql(broken_sql(table, manifest.identifier_kind)).collect()
        found.append(split_broken(name, [(r[0], r[1]) for r in broken]))
        bad = len(broken)
        work.view(f"_clean_{name}", work.sql(clean_sql(table, present)))
        clean = work.persist(
            work.sql(clean_rows_sql(table, any_bad=bad > 0)).repartition(
                work.partitions, "nhs_number"
            )
        )
        accepted = clean.count()
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        kind = "CSV" if fmt == "csv" else "Parquet"
        raise ExtractError(f"cannot be read as {kind} ({redact(exc)})", file=str(path)) from None
    work.view(name, clean)
    work.clean[name] = clean
    for prefix in ("_raw_", "_bad_", "_clean_", "_csv_"):
        work.drop(prefix + name)
    if name != "patients":
        work.drop(f"_parsed_{name}")
    return accepted + bad + len(malformed)


def _read_csv(
    work: _Work, name: str, path: Path | str, header: list[str], known: list[str], scan: CsvScan
) -> tuple[DataFrame, list[int]]:
    """The file's well-formed records as text (``_row`` and the contract's columns, empty
    text missing) and the record numbers of the malformed ones, after checking that every
    record of the file was read (``scan`` counted them) and numbered 1..n."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in header]
        + [T.StructField(_MALFORMED, T.StringType())]
    )
    frame = (
        work.spark.read.format("csv")
        .schema(schema)
        .options(
            header="true",
            multiLine="true",
            enforceSchema="true",
            sep=",",
            quote='"',
            escape='"',
            encoding="UTF-8",
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=_MALFORMED,
            ignoreLeadingWhiteSpace="false",
            ignoreTrailingWhiteSpace="false",
            maxCharsPerColumn="-1",
        )
        .load(str(path))
    )
    # Every column is kept (and the file read once, into the cache): a record's field count
    # is checked against the whole header, never a pruned part of it.
    records = work.persist(
        frame.select(
            (F.monotonically_increasing_id() + 1).alias("_row"),
            *[F.expr(f"NULLIF({_col(c)}, '')").alias(c) for c in header],
            F.col(_MALFORMED).isNotNull().alias("_malformed"),
        )
    )
    work.view(f"_csv_{name}", records)
    stats = records.agg(
        F.count(F.lit(1)),
        F.max("_row"),
        F.sort_array(F.collect_list(F.when(F.col("_malformed"), F.col("_row")))),
    ).first()
    assert stats is not None
    total, last, malformed = int(stats[0]), stats[1], [int(r) for r in stats[2]]
    reconcile_rows(total, path, scan)
    if total and last != total:
        # Not one partition in file order (never expected with multiLine): numbers would
        # not be the file's.
        raise ExtractError(
            "the CSV reader did not read the file as one ordered part; row numbers would "
            "not be exact",
            file=str(path),
        )
    raw = records.where(~F.col("_malformed")).select(
        "_row", *[F.col(_col(c)).alias(c) for c in known]
    )
    return raw, malformed


def _read_parquet(spark: SparkSession, path: Path | str, known: list[str]) -> DataFrame:
    """The file's rows with ``_row``, the file row number from 1."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(path))
    return frame.select(
        (F.col("_metadata.row_index") + 1).alias("_row"),
        *[F.col(_col(c)).alias(c) for c in known],
    )


def _col(name: str) -> str:
    """A column name quoted for Spark SQL."""
    return "`" + name.replace("`", "``") + "`"
