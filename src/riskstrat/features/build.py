"""Point-in-time features at monthly index dates, built in DuckDB.

Everything here uses only data dated strictly before the index date (the query, and what it
may and may not read, is in :mod:`riskstrat.features.sql`). This module runs it: for
everyone registered and alive at each index date, or for a sample of people, one query per
range of NHS numbers when the population is big, the ranges' results stacked into one
frame.
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

from riskstrat.errors import UsageError
from riskstrat.features.sql import (
    EVENT_TABLES,
    INDEX_DATES_TABLE,
    SAMPLE_TABLE,
    event_tables,
    features_sql,
    index_sql,
    population_sql,
)

# The feature list is defined with its SQL; much of the code base takes it from here.
from riskstrat.features.sql import feature_columns as feature_columns

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
    with sampled_people(con, people), index_dates_table(con, index_dates):
        ranges = person_ranges(con, sampled=sampled, tables=tables, chunk_people=chunk_people)
        results = (
            _range_features(con, lo, hi, sampled=sampled, tables=tables) for lo, hi in ranges
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


def iter_feature_ranges(
    con: duckdb.DuckDBPyConnection,
    *,
    index_dates: Sequence[date],
    people: Sequence[str] | PeopleSample | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """``build_features`` one NHS-number range at a time, for a caller that keeps less of
    each range than the whole frame (training makes each one compact before the next is
    built). The ranges are those ``build_features`` queries, in NHS-number order, each with
    every index date; its rows are sorted by index date then NHS number, ``index_date`` as
    dates. So, for each index date, its rows of every range one after another are
    ``build_features``' rows of that date, in order.

    The connection holds the index dates (and any sample) until the iterator is exhausted
    or closed: use it for nothing else meanwhile.
    """
    _check_index_dates(index_dates)
    tables = people.tables if isinstance(people, PeopleSample) else None
    sampled = people is not None
    with sampled_people(con, people), index_dates_table(con, index_dates):
        ranges = person_ranges(con, sampled=sampled, tables=tables, chunk_people=chunk_people)
        for lo, hi in ranges:
            frame = _range_features(con, lo, hi, sampled=sampled, tables=tables)
            frame["index_date"] = pd.to_datetime(frame["index_date"]).dt.date
            yield frame
            del frame


def _range_features(
    con: duckdb.DuckDBPyConnection,
    lo: str | None,
    hi: str | None,
    *,
    sampled: bool,
    tables: Mapping[str, str] | None,
) -> pd.DataFrame:
    """The features query's rows for one ``person_ranges`` range."""
    return con.execute(
        features_sql(sampled=sampled, tables=tables, lower=lo is not None, upper=hi is not None),
        ({"range_lo": lo} if lo is not None else {}) | ({"range_hi": hi} if hi is not None else {}),
    ).df()


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
    factor = _range_read_factor(con, list(event_tables(tables).values()), ranges)
    if factor is None or factor > MAX_RANGE_READ_FACTOR:
        return everyone
    return ranges


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
    with index_dates_table(con, [index_date]):
        return int(con.execute(sql).fetchall()[0][0])


@contextmanager
def index_dates_table(
    con: duckdb.DuckDBPyConnection, index_dates: Sequence[date]
) -> Iterator[None]:
    """Register ``index_dates`` as ``INDEX_DATES_TABLE`` (the table ``index_sql`` reads) for
    the block."""
    frame = pd.DataFrame({"index_date": pd.to_datetime(pd.Series(list(index_dates)))})
    con.register(INDEX_DATES_TABLE, frame)
    try:
        yield
    finally:
        con.unregister(INDEX_DATES_TABLE)


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
        raise UsageError("fraction must be in (0, 1]")
    everyone = np.sort(
        con.execute("SELECT nhs_number FROM patients").df()["nhs_number"].to_numpy(str)
    )
    keep = np.random.default_rng(seed).random(len(everyone)) < fraction
    return [str(n) for n in everyone[keep]]


def _check_index_dates(index_dates: Sequence[date]) -> None:
    if not index_dates:
        raise UsageError("at least one index date is needed")


def history_start(con: duckdb.DuckDBPyConnection) -> date | None:
    """The earliest activity date in the extract: where its recorded history begins."""
    row = con.execute("SELECT min(start_date) FROM activity").fetchall()
    return row[0][0] if row and row[0][0] is not None else None
