"""The benchmark stages on Apache Spark: features-spark and score-spark.

``riskstrat bench --engine spark`` runs these beside their DuckDB twins (``features``,
``score``), each in a child process of its own, on the same extract and model, so that a run's
report shows both engines' figures side by side:

* ``features-spark``: validate the extract on Spark (``open_spark_extract``: the clean tables
  persisted) and build one index month's features (``build_features_spark``), forced to full
  evaluation by writing every column to Spark's ``noop`` sink; the rows are then counted
  apart, untimed.
* ``score-spark``: ``run_scoring`` with ``engine="spark"``, its steps timed from its progress
  reports, publishing to a serving store of its own (``serving-spark.db``) so that it is a
  first publish of the month, as the DuckDB stage's is.

Both run Spark in local mode (``local[*]``) with the driver memory the bench is given. The
Spark session is started before the timed work and its start-up is recorded apart
(``spark_start_seconds``), as DuckDB has none. Spark's own totals (shuffle read and written,
input, tasks, cached bytes) come from the application's status store, per step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from riskstrat.bench.measure import BENCH_EXTRACT_DATE, REPEAT_BELOW_SECONDS
from riskstrat.bench.model_stages import score_with
from riskstrat.errors import MissingFileError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from riskstrat.config import Settings

#: The bench's Spark driver memory unless told: a third of a 24 GB machine.
DEFAULT_SPARK_DRIVER_MEMORY = "8g"


def spark_settings(args: dict[str, Any]) -> Settings:
    """The bench's settings for a Spark stage: local mode, the given driver memory and
    shuffle partitions, the train stage's home (its model registry) and a serving store of
    the Spark stages' own."""
    from riskstrat.config import Settings

    home = Path(args["workdir"]) / "home"
    extra: dict[str, Any] = {}
    if args.get("spark_shuffle_partitions"):
        extra["spark_shuffle_partitions"] = int(args["spark_shuffle_partitions"])
    return Settings(
        home=home,
        engine="spark",
        spark_master=str(args.get("spark_master", "local[*]")),
        spark_driver_memory=str(args.get("spark_driver_memory", DEFAULT_SPARK_DRIVER_MEMORY)),
        database_url=f"sqlite:///{home / 'serving-spark.db'}",
        **extra,
    )


def spark_totals(spark: SparkSession) -> dict[str, float]:
    """The application's totals so far, from Spark's status store (the driver's executor in
    local mode): shuffle read and written, input read, cached in memory and on disk (MB),
    tasks, task time and GC time (s). Empty where the store cannot be read."""
    try:
        executors = spark.sparkContext._jsc.sc().statusStore().executorList(True)
        totals = {
            "shuffle_read_mb": 0.0, "shuffle_write_mb": 0.0, "input_mb": 0.0,
            "cached_memory_mb": 0.0, "cached_disk_mb": 0.0, "tasks": 0.0,
            "task_seconds": 0.0, "gc_seconds": 0.0,
        }  # fmt: skip
        for i in range(executors.size()):
            e = executors.apply(i)
            totals["shuffle_read_mb"] += e.totalShuffleRead() / 1024**2
            totals["shuffle_write_mb"] += e.totalShuffleWrite() / 1024**2
            totals["input_mb"] += e.totalInputBytes() / 1024**2
            totals["cached_memory_mb"] += e.memoryUsed() / 1024**2
            totals["cached_disk_mb"] += e.diskUsed() / 1024**2
            totals["tasks"] += e.totalTasks()
            totals["task_seconds"] += e.totalDuration() / 1000
            totals["gc_seconds"] += e.totalGCTime() / 1000
    except Exception:  # figures only: a Spark without the status store gives none
        return {}
    return totals


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-step totals: cumulative counters differenced, levels (cached bytes) as they are."""
    levels = ("cached_memory_mb", "cached_disk_mb")
    return {
        key: round(value if key in levels else value - before.get(key, 0.0), 2)
        for key, value in after.items()
    }


def _spark_conf(spark: SparkSession) -> dict[str, Any]:
    conf = spark.sparkContext.getConf()
    return {
        "spark_version": spark.version,
        "master": conf.get("spark.master"),
        "driver_memory": conf.get("spark.driver.memory"),
        "shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions") or 0),
        "default_parallelism": spark.sparkContext.defaultParallelism,
    }


def stage_features_spark(args: dict[str, Any]) -> dict[str, Any]:
    """The features stage on Spark: validate, then one index month's features, every column
    computed (a ``noop`` write); run again while the runs so far take under 5 s."""
    from riskstrat.data.contract import TABLE_ORDER
    from riskstrat.engines.spark import spark_session
    from riskstrat.features.spark import build_features_spark
    from riskstrat.pipelines.common import open_spark_extract

    extract = Path(args["workdir"]) / "extract"
    if not (extract / "manifest.json").is_file():
        raise MissingFileError(
            "the features-spark stage needs the generate stage before it",
            hint="run generate first: in this run or in an earlier one with --keep",
        )
    settings = spark_settings(args)
    month = BENCH_EXTRACT_DATE.replace(day=1)
    begun = time.perf_counter()
    with spark_session(settings) as spark:
        spark_start = time.perf_counter() - begun
        at_start = spark_totals(spark)
        started = time.perf_counter()
        with open_spark_extract(settings, extract, spark) as opened:
            validated = time.perf_counter()
            after_validate = spark_totals(spark)
            partitions = {name: opened.table(name).rdd.getNumPartitions() for name in TABLE_ORDER}
            runs: list[float] = []
            while not runs or (sum(runs) < REPEAT_BELOW_SECONDS and len(runs) < 5):
                again = time.perf_counter()
                frame = build_features_spark(spark, index_dates=[month])
                frame.write.format("noop").mode("overwrite").save()
                runs.append(time.perf_counter() - again)
            after_features = spark_totals(spark)
            counted = time.perf_counter()
            people = frame.count()
            count_seconds = time.perf_counter() - counted
            columns = len(frame.columns)
        conf = _spark_conf(spark)
    validate_seconds = validated - started
    detail: dict[str, Any] = {
        "engine": "spark",
        "spark_start_seconds": round(spark_start, 2),
        "validate_seconds": round(validate_seconds, 2),
        "features_seconds": round(min(runs), 2),
        "features_runs": len(runs),
        "count_seconds": round(count_seconds, 2),
        "people": int(people),
        "columns": columns,
        "input_partitions": partitions,
        "spark": conf,
        "spark_validate": _difference(after_validate, at_start),
        "spark_features": _difference(after_features, after_validate),
    }
    return {"seconds": validate_seconds + min(runs), "rows": int(people), "detail": detail}


def stage_score_spark(args: dict[str, Any]) -> dict[str, Any]:
    """The score stage with ``engine="spark"``: validate, features, scores, reasons and
    cohorts on Spark, then publish (to the Spark stages' own serving store)."""
    from riskstrat.engines.spark import spark_session

    settings = spark_settings(args)
    begun = time.perf_counter()
    with spark_session(settings) as spark:  # run_scoring's session is this one
        spark_start = time.perf_counter() - begun
        at_start = spark_totals(spark)
        result = score_with(args, settings)
        after = spark_totals(spark)
        conf = _spark_conf(spark)
    result["detail"] = {
        "engine": "spark",
        "spark_start_seconds": round(spark_start, 2),
        **result["detail"],
        "spark": conf,
        "spark_score": _difference(after, at_start),
    }
    return result
