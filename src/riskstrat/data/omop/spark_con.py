"""The OMOP importer's SQL on Apache Spark: the part of DuckDB's connection the importer uses.

The importer's SQL is written once, in DuckDB's dialect (mapping.py, vocab.py, report.py,
source.py). ``SparkConnection`` runs the same statements on a Spark session, each query
through ``riskstrat.engines.dialect.to_spark``; nothing is restated for Spark. The statements
it knows besides queries:

* ``CREATE [OR REPLACE] TEMP TABLE name AS query``: the query's result, computed now and
  checkpointed (its lineage cut, as DuckDB's temp table is a copy: without that, a report
  query over a chain of them took minutes to plan), as the temp view ``name``;
* ``CREATE [OR REPLACE] TEMP VIEW name AS query``: a temp view, not persisted;
* ``DROP TABLE|VIEW [IF EXISTS] name``;
* ``DESCRIBE name``: (column, type) rows;
* ``COPY (query) TO 'file.parquet' (...)``: the result as one Parquet file at that path,
  written by Spark's writer (one task: the extract's files are single files) and moved
  into place;
* ``register(name, frame)`` / ``unregister(name)``: a pandas frame or Arrow table as a view.
  The frame goes through an in-memory DuckDB on its way, so Spark sees the column types
  DuckDB's import sees.

``?`` parameters are written into the text as SQL literals before the text is transpiled.

Spark's errors are re-raised without their detail beyond the first line, from which long
digit runs (possible NHS numbers) are removed.
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pandas as pd

from riskstrat.engines.dialect import to_spark
from riskstrat.engines.spark import is_spark_error, redact
from riskstrat.errors import RiskstratError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class Result(Protocol):
    """What the importer reads from a statement's result."""

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def df(self) -> pd.DataFrame: ...


class Connection(Protocol):
    """The part of ``duckdb.DuckDBPyConnection`` the importer uses (``SparkConnection``
    gives the same on Spark)."""

    def execute(self, query: str, parameters: object = None) -> Result: ...

    def register(self, view_name: str, python_object: object) -> object: ...

    def unregister(self, view_name: str) -> object: ...

    def close(self) -> None: ...


class SparkSqlError(RiskstratError):
    """Spark could not run one of the importer's statements."""


_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_CREATE = re.compile(
    rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TEMP(?:ORARY)?\s+(TABLE|VIEW)\s+{_NAME}\s+AS\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DROP = re.compile(
    rf"^\s*DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?{_NAME}\s*;?\s*$", re.IGNORECASE
)
_DESCRIBE = re.compile(rf"^\s*DESCRIBE\s+{_NAME}\s*;?\s*$", re.IGNORECASE)
_COPY = re.compile(
    r"^\s*COPY\s*\((.*)\)\s*TO\s*'((?:[^']|'')*)'\s*(?:\((.*)\))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


class SparkResult:
    """A query's result, computed when read (one Spark action)."""

    def __init__(self, frame: DataFrame | None, rows: list[tuple[Any, ...]] | None = None):
        self._frame = frame
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            if self._frame is None:
                return []
            frame = self._frame
            self._rows = _run(lambda: [tuple(r) for r in frame.collect()])
        return self._rows

    def df(self) -> pd.DataFrame:
        if self._frame is None:
            return pd.DataFrame()
        frame = self._frame
        result: pd.DataFrame = _run(frame.toPandas)
        return result


class SparkConnection:
    """Runs the importer's DuckDB SQL on ``spark`` (see the module docstring). ``close``
    drops the temp views it made and frees their caches; the session stays open."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self._views: dict[str, DataFrame] = {}
        self._cached: dict[str, DataFrame] = {}

    # -- the DuckDB connection API ---------------------------------------------------------

    def execute(self, query: str, parameters: object = None) -> SparkResult:
        sql = bind_parameters(query, parameters)
        if m := _CREATE.match(sql):
            kind, name, body = m.group(1).upper(), m.group(2), m.group(3)
            frame = self.sql(body)
            self.view(name, frame, persist=kind == "TABLE")
            return SparkResult(None)
        if m := _DROP.match(sql):
            self.drop(m.group(1))
            return SparkResult(None)
        if m := _DESCRIBE.match(sql):
            frame = self.spark.table(m.group(1))
            return SparkResult(None, [(n, t, "YES") for n, t in frame.dtypes])
        if m := _COPY.match(sql):
            options = (m.group(3) or "").lower()
            if "parquet" not in options:
                raise SparkSqlError("the Spark engine writes COPY ... TO as Parquet only")
            self.write_parquet(self.sql(m.group(1)), Path(m.group(2).replace("''", "'")))
            return SparkResult(None)
        return SparkResult(self.sql(sql))

    def register(self, view_name: str, python_object: object) -> SparkConnection:
        """A pandas frame or Arrow table as the view ``view_name`` (read through an in-memory
        DuckDB, so the column types are those DuckDB gives the same frame)."""
        with duckdb.connect() as local:
            local.register("frame", python_object)
            table = local.sql("SELECT * FROM frame").to_arrow_table()
        frame = _run(lambda: self.spark.createDataFrame(table))
        self.view(view_name, frame, persist=False)
        return self

    def unregister(self, view_name: str) -> SparkConnection:
        self.drop(view_name)
        return self

    def close(self) -> None:
        for name in list(self._views):
            self.drop(name)

    # -- Spark-side helpers ----------------------------------------------------------------

    def sql(self, duckdb_sql: str) -> DataFrame:
        """A DataFrame for a DuckDB query (planned now, computed when read)."""
        frame: DataFrame = _run(lambda: self.spark.sql(to_spark(duckdb_sql)))
        return frame

    def view(self, name: str, frame: DataFrame, *, persist: bool) -> None:
        """``frame`` as the temp view ``name``, replacing (and freeing) any before it. A
        persisted frame is computed now and its lineage cut (a checkpoint: in the session's
        checkpoint directory where one is set, else on the executors), as DuckDB's temp
        table is a copy: queries over a chain of them stay small to plan."""
        old = self._cached.pop(name, None)
        if persist:
            checkpointed = self.spark.sparkContext.getCheckpointDir() is not None
            frame = _run(
                lambda: (
                    frame.checkpoint(eager=True)
                    if checkpointed
                    else frame.localCheckpoint(eager=True)
                )
            )
            self._cached[name] = frame
        frame.createOrReplaceTempView(name)
        self._views[name] = frame
        if old is not None:
            old.unpersist()

    def cache(self, name: str, frame: DataFrame) -> None:
        """``frame`` kept (memory, then disk) as the temp view ``name``, computed when first
        read."""
        from pyspark import StorageLevel

        self.drop(name)
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached[name] = frame
        frame.createOrReplaceTempView(name)
        self._views[name] = frame

    def drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self._views.pop(name, None)
        cached = self._cached.pop(name, None)
        if cached is not None:
            cached.unpersist()

    def columns(self, name: str) -> list[str]:
        return list(self.spark.table(name).columns)

    def write_parquet(self, frame: DataFrame, path: Path) -> None:
        """``frame`` as the single Parquet file ``path`` (zstd), rows in the frame's order."""
        staging = path.parent / f".{path.name}.spark-{uuid.uuid4().hex[:8]}"
        try:
            _run(
                lambda: (
                    frame.coalesce(1)
                    .write.option("compression", "zstd")
                    .mode("overwrite")
                    .parquet(str(staging.resolve()))
                )
            )
            parts = sorted(staging.glob("part-*.parquet"))
            if len(parts) != 1:
                raise SparkSqlError(f"Spark wrote {len(parts)} files for {path.name}, not one")
            parts[0].replace(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _run(action: Any) -> Any:
    """``action()``, with a Spark error re-raised redacted."""
    try:
        return action()
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        raise SparkSqlError(f"Spark could not run the import's SQL ({redact(exc)})") from None


def bind_parameters(sql: str, parameters: object) -> str:
    """``sql`` with each ``?`` (outside quotes) replaced by the next parameter as a literal."""
    if parameters is None:
        return sql
    if not isinstance(parameters, (list, tuple)):
        raise SparkSqlError("the Spark engine binds positional (?) parameters only")
    values = iter(parameters)
    out: list[str] = []
    for i, part in enumerate(re.split(r"('(?:[^']|'')*')", sql)):
        if i % 2:
            out.append(part)
            continue
        pieces = part.split("?")
        for j, piece in enumerate(pieces):
            out.append(piece)
            if j < len(pieces) - 1:
                try:
                    out.append(_literal(next(values)))
                except StopIteration:
                    raise SparkSqlError("fewer parameters than ? in the SQL") from None
    if next(values, _END) is not _END:
        raise SparkSqlError("more parameters than ? in the SQL")
    return "".join(out)


_END = object()


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise SparkSqlError(f"cannot bind a {type(value).__name__} parameter")
