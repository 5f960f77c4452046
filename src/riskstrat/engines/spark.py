"""Apache Spark sessions for riskstrat: one place that knows how Spark is started.

``--engine spark`` runs validate, features, predict, score and cohorts on Spark. Locally the
session runs in this process's JVM (``local[*]``, Java 17); on a platform it is whatever
``spark_master`` names. PySpark is an optional dependency (the ``spark`` extra, installed by
``make install``): nothing here imports it until a session is asked for.

Spark's shuffle and spill files hold personal data, like DuckDB's spill files: they are kept
under the riskstrat home (``spark-tmp``) and deleted when the session stops.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from riskstrat.config import Settings, get_settings
from riskstrat.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

_log = logging.getLogger(__name__)

#: Anything that looks like an NHS number (or other long digit run) is removed from Spark's
#: messages, which can quote the values a query failed on.
_DIGIT_RUN = re.compile(r"\d[\d \-]{7,}\d")


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:  # pragma: no cover - the extra is part of make install
        raise ConfigError(
            "the Spark engine needs PySpark, which is not installed",
            hint="install riskstrat with its spark extra (make install does), or use "
            "--engine duckdb",
        ) from None
    return pyspark.sql


def spark_conf(settings: Settings, local_dir: Path) -> dict[str, str]:
    """The configuration riskstrat starts Spark with (see docs/scale.md for each)."""
    log4j = resources.files("riskstrat.engines").joinpath("log4j2.properties")
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": "riskstrat",
        "spark.driver.memory": settings.spark_driver_memory,
        # A run's scores come to the driver to be published (one ICB's people); the default
        # 1 GB cap on a result is below what a million people's reasons take.
        "spark.driver.maxResultSize": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        # Dates are calendar dates: never shifted by the machine's time zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(local_dir),
        # The features query joins a few thousand rows of index dates and registrations;
        # broadcasting small sides keeps the event tables from being shuffled twice.
        "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
        "spark.sql.adaptive.enabled": "true",
        # A JVM out of memory exits rather than runs on: an OutOfMemoryError in a thread
        # that fetches task results loses them and leaves the job waiting for ever (seen
        # at 3.6 million people with an 8 GB driver), where an exit fails the run at once.
        "spark.driver.extraJavaOptions": (
            f"-Dlog4j2.configurationFile=file:{log4j} -XX:+ExitOnOutOfMemoryError"
        ),
    }
    if settings.spark_master.startswith("local"):
        # Local mode serves nobody else: the driver listens on the loopback address only.
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    return conf


def _running_session(sql: Any) -> SparkSession | None:
    """The process's running session where this thread has none active. py4j can serve a
    Python thread from a new JVM thread, whose active session is unset; building a session
    then would take over the running one (its settings overwritten) and stop it at the end
    of the block, under whoever started it."""
    from pyspark.errors import PySparkRuntimeError

    try:
        return cast("SparkSession", sql.SparkSession.active())
    except PySparkRuntimeError:  # no session at all
        return None


@contextmanager
def spark_session(settings: Settings | None = None) -> Iterator[SparkSession]:
    """A Spark session configured for riskstrat, stopped (and its scratch files deleted) at
    the end of the block. Within one process a session is reused when one is active: Spark
    allows one per JVM."""
    settings = settings or get_settings()
    sql = _pyspark()
    active = sql.SparkSession.getActiveSession() or _running_session(sql)
    if active is not None:
        yield active
        return
    local_dir = settings.home / "spark-tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    local_dir.mkdir(parents=True, exist_ok=True)
    # Python workers run this interpreter, so they see the same packages (the model, numba).
    _quiet_pandas_notices()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = sql.SparkSession.builder
    for key, value in spark_conf(settings, local_dir).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        shutil.rmtree(local_dir, ignore_errors=True)
        raise ConfigError(
            f"Spark did not start ({redact(exc)})",
            hint="the Spark engine needs Java 17 (java -version) and PySpark; check "
            "RISKSTRAT_SPARK_MASTER",
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        shutil.rmtree(local_dir, ignore_errors=True)


#: Rows brought to the driver in one collect by ``to_pandas_in_slices``.
COLLECT_ROWS = 400_000


def to_pandas_in_slices(
    frame: DataFrame, *, key: str, rows: int | None = None, max_rows: int | None = None
) -> pd.DataFrame:
    """``frame.toPandas()`` a slice at a time, so that the driver's JVM never holds more than
    about ``max_rows`` (default ``COLLECT_ROWS``) rows of results: a collect holds every
    task's result in the JVM heap before handing it to Python, and a million people's
    reasons are gigabytes.

    ``frame`` should be persisted (each slice reads it again); ``key`` is a column whose hash
    spreads rows evenly over the slices (an identifier); ``rows``, its row count, if known.
    The slices are concatenated in slice order: sort the result if order matters."""
    import pandas as pd
    from pyspark.sql import functions as F

    total = frame.count() if rows is None else rows
    slices = max(1, -(-total // (max_rows or COLLECT_ROWS)))
    if slices == 1:
        return frame.toPandas()
    bucket = F.pmod(F.xxhash64(F.col(key)), F.lit(slices))
    parts = [frame.where(bucket == i).toPandas() for i in range(slices)]
    return pd.concat(parts, ignore_index=True)


def spark_scratch(spark: SparkSession) -> Path:
    """The driver's scratch folder for files of a run (``spark.local.dir``, which
    ``spark_session`` makes private to the run and deletes at its end); the system's temp
    folder for a session started elsewhere without one."""
    local = spark.conf.get("spark.local.dir", None)
    folder = Path(str(local).split(",")[0]) if local else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _quiet_pandas_notices() -> None:
    """PySpark 4.3 warns at every conversion that pandas 3 is "not fully supported", and
    pandas 3 that PySpark passes a deprecated ``copy``; the conversions riskstrat makes are
    checked value for value against the embedded path (tests/engines), so the notices are
    noise for users."""
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module="pyspark")


def is_spark_error(exc: BaseException) -> bool:
    """An error from Spark's JVM (PySpark's exceptions, or py4j's)."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:  # pragma: no cover - only reached with PySpark installed
        return False
    return isinstance(exc, (PySparkException, Py4JError))


def redact(exc: BaseException) -> str:
    """The first line of a Spark error with long digit runs (possible NHS numbers) removed."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return _DIGIT_RUN.sub("[digits removed]", first)[:300]
