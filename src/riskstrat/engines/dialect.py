"""One SQL, two engines: the DuckDB SQL riskstrat writes, transpiled for Spark SQL.

Features, labels, the contract's rules and the cohort windows are written once, in DuckDB's
dialect, and run there as written. For Spark the same text goes through sqlglot
(``to_spark``), which rewrites the functions whose names or argument orders differ
(``date_diff('day', a, b)`` -> ``DATEDIFF(DAY, a, b)``, ``arg_max`` -> ``MAX_BY``,
``regexp_full_match`` -> ``RLIKE`` anchored, ``{'k': v}`` -> ``STRUCT(v AS k)``, ``VARCHAR``
-> ``STRING`` ...). The SQL avoids what has no Spark form (``SELECT * EXCLUDE``, ``unnest`` of
a list parameter, ``date_sub('year', ...)``); ``to_spark`` refuses text that still holds any of
it, so a new query cannot quietly produce a second, hand-written Spark copy.

Where the two engines' functions differ in meaning, not only in name, the difference is
settled here and tested in both engines (tests/engines/test_dialect.py):

* ``round(x, n)`` on a double: DuckDB rounds the binary value half away from zero, Spark
  rounds its shortest decimal text half up; ``round_half_up`` writes one form both engines
  compute alike.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp

from riskstrat.errors import RiskstratError

#: DuckDB-only constructs with no Spark SQL form (see the module's docstring).
_NOT_PORTABLE = {
    "EXCLUDE": re.compile(r"\*\s+EXCLUDE\b", re.IGNORECASE),
    "unnest": re.compile(r"\bunnest\s*\(", re.IGNORECASE),
    "date_sub with a part": re.compile(r"\bdate_sub\s*\(\s*'", re.IGNORECASE),
    "a $parameter": re.compile(r"\$[a-z_]+", re.IGNORECASE),
    "a DuckDB macro": re.compile(r"\bnhs_check_digit_ok\s*\(", re.IGNORECASE),
}


class NotPortableError(RiskstratError):
    """SQL that would need a second, hand-written copy for Spark."""


def check_portable(sql: str) -> None:
    """Refuse SQL that holds a DuckDB-only construct (``_NOT_PORTABLE``)."""
    text = _strip_comments_and_strings(sql)
    for what, pattern in _NOT_PORTABLE.items():
        if pattern.search(text):
            raise NotPortableError(f"this SQL uses {what}, which Spark SQL has no form of")


def _strip_comments_and_strings(sql: str) -> str:
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


@lru_cache(maxsize=256)
def to_spark(sql: str) -> str:
    """``sql`` (DuckDB's dialect) as Spark SQL."""
    check_portable(sql)
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = tree.transform(_spark_fixes)
    return tree.sql(dialect="spark")


def _spark_fixes(node: exp.Expression) -> exp.Expression:
    """Rewrites sqlglot does not make on its own (tests/engines/test_dialect_rules.py runs
    each in both engines):

    * ``regexp_full_match(x, p)``, which Spark lacks, is ``x RLIKE '^(?:p)\\z'``: anchored
      at the very end (Java's ``$`` would also match before a final line break, which
      DuckDB's full match does not).
    * ``isfinite(x)``, which Spark lacks, is ``NOT isnan(x) AND abs(x) <> 'Infinity'`` (NULL
      for NULL, as in DuckDB).
    """
    if isinstance(node, exp.RegexpFullMatch):
        pattern = node.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string:
            anchored: exp.Expression = exp.Literal.string(f"^(?:{pattern.this})\\z")
        else:
            anchored = exp.Concat(
                expressions=[exp.Literal.string("^(?:"), pattern, exp.Literal.string(")\\z")]
            )
        return exp.RegexpLike(this=node.this, expression=anchored)
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "isfinite":
        (value,) = node.expressions
        infinity = exp.cast(exp.Literal.string("Infinity"), exp.DataType.Type.DOUBLE)
        return exp.paren(
            exp.and_(
                exp.not_(exp.func("isnan", value.copy())),
                exp.NEQ(this=exp.func("abs", value.copy()), expression=infinity),
            )
        )
    return node


def round_half_up(value: str, digits: int) -> str:
    """``value`` rounded to ``digits`` decimals, half away from zero, computed alike in
    DuckDB and Spark: the double is first taken to a decimal with 10 more digits than kept
    (exact for every value riskstrat rounds: rates and fractions well below 10^18)."""
    return f"CAST(round(CAST({value} AS DECIMAL(38, {digits + 10})), {digits}) AS DOUBLE)"
