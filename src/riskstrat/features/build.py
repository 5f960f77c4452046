"""Point-in-time features at monthly index dates, built in DuckDB SQL.

Everything here uses only data dated strictly before the index date. Static patient fields
(date of birth, sex, deprivation, practice) are used as recorded; registration and death
dates only decide who is in the population at the index date and never become features.

The SQL sticks to constructs that Spark SQL also runs (CTEs, equi-joins with range
conditions, ``FILTER`` aggregates, interval arithmetic). DuckDB-only pieces, with their Spark
equivalents: ``date_sub('year', ...)`` (``floor(months_between(...) / 12)``), ``date_diff``
(``datediff``), ``arg_max`` (``max_by``; its ``(date, value)`` key is ``struct(...)``),
``SELECT * EXCLUDE`` (explicit columns) and
``unnest`` of the index-date list parameter (a join to an index-date table). Parameters
are DuckDB's ``$name`` (Spark SQL: ``:name`` markers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from riskstrat.data.contract import (
    CONDITIONS,
    DRUG_CLASSES,
    EVENT_CODES,
    FALLS_RISK_DRUG_CLASSES,
    MEDICINE_CURRENT_DAYS,
    STATE_CODES,
    STATE_CURRENT_MONTHS,
)

#: Identifier and context columns returned with the features (never fed to a model).
KEY_COLUMNS = ("nhs_number", "index_date")
CONTEXT_COLUMNS = ("practice_code", "pcn_code", "type1_opt_out")
#: Subgroups for audits, in the contract's groupings ("Not stated" kept as its own group).
GROUP_COLUMNS = ("sex", "age_band", "imd_quintile", "ethnic_group")
#: Facts the intervention cohorts need that are not model features: when each intervention
#: was last recorded (days before the index date; missing if never) and recent admissions.
COHORT_COLUMNS = (
    "days_since_falls_assessment",
    "days_since_medication_review",
    "days_since_advance_care_plan",
    "emergency_admissions_180d",
)

_ACTIVITY_COUNTS = {
    # feature stem: SQL condition on an activity row `a`
    "emergency_admissions": "a.setting = 'inpatient' AND a.admission_method = 'emergency'",
    "elective_admissions": "a.setting = 'inpatient' AND a.admission_method = 'elective'",
    "ae_attendances": "a.setting = 'ae'",
    "outpatient_attendances": "a.setting = 'outpatient' AND a.attended IS DISTINCT FROM false",
    "outpatient_missed": "a.setting = 'outpatient' AND a.attended = false",
    "gp_contacts": "a.setting = 'gp' AND a.attended IS DISTINCT FROM false",
    "gp_missed": "a.setting = 'gp' AND a.attended = false",
    "community_contacts": "a.setting = 'community'",
}
_WINDOWS_DAYS = (90, 365)

#: Unplanned care over the whole recorded history and in short recent windows. A person's
#: underlying tendency to be admitted shows mostly through how often they have needed
#: unplanned care, and a longer record measures it better; the rates per year of record
#: make counts comparable between people with short and long records.
UNPLANNED_HISTORY_COLUMNS = (
    "recorded_history_days",
    "emergency_admissions_ever",
    "ae_attendances_ever",
    "emergency_admissions_per_year",
    "ae_attendances_per_year",
    "emergency_admissions_30d",
    "ae_attendances_30d",
    "ae_attendances_180d",
)
#: Rates are per year of record, with at least this many days in the denominator so a new
#: registrant's single visit does not read as a huge rate.
MIN_RATE_DAYS = 30

#: Deficits of the electronic frailty index that this contract can see, each as a SQL flag
#: over the assembled feature columns. The eFI divides the count by its 36 deficits.
EFI_DEFICITS: dict[str, str] = {
    "atrial_fibrillation": "ltc_af",
    "cardiovascular_disease": "ltc_stroke_tia",
    "chronic_kidney_disease": "ltc_ckd",
    "diabetes": "ltc_diabetes",
    "heart_failure": "ltc_heart_failure",
    "hypertension": "ltc_hypertension",
    "ischaemic_heart_disease": "ltc_chd",
    "osteoporosis": "ltc_osteoporosis",
    "parkinsonism": "ltc_parkinsons",
    "peripheral_vascular_disease": "ltc_pad",
    "respiratory_disease": "greatest(ltc_copd, ltc_asthma)",
    "arthritis": "ltc_rheumatoid_arthritis",
    "memory_and_cognitive_problems": "greatest(ltc_dementia, memory_concern)",
    "falls": "CASE WHEN falls_365d > 0 THEN 1 ELSE 0 END",
    "housebound": "housebound",
    "mobility_problems": "mobility_problem",
    "requirement_for_care": "greatest(has_carer, home_care_package, care_home)",
    "social_vulnerability": "greatest(lives_alone, social_isolation)",
    "polypharmacy": "CASE WHEN distinct_medicines_90d >= 5 THEN 1 ELSE 0 END",
    "urinary_incontinence": "incontinence",
    "visual_impairment": "visual_impairment",
    "hearing_impairment": "hearing_impairment",
    "weight_loss": "weight_loss",
}
EFI_DEFICIT_TOTAL = 36


def _lower(code: str) -> str:
    return code.lower()


def feature_columns() -> list[str]:
    """Every feature ``build_features`` returns, in a stable order."""
    cols = ["age_years", "sex_female", "imd_decile"]
    for stem in _ACTIVITY_COUNTS:
        cols += [f"{stem}_{w}d" for w in _WINDOWS_DAYS]
    cols += ["days_since_last_emergency_admission", "emergency_bed_days_365d"]
    cols += ["emergency_admissions_730d", "ae_attendances_730d", "days_since_last_ae_attendance"]
    cols += list(UNPLANNED_HISTORY_COLUMNS) + ["gp_contacts_30d"]
    cols += [f"ltc_{_lower(c)}" for c in CONDITIONS] + ["ltc_count"]
    cols += ["distinct_medicines_90d"]
    cols += [f"{_lower(c)}_90d" for c in DRUG_CLASSES] + ["falls_risk_drug_classes_90d"]
    cols += [_lower(c) for c in STATE_CODES]
    cols += ["falls_180d", "falls_365d"] + [_lower(c) for c in EVENT_CODES if c != "FALL"]
    cols += ["bmi_latest", "cfs_latest", "efi", "index_month"]
    cols += ["falls_assessment_365d", "medication_review_365d", "advance_care_plan_ever"]
    return cols


#: People per features query. Each query's joins and aggregates keep a hash table entry
#: per person and index date, and past about 100,000 entries they outgrow the CPU caches
#: and cost more per row: one month of 757,974 people took 6.2-12.4 s as one query and
#: 5.5-7.1 s in ranges of 100,000 registered people (2 cores, 2026-12-02), each range
#: costing the CPU what the whole 100,000-person population does. Bigger populations are
#: therefore split into ranges of NHS numbers, one query each, which also makes the cost
#: grow with the number of people rather than faster.
CHUNK_PEOPLE = 100_000
#: Ranges are used only if the event tables are stored in NHS-number order, as extracts
#: sorted by patient load: then each range's query reads only its own row groups (DuckDB
#: skips the others by their minimum and maximum). Otherwise every range would read every
#: row. This bounds the rows that all the ranges would read together, as a multiple of the
#: rows the tables hold, judged from the row groups' own minimum and maximum.
MAX_RANGE_READ_FACTOR = 1.5

#: One range: everyone (None, None), or NHS numbers from the first (inclusive) to the
#: second (exclusive), either end open when None.
NhsRange = tuple[str | None, str | None]


def build_features(
    con: duckdb.DuckDBPyConnection,
    *,
    index_dates: Sequence[date],
    people: Sequence[str] | PeopleSample | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> pd.DataFrame:
    """Features for everyone registered and alive at each index date.

    Args:
        con: a connection holding the validated contract tables (``Extract.con``).
        index_dates: the dates to build features at (monthly index dates are first days of
            months); features use only data dated before each.
        people: if given, only these NHS numbers (a training sample); the filter runs in
            the engine. A ``PeopleSample`` (from ``people_sample``) also brings its own
            copies of the event tables, so many calls on one sample stop reading the
            unsampled people's events each time.
        chunk_people: how many people one query may cover before they are split into
            NHS-number ranges (``person_ranges``); the result is the same either way.

    Returns:
        One row per (person, index date) with ``KEY_COLUMNS``, ``CONTEXT_COLUMNS``,
        ``GROUP_COLUMNS``, ``COHORT_COLUMNS`` and ``feature_columns()``, sorted by index
        date then NHS number.
        Type 1 opt-outs are included and flagged; callers decide what to do with them.
    """
    _check_index_dates(index_dates)
    tables = people.tables if isinstance(people, PeopleSample) else None
    sampled = people is not None
    with sampled_people(con, people):
        ranges = person_ranges(con, sampled=sampled, tables=tables, chunk_people=chunk_people)
        results = (
            con.execute(
                _features_sql(
                    sampled=sampled, tables=tables, lower=lo is not None, upper=hi is not None
                ),
                {"index_dates": list(index_dates)}
                | ({"range_lo": lo} if lo is not None else {})
                | ({"range_hi": hi} if hi is not None else {}),
            ).df()
            for lo, hi in ranges
        )
        if len(ranges) == 1:
            frame = next(results)
        else:
            source = SAMPLE_TABLE if sampled else "patients"
            people_held = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
            frame = _stack_frames(results, capacity=people_held * len(set(index_dates)))
    if len(ranges) > 1 and len(set(index_dates)) > 1:
        # Each range comes sorted by index date then NHS number, and the ranges are in NHS
        # number order, so a stable sort on the date alone restores the documented order.
        frame = frame.sort_values("index_date", kind="stable")
    frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
    return frame.reset_index(drop=True)


def _stack_frames(frames: Iterator[pd.DataFrame], *, capacity: int) -> pd.DataFrame:
    """Frames with the same columns, one after another, each taken from ``frames`` only
    once the one before it has been copied and let go.

    Each NumPy-backed column is copied once into an array allocated for ``capacity`` rows
    (at least the rows of all the frames together; pages never written cost no memory), so
    a range's result is freed before the next range's query fills memory again, which the
    next result reuses. Keeping every range's frame and concatenating them at the end wrote
    the whole month twice into fresh memory: 0.5-1.4 s for 757,974 people on 2 cores, where
    one query at 100,000 people writes its result once. Other columns (text) are joined by
    ``pd.concat``. A NumPy column whose dtype differs between frames (an integer column with
    no missing values in one range, say) is widened as ``np.concatenate`` would widen it.
    """
    held: dict[str, np.ndarray] = {}
    other: dict[str, list[Any]] = {}
    names: list[str] = []
    rows = 0
    for frame in frames:
        if not names:
            names = [str(name) for name in frame.columns]
        size = len(frame)
        if rows + size > capacity:
            raise ValueError(f"more than the {capacity:,} rows allowed for")
        for name in names:
            array = frame[name].array
            if name in held or (
                name not in other and isinstance(array, pd.arrays.NumpyExtensionArray)
            ):
                values = np.asarray(array)
                target = held.get(name)
                if target is None or target.dtype != values.dtype:
                    dtype = values.dtype if target is None else np.result_type(target, values)
                    widened = np.empty(capacity, dtype=dtype)
                    if target is not None:
                        widened[:rows] = target[:rows]
                    target = held[name] = widened
                target[rows : rows + size] = values
            else:
                other.setdefault(name, []).append(array)
        rows += size
        del frame  # before the next range's query runs
    columns: dict[str, Any] = {}
    for name in names:
        if name in held:
            columns[name] = held[name][:rows]
        else:
            parts = [pd.Series(array, copy=False) for array in other[name]]
            columns[name] = pd.concat(parts, ignore_index=True).array
    return pd.DataFrame(columns, copy=False)


def person_ranges(
    con: duckdb.DuckDBPyConnection,
    *,
    sampled: bool = False,
    tables: Mapping[str, str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> list[NhsRange]:
    """The NHS-number ranges ``build_features`` queries one at a time.

    One range, ``[(None, None)]``, unless there are more than ``chunk_people`` registered
    patients (or people in the sample) and the event tables are stored in NHS-number order
    (see ``MAX_RANGE_READ_FACTOR``); then as few ranges of equal size as keep each to at
    most ``chunk_people`` of them, in order.
    The boundaries are NHS numbers: they stay in memory and go to DuckDB only as query
    parameters.
    """
    everyone: list[NhsRange] = [(None, None)]
    source = SAMPLE_TABLE if sampled else "patients"
    # Rows bound the distinct people from above and cost nothing to count.
    if con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0] <= chunk_people:
        return everyone
    # Ranges of equal size, none bigger than chunk_people: the NHS numbers that start the
    # second range onwards, found in the same pass that counts the distinct people. (`/`
    # divides as floats, in Spark SQL too; exact for any count of people below 2^52.)
    # Validation keeps an NHS number once in patients (it rejects every copy of a repeated
    # one), so only a sample, which may name a person twice, needs DISTINCT (half this
    # query's time at 909,091 people). Any boundaries would give the same features; these
    # only decide how many people each query holds.
    chunk = max(1, chunk_people)
    people = f"(SELECT DISTINCT nhs_number FROM {source})" if sampled else source
    rows = con.execute(
        f"""
        SELECT nhs_number FROM (
            SELECT nhs_number, r,
                   CAST(ceil(n / ceil(n / {chunk})) AS BIGINT) AS per_range
            FROM (
                SELECT nhs_number, row_number() OVER (ORDER BY nhs_number) AS r,
                       count(*) OVER () AS n
                FROM {people}
            )
        ) WHERE r > 1 AND (r - 1) % per_range = 0
        ORDER BY nhs_number
        """
    ).fetchall()
    if not rows:  # no more than chunk_people distinct people
        return everyone
    splits: list[str | None] = [str(row[0]) for row in rows]
    ranges = list(zip([None, *splits], [*splits, None], strict=True))
    factor = _range_read_factor(con, list(_event_tables(tables).values()), ranges)
    if factor is None or factor > MAX_RANGE_READ_FACTOR:
        return everyone
    return ranges


def _event_tables(tables: Mapping[str, str] | None) -> dict[str, str]:
    """Where each event table is read from: itself, or a ``people_sample`` copy."""
    return {name: name for name in EVENT_TABLES} | dict(tables or {})


def _range_read_factor(
    con: duckdb.DuckDBPyConnection, tables: Sequence[str], ranges: Sequence[NhsRange]
) -> float | None:
    """Rows the ranges' queries would read from ``tables`` together, over the rows they
    hold; None where a table's row-group statistics are not available (a view, say)."""
    held = read = 0
    for table in tables:
        try:
            groups = con.execute(
                f"""
                SELECT row_group_id, sum("count"),
                       min(CAST(stats.min AS VARCHAR)), max(CAST(stats.max AS VARCHAR))
                FROM pragma_storage_info('{table}')
                WHERE column_name = 'nhs_number' AND column_path = '[0]'
                GROUP BY row_group_id
                """
            ).fetchall()
        except duckdb.Error:
            return None
        for _, count, low, high in groups:
            if low is None or high is None:
                return None
            held += int(count)
            read += int(count) * sum(
                1 for lo, hi in ranges if (lo is None or high >= lo) and (hi is None or low < hi)
            )
    return read / held if held else 1.0


def population_size(con: duckdb.DuckDBPyConnection, index_date: date) -> int:
    """How many people are registered and alive at ``index_date`` (the rows one index
    month contributes)."""
    sql = f"WITH {index_sql().strip()},\n{population_sql().strip()}\nSELECT count(*) FROM pop"
    return int(con.execute(sql, [[index_date]]).fetchall()[0][0])


#: The table a people sample is registered as, for ``population_sql(sampled=True)``.
SAMPLE_TABLE = "sampled_people"


#: The tables a person's events are read from; ``people_sample`` makes cut-down copies.
EVENT_TABLES = ("activity", "conditions", "medications", "observations")


@dataclass(frozen=True)
class PeopleSample:
    """A sample of people registered in the connection as ``SAMPLE_TABLE``, with copies of
    the event tables holding only their rows (``tables``: contract name -> copy)."""

    size: int
    tables: Mapping[str, str] = field(default_factory=dict)


@contextmanager
def people_sample(con: duckdb.DuckDBPyConnection, people: Sequence[str]) -> Iterator[PeopleSample]:
    """Copy the sampled people's events once, for the block.

    Training builds two dozen sampled months. Filtering only the population, every query
    still probed every event row of the extract against the sample, nine in ten of them for
    nothing; at a million people that was most of training's feature time. The copies are
    temporary tables, dropped at the end of the block.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SAMPLE_TABLE} (nhs_number VARCHAR PRIMARY KEY)")
    tables: dict[str, str] = {}
    try:
        frame = pd.DataFrame({"nhs_number": pd.Series(sorted(set(people)), dtype=str)})
        con.register("_people_sample_frame", frame)
        try:
            con.execute(f"INSERT INTO {SAMPLE_TABLE} SELECT nhs_number FROM _people_sample_frame")
        finally:
            con.unregister("_people_sample_frame")
        for name in EVENT_TABLES:
            copy = f"_sample_{name}"
            tables[name] = copy
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {copy} AS SELECT * FROM {name} "
                f"WHERE nhs_number IN (SELECT nhs_number FROM {SAMPLE_TABLE})"
            )
        yield PeopleSample(size=len(frame), tables=tables)
    finally:
        for copy in tables.values():
            con.execute(f"DROP TABLE IF EXISTS temp.{copy}")
        con.execute(f"DROP TABLE IF EXISTS temp.{SAMPLE_TABLE}")


@contextmanager
def sampled_people(
    con: duckdb.DuckDBPyConnection, people: Sequence[str] | PeopleSample | None
) -> Iterator[None]:
    """Register ``people`` as ``SAMPLE_TABLE`` (one ``nhs_number`` column) for the block
    (a ``PeopleSample`` is registered already)."""
    if people is None or isinstance(people, PeopleSample):
        yield
        return
    con.register(SAMPLE_TABLE, pd.DataFrame({"nhs_number": pd.Series(people, dtype=str)}))
    try:
        yield
    finally:
        con.unregister(SAMPLE_TABLE)


def sample_people(con: duckdb.DuckDBPyConnection, *, fraction: float, seed: int) -> list[str]:
    """A reproducible random sample of the extract's people (each kept with ``fraction``).

    People, not rows, are sampled, so a person's months stay together and no one is both
    sampled and unsampled; the same extract, fraction and seed give the same sample.
    """
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    everyone = np.sort(
        con.execute("SELECT nhs_number FROM patients").df()["nhs_number"].to_numpy(str)
    )
    keep = np.random.default_rng(seed).random(len(everyone)) < fraction
    return [str(n) for n in everyone[keep]]


def _check_index_dates(index_dates: Sequence[date]) -> None:
    if not index_dates:
        raise ValueError("at least one index date is needed")


def history_start(con: duckdb.DuckDBPyConnection) -> date | None:
    """The earliest activity date in the extract: where its recorded history begins."""
    row = con.execute("SELECT min(start_date) FROM activity").fetchall()
    return row[0][0] if row and row[0][0] is not None else None


_AGE_SQL = "date_sub('year', p.date_of_birth, i.index_date)"


def population_sql(*, sampled: bool = False, lower: bool = False, upper: bool = False) -> str:
    """SQL for ``pop``: everyone registered and alive at each index date in ``idx`` (with
    ``sampled``, only the people in ``SAMPLE_TABLE``; with ``lower`` and ``upper``, only
    NHS numbers from ``$range_lo`` and below ``$range_hi``)."""
    sample = (
        f"\n        WHERE p.nhs_number IN (SELECT nhs_number FROM {SAMPLE_TABLE})"
        if sampled
        else ""
    )
    sample += _range_sql("p", lower=lower, upper=upper)
    return f"""
    pop AS (
        SELECT p.nhs_number, i.index_date, i.d30, i.d90, i.d180, i.d365, i.d730, i.d24m,
               p.registered_from, p.practice_code, p.pcn_code,
               coalesce(p.type1_opt_out, false) AS type1_opt_out,
               {_AGE_SQL} AS age_years, p.sex, p.imd_decile, p.ethnic_category
        FROM patients p
        JOIN idx i
          ON p.registered_from <= i.index_date
         AND (p.registered_to IS NULL OR p.registered_to > i.index_date)
         AND (p.date_of_death IS NULL OR p.date_of_death >= i.index_date)
         AND p.date_of_birth <= i.index_date{sample}
    )"""


def index_sql(parameter: str = "?") -> str:
    """SQL for ``idx`` from a list parameter of index dates (``parameter``: its
    placeholder)."""
    return f"""
    idx AS (
        SELECT index_date,
               CAST(index_date - INTERVAL 30 DAY AS DATE) AS d30,
               CAST(index_date - INTERVAL 90 DAY AS DATE) AS d90,
               CAST(index_date - INTERVAL 180 DAY AS DATE) AS d180,
               CAST(index_date - INTERVAL 365 DAY AS DATE) AS d365,
               CAST(index_date - INTERVAL 730 DAY AS DATE) AS d730,
               CAST(index_date - INTERVAL {STATE_CURRENT_MONTHS} MONTH AS DATE) AS d24m
        FROM (SELECT DISTINCT CAST(unnest({parameter}) AS DATE) AS index_date)
    )"""


def _range_sql(alias: str, *, lower: bool, upper: bool) -> str:
    """Conditions keeping ``alias``'s rows in one ``person_ranges`` range (its bounds are the
    parameters ``$range_lo`` and ``$range_hi``). Written on every table, not only on the
    population, so that DuckDB skips the other ranges' row groups (Spark: its partitions)."""
    sql = f" AND {alias}.nhs_number >= $range_lo" if lower else ""
    return sql + (f" AND {alias}.nhs_number < $range_hi" if upper else "")


def _features_sql(
    *,
    sampled: bool = False,
    tables: Mapping[str, str] | None = None,
    lower: bool = False,
    upper: bool = False,
) -> str:
    """The features query, with the index dates as the parameter ``$index_dates``;
    ``tables`` names copies to read events from (``people_sample``); ``lower`` and
    ``upper`` keep one NHS-number range (``person_ranges``). The history's start is always
    read from the whole activity table."""
    t = _event_tables(tables)
    r = {alias: _range_sql(alias, lower=lower, upper=upper) for alias in "acmo"}
    act_aggs = []
    for stem, cond in _ACTIVITY_COUNTS.items():
        act_aggs.append(f"count(*) FILTER (WHERE {cond} AND a.start_date >= pop.d90) AS {stem}_90d")
        act_aggs.append(f"count(*) FILTER (WHERE {cond}) AS {stem}_365d")
    act_aggs.append(
        f"count(*) FILTER (WHERE {_ACTIVITY_COUNTS['gp_contacts']} "
        "AND a.start_date >= pop.d30) AS gp_contacts_30d"
    )
    act_aggs.append(
        "coalesce(sum(date_diff('day', a.start_date, a.end_date)) FILTER (WHERE "
        "a.setting = 'inpatient' AND a.admission_method = 'emergency' AND a.end_date IS NOT NULL "
        "AND a.end_date < pop.index_date), 0) AS emergency_bed_days_365d"
    )
    ltc_aggs = [
        f"max(CASE WHEN c.condition = '{c}' THEN 1 ELSE 0 END) AS ltc_{_lower(c)}"
        for c in CONDITIONS
    ]
    med_aggs = ["count(DISTINCT m.medicine) AS distinct_medicines_90d"]
    med_aggs += [
        f"max(CASE WHEN m.drug_class = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}_90d"
        for c in DRUG_CLASSES
    ]
    frid = ", ".join(f"'{c}'" for c in FALLS_RISK_DRUG_CLASSES)
    med_aggs.append(
        f"count(DISTINCT m.drug_class) FILTER (WHERE m.drug_class IN ({frid})) "
        "AS falls_risk_drug_classes_90d"
    )
    obs_aggs = [
        f"max(CASE WHEN o.code = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}" for c in STATE_CODES
    ]
    obs_aggs.append(
        "count(*) FILTER (WHERE o.code = 'FALL' AND o.observed_on >= pop.d180) AS falls_180d"
    )
    obs_aggs.append(
        "count(*) FILTER (WHERE o.code = 'FALL' AND o.observed_on >= pop.d365) AS falls_365d"
    )
    obs_aggs += [
        f"max(CASE WHEN o.code = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}"
        for c in EVENT_CODES
        if c != "FALL"
    ]
    # The latest value; two on the same day give the higher, so the result never depends
    # on the order rows are read in.
    obs_aggs += [
        f"arg_max(o.value, (o.observed_on, o.value)) FILTER (WHERE o.code = '{code}') AS {name}"
        for code, name in (("BMI", "bmi_latest"), ("CFS", "cfs_latest"))
    ]
    obs_aggs.append(
        "max(CASE WHEN o.code = 'FALLS_ASSESSMENT' AND o.observed_on >= pop.d365 "
        "THEN 1 ELSE 0 END) "
        "AS falls_assessment_365d"
    )
    obs_aggs.append(
        "max(CASE WHEN o.code = 'MEDICATION_REVIEW' AND o.observed_on >= pop.d365 "
        "THEN 1 ELSE 0 END) "
        "AS medication_review_365d"
    )

    zero_fill = [
        c
        for c in feature_columns()
        if c
        not in {
            "age_years",
            "sex_female",
            "imd_decile",
            "days_since_last_emergency_admission",
            "days_since_last_ae_attendance",
            "index_month",
            "bmi_latest",
            "cfs_latest",
            "efi",
            "advance_care_plan_ever",
            "ltc_count",
            "recorded_history_days",
            "emergency_admissions_per_year",
            "ae_attendances_per_year",
        }
    ]
    efi = " + ".join(f"({expr})" for expr in EFI_DEFICITS.values())
    ltc_count = " + ".join(f"ltc_{_lower(c)}" for c in CONDITIONS)
    nullable = {"bmi_latest", "cfs_latest"}
    filled = ",\n".join(f"coalesce(f.{c}, 0) AS {c}" for c in zero_fill if c not in nullable)
    return f"""
    WITH {index_sql("$index_dates").strip()},
    {population_sql(sampled=sampled, lower=lower, upper=upper).strip()},
    act AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(act_aggs)}
        FROM pop JOIN {t["activity"]} a
          ON a.nhs_number = pop.nhs_number{r["a"]}
         AND a.start_date < pop.index_date AND a.start_date >= pop.d365
        GROUP BY pop.nhs_number, pop.index_date
    ),
    last_em AS (
        -- Unplanned care over the whole history: recency, counts in windows from 30 days
        -- to two years, and counts over the whole record. Only emergency admissions and
        -- A&E rows are read, so the long windows stay cheap.
        SELECT pop.nhs_number, pop.index_date,
               date_diff('day', max(a.start_date) FILTER (WHERE a.setting = 'inpatient'),
                         pop.index_date) AS days_since_last_emergency_admission,
               date_diff('day', max(a.start_date) FILTER (WHERE a.setting = 'ae'),
                         pop.index_date) AS days_since_last_ae_attendance,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d730)
                   AS emergency_admissions_730d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d730)
                   AS ae_attendances_730d,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d180)
                   AS emergency_admissions_180d,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d30)
                   AS emergency_admissions_30d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d30)
                   AS ae_attendances_30d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d180)
                   AS ae_attendances_180d,
               count(*) FILTER (WHERE a.setting = 'inpatient') AS emergency_admissions_ever,
               count(*) FILTER (WHERE a.setting = 'ae') AS ae_attendances_ever
        FROM pop JOIN {t["activity"]} a
          ON a.nhs_number = pop.nhs_number{r["a"]} AND a.start_date < pop.index_date
         AND ((a.setting = 'inpatient' AND a.admission_method = 'emergency') OR a.setting = 'ae')
        GROUP BY pop.nhs_number, pop.index_date
    ),
    ltc AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(ltc_aggs)}
        FROM pop JOIN {t["conditions"]} c
          ON c.nhs_number = pop.nhs_number{r["c"]} AND c.diagnosed_on < pop.index_date
        GROUP BY pop.nhs_number, pop.index_date
    ),
    med AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(med_aggs)}
        FROM pop JOIN {t["medications"]} m
          ON m.nhs_number = pop.nhs_number{r["m"]}
         AND m.issued_on < pop.index_date
         AND m.issued_on >= CAST(pop.index_date - INTERVAL {MEDICINE_CURRENT_DAYS} DAY AS DATE)
        GROUP BY pop.nhs_number, pop.index_date
    ),
    obs AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(obs_aggs)}
        FROM pop JOIN {t["observations"]} o
          ON o.nhs_number = pop.nhs_number{r["o"]}
         AND o.observed_on < pop.index_date AND o.observed_on >= pop.d24m
        GROUP BY pop.nhs_number, pop.index_date
    ),
    acp AS (
        -- Interventions already delivered, over the whole history.
        SELECT pop.nhs_number, pop.index_date,
               max(CASE WHEN o.code = 'ADVANCE_CARE_PLAN' THEN 1 ELSE 0 END)
                   AS advance_care_plan_ever,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'FALLS_ASSESSMENT'),
                         pop.index_date) AS days_since_falls_assessment,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'MEDICATION_REVIEW'),
                         pop.index_date) AS days_since_medication_review,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'ADVANCE_CARE_PLAN'),
                         pop.index_date) AS days_since_advance_care_plan
        FROM pop JOIN {t["observations"]} o
          ON o.nhs_number = pop.nhs_number{r["o"]} AND o.observed_on < pop.index_date
         AND o.code IN ('ADVANCE_CARE_PLAN', 'FALLS_ASSESSMENT', 'MEDICATION_REVIEW')
        GROUP BY pop.nhs_number, pop.index_date
    ),
    hist AS (
        -- Where the extract's recorded history begins (its earliest activity).
        SELECT min(start_date) AS history_start FROM activity
    ),
    f AS (
        SELECT pop.*, act.* EXCLUDE (nhs_number, index_date),
               last_em.days_since_last_emergency_admission,
               last_em.days_since_last_ae_attendance,
               last_em.emergency_admissions_730d, last_em.ae_attendances_730d,
               last_em.emergency_admissions_30d, last_em.ae_attendances_30d,
               last_em.ae_attendances_180d, last_em.emergency_admissions_ever,
               last_em.ae_attendances_ever,
               ltc.* EXCLUDE (nhs_number, index_date), med.* EXCLUDE (nhs_number, index_date),
               obs.* EXCLUDE (nhs_number, index_date),
               coalesce(acp.advance_care_plan_ever, 0) AS advance_care_plan_ever,
               acp.days_since_falls_assessment, acp.days_since_medication_review,
               acp.days_since_advance_care_plan,
               coalesce(last_em.emergency_admissions_180d, 0) AS emergency_admissions_180d
        FROM pop
        LEFT JOIN act USING (nhs_number, index_date)
        LEFT JOIN last_em USING (nhs_number, index_date)
        LEFT JOIN ltc USING (nhs_number, index_date)
        LEFT JOIN med USING (nhs_number, index_date)
        LEFT JOIN obs USING (nhs_number, index_date)
        LEFT JOIN acp USING (nhs_number, index_date)
    ),
    g AS (
        SELECT f.nhs_number, f.index_date, f.practice_code, f.pcn_code, f.type1_opt_out,
               f.age_years, CASE WHEN f.sex = 'F' THEN 1 ELSE 0 END AS sex_female,
               CAST(f.imd_decile AS DOUBLE) AS imd_decile,
               CAST(f.days_since_last_emergency_admission AS DOUBLE)
                   AS days_since_last_emergency_admission,
               CAST(f.days_since_last_ae_attendance AS DOUBLE) AS days_since_last_ae_attendance,
               -- Month of the year: admissions rise in winter, so a month's risk level
               -- depends on the season as well as the person.
               month(f.index_date) AS index_month,
               CAST(f.bmi_latest AS DOUBLE) AS bmi_latest,
               CAST(f.cfs_latest AS DOUBLE) AS cfs_latest,
               f.advance_care_plan_ever,
               CAST(f.days_since_falls_assessment AS DOUBLE) AS days_since_falls_assessment,
               CAST(f.days_since_medication_review AS DOUBLE) AS days_since_medication_review,
               CAST(f.days_since_advance_care_plan AS DOUBLE) AS days_since_advance_care_plan,
               f.emergency_admissions_180d,
               -- Days of record: from the later of registration and the history's start.
               date_diff('day', greatest(f.registered_from, hist.history_start), f.index_date)
                   AS recorded_history_days,
               {filled},
               f.sex, f.ethnic_category
        FROM f CROSS JOIN hist
    )
    SELECT g.* EXCLUDE (ethnic_category),
           round(g.emergency_admissions_ever * 365.0
                 / greatest(g.recorded_history_days, {MIN_RATE_DAYS}), 4)
               AS emergency_admissions_per_year,
           round(g.ae_attendances_ever * 365.0
                 / greatest(g.recorded_history_days, {MIN_RATE_DAYS}), 4)
               AS ae_attendances_per_year,
           ({ltc_count}) AS ltc_count,
           round(({efi}) / {EFI_DEFICIT_TOTAL}.0, 4) AS efi,
           CASE WHEN g.age_years < 18 THEN '0-17' WHEN g.age_years < 45 THEN '18-44'
                WHEN g.age_years < 65 THEN '45-64' WHEN g.age_years < 75 THEN '65-74'
                WHEN g.age_years < 85 THEN '75-84' ELSE '85+' END AS age_band,
           CASE WHEN g.imd_decile IS NULL THEN 'Not known'
                ELSE CAST(CAST(floor((g.imd_decile + 1) / 2) AS INTEGER) AS VARCHAR) END
                AS imd_quintile,
           CASE WHEN g.ethnic_category IN ('A', 'B', 'C') THEN 'White'
                WHEN g.ethnic_category IN ('D', 'E', 'F', 'G') THEN 'Mixed'
                WHEN g.ethnic_category IN ('H', 'J', 'K', 'L') THEN 'Asian'
                WHEN g.ethnic_category IN ('M', 'N', 'P') THEN 'Black'
                WHEN g.ethnic_category IN ('R', 'S') THEN 'Other'
                ELSE 'Not stated' END AS ethnic_group
    FROM g
    ORDER BY g.index_date, g.nhs_number
    """
