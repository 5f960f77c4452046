"""The features and labels on Apache Spark: the same SQL as DuckDB's, transpiled.

``features_sql`` and ``labels_sql`` are written once (DuckDB's dialect) and run on Spark
through ``riskstrat.engines.dialect.to_spark``; nothing here restates a feature. The contract
tables are temp views in the session under their contract names (``riskstrat.data.
spark_extract`` registers them), the index dates a small temp view (``INDEX_DATES_TABLE``).

Two things differ from the embedded path, neither in the values:

* No ``ORDER BY`` at the end: a total order over a national population is a global sort
  (a range shuffle of every row) that nothing downstream needs; callers that hand rows to
  people sort their own, much smaller, results.
* Every column is cast to the type DuckDB gives it (``duckdb_schema``), so a frame taken
  from Spark has the embedded path's column types as well as its values (Spark's
  ``datediff`` is an INT where DuckDB's ``date_diff`` is a BIGINT, and so on).

PySpark is imported lazily: this module costs nothing to import without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import sqlglot

from riskstrat.data.contract import TABLES
from riskstrat.data.rules import duck_type
from riskstrat.engines.dialect import to_spark
from riskstrat.features.labels import (
    DEFAULT_HORIZON_DAYS,
    EMERGENCY_ADMISSION,
    OutcomeDefinition,
    labels_sql,
)
from riskstrat.features.sql import INDEX_DATES_TABLE, features_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: DuckDB's types as Spark SQL's.
_SPARK_TYPES = {
    "BIGINT": "BIGINT",
    "INTEGER": "INT",
    "DOUBLE": "DOUBLE",
    "FLOAT": "FLOAT",
    "VARCHAR": "STRING",
    "DATE": "DATE",
    "BOOLEAN": "BOOLEAN",
    # A sum of BIGINTs; DuckDB hands it to pandas as a float64.
    "HUGEINT": "DOUBLE",
}


def _spark_type(duck: str) -> str:
    if duck.startswith("DECIMAL"):
        return duck
    if duck not in _SPARK_TYPES:
        raise ValueError(f"no Spark type is known for DuckDB's {duck}")
    return _SPARK_TYPES[duck]


@lru_cache(maxsize=16)
def duckdb_schema(sql: str) -> tuple[tuple[str, str], ...]:
    """(column, DuckDB type) of ``sql``'s result, found by describing it over empty contract
    tables (milliseconds: nothing is read)."""
    con = duckdb.connect(":memory:")
    try:
        for table in TABLES.values():
            cols = ", ".join(f'"{c.name}" {duck_type(c)}' for c in table.columns)
            con.execute(f"CREATE TABLE {table.name} ({cols})")
        con.execute(f"CREATE TABLE {INDEX_DATES_TABLE} (index_date DATE)")
        con.execute("CREATE TABLE sampled_people (nhs_number VARCHAR)")
        rows = con.execute(f"DESCRIBE {sql}").fetchall()
    finally:
        con.close()
    return tuple((str(r[0]), str(r[1])) for r in rows)


def spark_sql(sql: str) -> str:
    """``sql`` for Spark, with no top-level ``ORDER BY`` and each column cast to its DuckDB
    type (see the module's docstring)."""
    tree = sqlglot.parse_one(to_spark(sql), read="spark")
    tree.set("order", None)
    casts = ", ".join(
        f"CAST(`{name}` AS {_spark_type(kind)}) AS `{name}`" for name, kind in duckdb_schema(sql)
    )
    return f"SELECT {casts} FROM ({tree.sql(dialect='spark')}) AS q"


def register_index_dates(spark: SparkSession, index_dates: Sequence[date]) -> None:
    """The index dates as the temp view ``INDEX_DATES_TABLE``."""
    if not index_dates:
        from riskstrat.errors import UsageError

        raise UsageError("at least one index date is needed")
    rows = [(d,) for d in sorted(set(index_dates))]
    spark.createDataFrame(rows, "index_date DATE").createOrReplaceTempView(INDEX_DATES_TABLE)


def build_features_spark(spark: SparkSession, *, index_dates: Sequence[date]) -> DataFrame:
    """``features.build.build_features`` on Spark, for everyone registered and alive at each
    index date: a lazy DataFrame with the same columns, types and values (unordered)."""
    register_index_dates(spark, index_dates)
    return spark.sql(spark_sql(features_sql()))


def build_labels_spark(
    spark: SparkSession,
    *,
    index_dates: Sequence[date],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    outcome: OutcomeDefinition = EMERGENCY_ADMISSION,
    censor_codes: Sequence[str] = (),
) -> DataFrame:
    """``features.labels.build_labels`` on Spark (unordered)."""
    register_index_dates(spark, index_dates)
    sql = labels_sql(horizon_days=horizon_days, outcome=outcome, censor_codes=censor_codes)
    return spark.sql(spark_sql(sql))


def to_frame(df: DataFrame, order: Sequence[str] = ("index_date", "nhs_number")) -> pd.DataFrame:
    """A Spark result as the embedded path returns it: a pandas frame sorted by ``order``,
    with ``index_date`` as Python dates."""
    frame = df.toPandas()
    if "index_date" in frame.columns:
        frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame.sort_values(list(order), kind="stable").reset_index(drop=True)
