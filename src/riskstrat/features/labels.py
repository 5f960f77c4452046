"""The outcome at an index date: one or more emergency admissions in the horizon."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import duckdb
import pandas as pd

from riskstrat.errors import UsageError
from riskstrat.features.build import PeopleSample, sampled_people
from riskstrat.features.sql import index_sql, population_sql

DEFAULT_HORIZON_DAYS = 90


def label_window_complete(index_date: date, extract_date: date, horizon_days: int) -> bool:
    """True when ``[index_date, index_date + horizon)`` lies wholly before the extract date."""
    return index_date + timedelta(days=horizon_days) <= extract_date


def build_labels(
    con: duckdb.DuckDBPyConnection,
    *,
    index_dates: Sequence[date],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    people: Sequence[str] | PeopleSample | None = None,
) -> pd.DataFrame:
    """Outcome for everyone in the population at each index date (only ``people``, if
    given: see ``features.build_features``).

    ``label`` is 1 when an activity row with ``setting = inpatient`` and
    ``admission_method = emergency`` starts in ``[index_date, index_date + horizon_days)``:
    day 0 counts, day ``horizon_days`` does not. People who die or leave during the window
    without an admission are 0 (the extract holds activity regardless of registration).

    Returns:
        Columns ``nhs_number``, ``index_date``, ``label`` (0/1), sorted like the features.
    """
    if horizon_days <= 0:
        raise UsageError("horizon_days must be positive")
    sql = f"""
    WITH {index_sql().strip()},
    {population_sql(sampled=people is not None).strip()},
    outcome AS (
        SELECT DISTINCT pop.nhs_number, pop.index_date
        FROM pop JOIN activity a
          ON a.nhs_number = pop.nhs_number
         AND a.setting = 'inpatient' AND a.admission_method = 'emergency'
         AND a.start_date >= pop.index_date
         AND a.start_date < CAST(pop.index_date + INTERVAL {int(horizon_days)} DAY AS DATE)
    )
    SELECT pop.nhs_number, pop.index_date,
           CASE WHEN outcome.nhs_number IS NULL THEN 0 ELSE 1 END AS label
    FROM pop LEFT JOIN outcome USING (nhs_number, index_date)
    ORDER BY pop.index_date, pop.nhs_number
    """
    with sampled_people(con, people):
        frame = con.execute(sql, [list(index_dates)]).df()
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame


def outcomes_after(
    con: duckdb.DuckDBPyConnection,
    *,
    index_date: date,
    nhs_numbers: Sequence[str],
    delivered_codes: Sequence[str],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> pd.DataFrame:
    """What happened to named people in the window after an index date.

    For each person: ``admitted`` (1 if an emergency admission starts in
    ``[index_date, index_date + horizon_days)``, as ``build_labels``), and for each code in
    ``delivered_codes`` a 0/1 column ``delivered_<code>``: the intervention was recorded in
    the same window. Registration is not required: people who left are still followed.
    """
    if horizon_days <= 0:
        raise UsageError("horizon_days must be positive")
    people = pd.DataFrame({"nhs_number": pd.Series(list(nhs_numbers), dtype=str)})
    codes = [c for c in dict.fromkeys(delivered_codes)]
    for code in codes:
        if not code.replace("_", "").isalnum():
            raise UsageError(f"not an intervention code: {code!r}")
    delivered = ",\n".join(
        f"max(CASE WHEN o.code = '{c}' THEN 1 ELSE 0 END) AS delivered_{c.lower()}" for c in codes
    )
    end = f"CAST(? + INTERVAL {int(horizon_days)} DAY AS DATE)"
    con.register("_outcome_people", people)
    try:
        sql = f"""
        WITH adm AS (
            SELECT DISTINCT a.nhs_number FROM activity a
            JOIN _outcome_people p USING (nhs_number)
            WHERE a.setting = 'inpatient' AND a.admission_method = 'emergency'
              AND a.start_date >= ? AND a.start_date < {end}
        ),
        obs AS (
            SELECT o.nhs_number{", " + delivered if codes else ""}
            FROM observations o JOIN _outcome_people p USING (nhs_number)
            WHERE o.observed_on >= ? AND o.observed_on < {end}
            GROUP BY o.nhs_number
        )
        SELECT p.nhs_number,
               CASE WHEN adm.nhs_number IS NULL THEN 0 ELSE 1 END AS admitted
               {
            "".join(
                f", coalesce(obs.delivered_{c.lower()}, 0) AS delivered_{c.lower()}" for c in codes
            )
        }
        FROM _outcome_people p
        LEFT JOIN adm USING (nhs_number)
        LEFT JOIN obs USING (nhs_number)
        ORDER BY p.nhs_number
        """
        frame = con.execute(sql, [index_date, index_date, index_date, index_date]).df()
    finally:
        con.unregister("_outcome_people")
    return frame
