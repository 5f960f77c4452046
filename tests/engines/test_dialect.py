"""The DuckDB-to-Spark bridge: the SQL is written once and transpiled; what would need a
second copy is refused; where the engines' functions differ in meaning, the form both
compute alike is checked in both engines."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from riskstrat.cohorts.select import load_cohort_config
from riskstrat.cohorts.sql import cohort_sql
from riskstrat.engines.dialect import NotPortableError, check_portable, round_half_up, to_spark
from riskstrat.features.labels import OUTCOMES, labels_sql
from riskstrat.features.sql import _AGE_SQL, features_sql

#: Counts of events over days of record, and deficits over 36: what the features round.
_ROUNDED = (
    f"SELECT k, d, {round_half_up('CAST(k AS DOUBLE) * 365 / greatest(d, 30)', 4)} AS rate, "
    f"{round_half_up('CAST(k % 24 AS DOUBLE) / 36', 4)} AS efi FROM t"
)
_AGES = (
    f"SELECT dob, idx, {_AGE_SQL.replace('p.date_of_birth', 'dob').replace('i.index_date', 'idx')}"
    " AS age FROM t"
)


def _count_grid() -> pd.DataFrame:
    k = np.repeat(np.arange(0, 60), 4000 - 30)
    return pd.DataFrame({"k": k, "d": np.tile(np.arange(30, 4000), 60)})


def _date_grid() -> pd.DataFrame:
    births = [date(1920, 1, 1) + timedelta(days=int(i)) for i in range(0, 36500, 7)]
    births += [date(2000, 2, 29), date(1996, 2, 29), date(1999, 12, 31), date(2001, 3, 1)]
    months = [date(y, m, 1) for y in (2000, 2001, 2024, 2026) for m in range(1, 13)]
    rows = [(b, i) for b in births for i in months if b <= i]
    return pd.DataFrame(rows, columns=["dob", "idx"])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * EXCLUDE (a) FROM t",
        "SELECT unnest(?) FROM t",
        "SELECT date_sub('year', a, b) FROM t",
        "SELECT a FROM t WHERE b = $x",
        "SELECT nhs_check_digit_ok(a) FROM t",
    ],
)
def test_duckdb_only_constructs_are_refused(sql):
    with pytest.raises(NotPortableError):
        check_portable(sql)
    with pytest.raises(NotPortableError):
        to_spark(sql)


def test_every_query_the_spark_engine_runs_transpiles():
    config = load_cohort_config(None)
    queries = [
        features_sql(),
        labels_sql(censor_codes=("FALLS_ASSESSMENT",)),
        labels_sql(horizon_days=365, outcome=OUTCOMES["death"]),
        *(cohort_sql(i, source="s", ranking_column="r") for i in config.interventions.values()),
    ]
    for sql in queries:
        spark = to_spark(sql)
        assert "EXCLUDE" not in spark and "$" not in spark
        assert "MAX_BY" in spark or "ROW_NUMBER" in spark or "label" in spark


def test_age_in_years_is_duckdbs_completed_years():
    con = duckdb.connect()
    con.register("t", _date_grid())
    ours = con.execute(_AGES).df()
    theirs = con.execute("SELECT date_sub('year', dob, idx) AS age FROM t").df()
    assert (ours["age"].to_numpy() == theirs["age"].to_numpy()).all()


def test_round_half_up_rounds_ties_away_from_zero_in_duckdb():
    con = duckdb.connect()
    con.register("t", _count_grid())
    rounded = con.execute(_ROUNDED).df().set_index(["k", "d"])
    # 51 admissions over 4,000 days is 4.65375 a year: a tie, rounded up.
    assert rounded.loc[(51, 3999), "rate"] == round(51 * 365 / 3999, 4)
    assert con.execute(f"SELECT {round_half_up('4.65375', 4)}").fetchall()[0][0] == 4.6538
    assert con.execute(f"SELECT {round_half_up('-0.00005', 4)}").fetchall()[0][0] == -0.0001


@pytest.mark.spark
def test_the_forms_that_differ_compute_alike_in_both_engines(spark):
    for frame, sql, keys in (
        (_count_grid(), _ROUNDED, ["k", "d"]),
        (_date_grid(), _AGES, ["dob", "idx"]),
    ):
        con = duckdb.connect()
        con.register("t", frame)
        duck = con.execute(sql).df().sort_values(keys).reset_index(drop=True)
        spark.createDataFrame(frame).createOrReplaceTempView("t")
        sparked = spark.sql(to_spark(sql)).toPandas().sort_values(keys).reset_index(drop=True)
        for column in duck.columns:
            if column in keys:
                continue
            assert (duck[column].astype(float) == sparked[column].astype(float)).all(), column
        spark.catalog.dropTempView("t")
