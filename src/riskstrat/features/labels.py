"""The outcome at an index date: an event of the spec's outcome in the horizon.

An outcome is declared, not coded: which contract table holds the event, the date column
that dates it, and equality filters on that table's coded columns. The built-in outcomes
(``OUTCOMES``) are an emergency admission and death; a spec may name one of them or declare
its own (``OutcomeDefinition``), so a new outcome needs only a spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from riskstrat.data.contract import INTERVENTION_CODES, TABLES
from riskstrat.errors import UsageError
from riskstrat.features.build import PeopleSample, index_dates_table, sampled_people
from riskstrat.features.sql import index_sql, population_sql

DEFAULT_HORIZON_DAYS = 90


class OutcomeDefinition(BaseModel):
    """An outcome event: a row of a contract ``table`` with every ``where`` column equal to
    its value, dated by ``date_column``. The words are what cards and pages say of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    table: str
    date_column: str
    where: dict[str, str] = Field(default_factory=dict)
    noun: str = Field(description='One event, mid-sentence: "an emergency admission".')
    plural: str = Field(description='Events counted: "emergency admissions".')
    happened: str = Field(description='What people with the outcome did: "were admitted".')
    rate: str = Field(description='The observed share, in words: "admission rate".')

    @model_validator(mode="after")
    def _in_the_contract(self) -> OutcomeDefinition:
        table = TABLES.get(self.table)
        if table is None:
            raise ValueError(f"outcome table {self.table!r} is not a contract table")
        columns = {c.name: c for c in table.columns}
        date_col = columns.get(self.date_column)
        if date_col is None or date_col.kind != "date":
            raise ValueError(f"{self.table}.{self.date_column} is not a date column")
        for name, value in self.where.items():
            col = columns.get(name)
            if col is None or not col.codes:
                raise ValueError(f"outcome filter {name!r}: not a coded column of {self.table}")
            if value not in col.codes:
                raise ValueError(
                    f"outcome filter {name} = {value!r}: not one of {', '.join(col.codes)}"
                )
        return self

    @property
    def definition(self) -> str:
        """The event in the contract's words, for cards: which rows, dated by what."""
        where = "".join(f", {k} = {v}" for k, v in self.where.items())
        return f"{self.plural}: {self.table} rows{where}, dated by {self.date_column}"

    def event_sql(self) -> str:
        """``SELECT nhs_number, event_date`` of every event (values are contract codes,
        checked on load, so they are safe to inline)."""
        where = " AND ".join(f"{k} = '{v}'" for k, v in self.where.items()) or "TRUE"
        return (
            f"SELECT nhs_number, {self.date_column} AS event_date FROM {self.table} "
            f"WHERE {self.date_column} IS NOT NULL AND {where}"
        )


OUTCOMES: dict[str, OutcomeDefinition] = {
    "emergency_admission": OutcomeDefinition(
        name="emergency_admission",
        table="activity",
        date_column="start_date",
        where={"setting": "inpatient", "admission_method": "emergency"},
        noun="one or more emergency admissions",
        plural="emergency admissions",
        happened="were admitted",
        rate="admission rate",
    ),
    "death": OutcomeDefinition(
        name="death",
        table="patients",
        date_column="date_of_death",
        noun="death from any cause",
        plural="deaths",
        happened="died",
        rate="death rate",
    ),
}
EMERGENCY_ADMISSION = OUTCOMES["emergency_admission"]


def outcome_definition(value: Any) -> Any:
    """A built-in outcome's definition for its name; anything else is left to validation."""
    if isinstance(value, str):
        if value not in OUTCOMES:
            raise ValueError(
                f"unknown outcome {value!r}: name one of {', '.join(OUTCOMES)} or declare "
                "table, date_column, where, noun, plural, happened and rate"
            )
        return OUTCOMES[value]
    return value


def label_window_complete(index_date: date, extract_date: date, horizon_days: int) -> bool:
    """True when ``[index_date, index_date + horizon)`` lies wholly before the extract date."""
    return index_date + timedelta(days=horizon_days) <= extract_date


def build_labels(
    con: duckdb.DuckDBPyConnection,
    *,
    index_dates: Sequence[date],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    people: Sequence[str] | PeopleSample | None = None,
    outcome: OutcomeDefinition = EMERGENCY_ADMISSION,
    censor_codes: Sequence[str] = (),
) -> pd.DataFrame:
    """Outcome for everyone in the population at each index date (only ``people``, if
    given: see ``features.build_features``).

    ``label`` is 1 when an ``outcome`` event (by default an activity row with ``setting =
    inpatient`` and ``admission_method = emergency``) is dated in ``[index_date, index_date +
    horizon_days)``: day 0 counts, day ``horizon_days`` does not. People who die or leave
    during the window without the event are 0 (the extract holds activity and deaths
    regardless of registration).

    With ``censor_codes`` (intervention codes), a ``censored`` column is 1 where one of
    them is recorded in the window before the first outcome event (or with none): from then
    on the outcome is that of a person the service reached, not the risk the model is meant
    to estimate (``training.post_intervention: censor``).

    Returns:
        Columns ``nhs_number``, ``index_date``, ``label`` (0/1), and ``censored`` (0/1) with
        ``censor_codes``, sorted like the features.
    """
    sql = labels_sql(
        horizon_days=horizon_days,
        sampled=people is not None,
        outcome=outcome,
        censor_codes=censor_codes,
    )
    with sampled_people(con, people), index_dates_table(con, index_dates):
        frame = con.execute(sql).df()
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame


def labels_sql(
    *,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    sampled: bool = False,
    outcome: OutcomeDefinition = EMERGENCY_ADMISSION,
    censor_codes: Sequence[str] = (),
) -> str:
    """The labels query ``build_labels`` runs (and Spark runs transpiled): index dates from
    ``INDEX_DATES_TABLE``, people from ``SAMPLE_TABLE`` with ``sampled``."""
    if horizon_days <= 0:
        raise UsageError("horizon_days must be positive")
    codes = list(dict.fromkeys(censor_codes))
    unknown = sorted(set(codes) - set(INTERVENTION_CODES))
    if unknown:
        raise UsageError(f"not intervention codes: {', '.join(unknown)}")
    end = f"CAST(pop.index_date + INTERVAL {int(horizon_days)} DAY AS DATE)"
    treated = (
        f""",
    treated AS (
        SELECT pop.nhs_number, pop.index_date, min(o.observed_on) AS first_treated
        FROM pop JOIN observations o
          ON o.nhs_number = pop.nhs_number
         AND o.code IN ({", ".join(f"'{c}'" for c in codes)})
         AND o.observed_on >= pop.index_date AND o.observed_on < {end}
        GROUP BY pop.nhs_number, pop.index_date
    )"""
        if codes
        else ""
    )
    censored = (
        """,
           CASE WHEN treated.first_treated IS NOT NULL
                 AND (outcome.first_event IS NULL OR treated.first_treated < outcome.first_event)
                THEN 1 ELSE 0 END AS censored"""
        if codes
        else ""
    )
    sql = f"""
    WITH {index_sql().strip()},
    {population_sql(sampled=sampled).strip()},
    events AS ({outcome.event_sql()}),
    outcome AS (
        SELECT pop.nhs_number, pop.index_date, min(e.event_date) AS first_event
        FROM pop JOIN events e
          ON e.nhs_number = pop.nhs_number
         AND e.event_date >= pop.index_date
         AND e.event_date < {end}
        GROUP BY pop.nhs_number, pop.index_date
    ){treated}
    SELECT pop.nhs_number, pop.index_date,
           CASE WHEN outcome.nhs_number IS NULL THEN 0 ELSE 1 END AS label{censored}
    FROM pop LEFT JOIN outcome USING (nhs_number, index_date)
    {"LEFT JOIN treated USING (nhs_number, index_date)" if codes else ""}
    ORDER BY pop.index_date, pop.nhs_number
    """
    return sql


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
