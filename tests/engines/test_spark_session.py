"""``spark_session`` reuses the process's running session, also from a thread whose JVM side
has no active session (py4j can serve a Python thread from a new JVM thread): it must not
take the session over with its own settings, nor stop it at the end of its block."""

from __future__ import annotations

import pytest

from riskstrat.config import Settings
from riskstrat.engines.spark import spark_session

pytestmark = pytest.mark.spark


def test_a_running_session_is_reused_and_left_running(spark, tmp_path):
    spark._jvm.SparkSession.clearActiveSession()  # this thread's JVM side forgets it
    try:
        with spark_session(Settings(home=tmp_path, spark_shuffle_partitions=8)) as inner:
            assert inner is spark
            assert inner.conf.get("spark.sql.shuffle.partitions") == "4"  # the fixture's
        assert spark.range(3).count() == 3  # still running
    finally:
        spark._jvm.SparkSession.setActiveSession(spark._jsparkSession)
    with spark_session(Settings(home=tmp_path)) as again:  # the ordinary case
        assert again is spark
