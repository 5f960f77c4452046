"""An intervention's cohort as SQL, for engines that hold the scores as a table (Spark).

``cohort_sql`` says in SQL what ``select.build_cohort`` does to a frame: people who meet
every requirement (any of its criteria) and were not served within the look-back, with the
keys of the criteria that held, ranked by expected benefit, risk, or another model's risk,
ties by NHS number, numbered by a window function. It is written in DuckDB's dialect and
runs on Spark through ``engines.dialect.to_spark``; tests run it in both engines against
``build_cohort`` on the same scores.
"""

from __future__ import annotations

from riskstrat.cohorts.select import _CONDITION, Condition, Intervention

#: The columns ``cohort_sql`` returns, as ``build_cohort`` does.
COHORT_SQL_COLUMNS = (
    "intervention",
    "nhs_number",
    "practice_code",
    "pcn_code",
    "risk",
    "criteria",
    "expected_benefit",
    "ranking_risk",
    "expected_bed_days",
    "rank",
)


def condition_sql(condition: Condition) -> str:
    """A cohort condition as a SQL predicate that is never NULL (a missing value satisfies
    nothing, as in ``select.evaluate_condition``)."""
    if isinstance(condition, str):
        match = _CONDITION.match(condition)
        if match is None:
            raise ValueError(f"not a cohort condition: {condition!r}")
        column, op, number = match.groups()
        sql_op = {"==": "=", "!=": "<>"}.get(op, op)
        return f"coalesce(CAST({column} AS DOUBLE) {sql_op} CAST({number} AS DOUBLE), false)"
    ((kind, items),) = condition.items()
    joiner = " AND " if kind == "all" else " OR "
    return "(" + joiner.join(condition_sql(c) for c in items) + ")"


def cohort_sql(
    intervention: Intervention, *, source: str, ranking_column: str | None = None
) -> str:
    """The cohort of ``intervention`` from the table ``source`` (one row per person: the
    scores with the criteria's columns); ``ranking_column`` holds the ``rank_by`` model's
    risk when it has a champion (else the list falls back to admission risk)."""
    requirements = [
        "(" + " OR ".join(condition_sql(c.when) for c in r.any) + ")" for r in intervention.require
    ]
    keys = list(dict.fromkeys(c.key for r in intervention.require for c in r.any))
    whens = {c.key: condition_sql(c.when) for r in intervention.require for c in r.any}
    held = ", ".join(f"CASE WHEN {whens[k]} THEN '{k}' END" for k in keys)
    days = f"CAST({intervention.served_column} AS DOUBLE)"
    served = f"{days} IS NOT NULL"
    if intervention.lookback_days is not None:
        served += f" AND {days} <= {int(intervention.lookback_days)}"
    effect = intervention.effect
    benefit = f"risk * CAST({effect!r} AS DOUBLE)" if effect is not None else "CAST(NULL AS DOUBLE)"
    ranking = ranking_column if ranking_column is not None else "CAST(NULL AS DOUBLE)"
    bed = intervention.bed_days
    bed_days = (
        f"ranking_risk * CAST({bed.per_event!r} AS DOUBLE)"
        if bed is not None
        else "CAST(NULL AS DOUBLE)"
    )
    by = "risk" if ranking_column is None else "ranking_risk"
    where = " AND ".join([*requirements, f"NOT ({served})"])
    return f"""
    SELECT '{intervention.key}' AS intervention, nhs_number, practice_code, pcn_code, risk,
           criteria, expected_benefit, ranking_risk, {bed_days} AS expected_bed_days,
           row_number() OVER (ORDER BY {by} DESC, nhs_number) AS rank
    FROM (
        SELECT nhs_number, practice_code, pcn_code, risk,
               list_filter([{held}], x -> x IS NOT NULL) AS criteria,
               {benefit} AS expected_benefit,
               CAST({ranking} AS DOUBLE) AS ranking_risk
        FROM {source}
        WHERE {where}
    ) AS eligible
    """
