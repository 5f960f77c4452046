"""The outcome at an index date: one or more emergency admissions in the horizon."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import duckdb
import pandas as pd

from riskstrat.features import index_sql, population_sql

DEFAULT_HORIZON_DAYS = 90


def label_window_complete(index_date: date, extract_date: date, horizon_days: int) -> bool:
    """True when ``[index_date, index_date + horizon)`` lies wholly before the extract date."""
    return index_date + timedelta(days=horizon_days) <= extract_date


def build_labels(
    con: duckdb.DuckDBPyConnection,
    *,
    index_dates: Sequence[date],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> pd.DataFrame:
    """Outcome for everyone in the population at each index date.

    ``label`` is 1 when an activity row with ``setting = inpatient`` and
    ``admission_method = emergency`` starts in ``[index_date, index_date + horizon_days)``:
    day 0 counts, day ``horizon_days`` does not. People who die or leave during the window
    without an admission are 0 (the extract holds activity regardless of registration).

    Returns:
        Columns ``nhs_number``, ``index_date``, ``label`` (0/1), sorted like the features.
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    sql = f"""
    WITH {index_sql().strip()},
    {population_sql().strip()},
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
    frame = con.execute(sql, [list(index_dates)]).df()
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame
