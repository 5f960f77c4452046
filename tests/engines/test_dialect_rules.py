"""The rewrites ``to_spark`` makes for the contract's rules (``_spark_fixes``), run in both
engines on the same values: a full regular-expression match, ``isfinite`` and the NHS number
check digit (``riskstrat.data.rules.check_digit_sql``) give the same answer in DuckDB and
Spark, and the check digit the same as Python's."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from riskstrat.data.contract import ICD10_PATTERN, ODS_PRACTICE_PATTERN
from riskstrat.data.rules import check_digit_sql
from riskstrat.engines.dialect import to_spark
from riskstrat.nhs_number import is_valid_nhs_number

TEXTS = ["A81001", "A81001\n", "A81001\r\n", "\nA81001", "a81001", "A810011", "J44.1", "J441",
         "J44-1", "I10", "I10\n", "", None]  # fmt: skip
NUMBERS = ["1", "2.45e1", "-0.5", "nan", "inf", "-inf", "1e400", "x", None]

RULES_SQL = (
    f"SELECT v, regexp_full_match(v, '{ODS_PRACTICE_PATTERN}') AS practice, "
    f"regexp_full_match(v, '{ICD10_PATTERN}') AS icd10, "
    f"regexp_full_match(v, p) AS by_column FROM t"
)
NUMBER_SQL = "SELECT v, isfinite(TRY_CAST(v AS DOUBLE)) AS finite FROM n"


def test_full_match_and_isfinite_become_spark_functions():
    sql = to_spark(RULES_SQL + " UNION ALL " + NUMBER_SQL.replace("FROM n", ", 1, 1 FROM n"))
    assert "REGEXP_FULL_MATCH" not in sql.upper() and "ISFINITE" not in sql.upper()
    # Anchored at the very end of the text (Java's $ also matches before a last line break).
    assert "RLIKE '^(?:[A-Z][0-9]{5})\\\\z'" in sql


def _duckdb(sql: str, frames: dict[str, pd.DataFrame]) -> list[tuple]:
    con = duckdb.connect()
    for name, frame in frames.items():
        con.register(name, frame)
    rows = con.execute(sql).fetchall()
    con.close()
    return sorted(rows, key=repr)


def _spark(spark, sql: str, frames: dict[str, pd.DataFrame]) -> list[tuple]:
    for name, frame in frames.items():
        schema = ", ".join(f"{c} STRING" for c in frame.columns)
        spark.createDataFrame(frame.astype(object).where(frame.notna(), None), schema) \
            .createOrReplaceTempView(name)  # fmt: skip
    try:
        return sorted((tuple(r) for r in spark.sql(to_spark(sql)).collect()), key=repr)
    finally:
        for name in frames:
            spark.catalog.dropTempView(name)


@pytest.mark.spark
def test_rules_sql_gives_the_same_answers_in_both_engines(spark):
    texts = pd.DataFrame({"v": TEXTS, "p": [ODS_PRACTICE_PATTERN] * len(TEXTS)})
    numbers = pd.DataFrame({"v": NUMBERS})
    rng = np.random.default_rng(0)
    candidates = [f"{n:010d}" for n in rng.integers(0, 10**10, size=3000)]
    candidates += ["9990000000", "9990000001", "9998336376", "9998336377"]
    digits = pd.DataFrame({"v": candidates})
    sql = (
        f"SELECT 'rules' AS k, v, CAST(practice AS VARCHAR), CAST(icd10 AS VARCHAR), "
        f"CAST(by_column AS VARCHAR) FROM ({RULES_SQL}) "
        f"UNION ALL SELECT 'number', v, CAST(finite AS VARCHAR), NULL, NULL FROM ({NUMBER_SQL}) "
        f"UNION ALL SELECT 'digit', v, CAST({check_digit_sql('v')} AS VARCHAR), NULL, NULL FROM d"
    )
    frames = {"t": texts, "n": numbers, "d": digits}
    duck = _duckdb(sql, frames)
    assert _spark(spark, sql, frames) == duck
    by_value = {(k, v): rest for k, v, *rest in duck}
    # What the rules rely on, checked independently of either engine.
    assert by_value[("rules", "A81001")][0] == "true"
    assert by_value[("rules", "A81001\n")][0] == "false"
    assert by_value[("rules", "I10\n")][1] == "false"
    assert by_value[("rules", "J44.1")][1] == "true"
    assert {v: by_value[("number", v)][0] for v in ("1", "nan", "inf", "1e400")} == {
        "1": "true", "nan": "false", "inf": "false", "1e400": "false"
    }  # fmt: skip
    for value in candidates:
        assert (by_value[("digit", value)][0] == "true") == is_valid_nhs_number(value), value
