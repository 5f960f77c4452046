"""What the simulator's parts share: the fields of the simulator, the integer codes its rows
carry, the column-wise row accumulator and the vectorised draws and sort keys it builds rows with.

The simulator (:class:`riskstrat.synth.simulation._Simulator`) is one object assembled from
parts in separate modules (the monthly loop in :mod:`riskstrat.synth.simulation`, the month's
recordings in :mod:`riskstrat.synth.recording`, the post-loop work and the tables in
:mod:`riskstrat.synth.assembly`); :class:`_SimulatorFields` declares the attributes they share.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.data.contract import ADMISSION_METHODS, OBSERVATION_CODES, SETTINGS
from riskstrat.synth.catalogue import (
    AE_DIAGNOSES,
    AE_FALL_DIAGNOSIS,
    CONDITION_INDEX,
    ELECTIVE_DIAGNOSES,
    EMERGENCY_DIAGNOSES,
    MATERNITY_DIAGNOSES,
    Medicine,
)
from riskstrat.synth.dynamics import uniform_days
from riskstrat.synth.hazards import BoolArray, FloatArray, HazardParams, IntArray
from riskstrat.synth.params import ProgressCallback, SimulationParams
from riskstrat.synth.population import People, Practices
from riskstrat.synth.state import HiddenState

_ALL_DIAGNOSES: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            *EMERGENCY_DIAGNOSES,
            *AE_DIAGNOSES,
            AE_FALL_DIAGNOSIS,
            *ELECTIVE_DIAGNOSES,
            *MATERNITY_DIAGNOSES,
        )
    )
)
_DIAG_INDEX = {d: i for i, d in enumerate(_ALL_DIAGNOSES)}
_SETTING = {s: i for i, s in enumerate(SETTINGS)}
_METHOD = {m: i for i, m in enumerate(ADMISSION_METHODS)}
_OBS = {c: i for i, c in enumerate(OBSERVATION_CODES)}
_C = CONDITION_INDEX


class _Rows:
    """Column-wise accumulator of integer-coded rows (one list of arrays per column)."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.parts: dict[str, list[npt.NDArray[np.generic]]] = {c: [] for c in columns}

    def add(self, **cols: npt.NDArray[np.generic] | int | float) -> None:
        n = max(np.size(v) for v in cols.values() if isinstance(v, np.ndarray))
        for c in self.columns:
            v = cols[c]
            self.parts[c].append(v if isinstance(v, np.ndarray) else np.full(n, v))

    def build(self) -> dict[str, npt.NDArray[np.generic]]:
        out: dict[str, npt.NDArray[np.generic]] = {}
        for c in self.columns:
            out[c] = np.concatenate(self.parts[c]) if self.parts[c] else np.empty(0, np.int64)
        return out


class _SimulatorFields:
    """The attributes the simulator's parts share (set by ``_Simulator.__init__`` and its
    stages; declared here so that each part is typed on its own)."""

    n: int
    months: int
    params: SimulationParams
    hp: HazardParams
    progress: ProgressCallback | None
    extract_date: dt.date
    history_start_date: dt.date
    hs: int
    extract: int
    rng_pop: np.random.Generator
    rng_sim: np.random.Generator
    rng_med: np.random.Generator
    rng_obs: np.random.Generator
    rng_out: np.random.Generator
    oracle_seed: np.random.SeedSequence
    practices: Practices
    nhs: npt.NDArray[np.str_]
    act: _Rows
    obs: _Rows
    adm_log: _Rows
    fall_log: _Rows
    int_log: _Rows
    people: People
    state: HiddenState
    died: BoolArray
    rec_lo: IntArray
    rec_hi: IntArray
    life_hi: IntArray
    medicines: list[Medicine]


#: ``linked``: 1 for rows SUS holds whatever the registration (emergency admissions and
#: their A&E attendances), written while the person lives; 0 for rows written only while
#: registered.
_ACT_COLS = ("person", "setting", "method", "start", "end", "diag", "attended", "linked")
_OBS_COLS = ("person", "day", "code", "value")
_uniform_days = uniform_days


def _first_event_days(
    rng: np.random.Generator, per_day: FloatArray, lo: IntArray, hi: IntArray
) -> IntArray:
    """Day of the first event of a constant hazard ``per_day`` on [lo, hi), given one occurs.

    The time is drawn from the exponential truncated to the span, so that the chance of no
    event before any day ``t`` in the span is ``exp(-per_day * (t - lo))`` (the oracle relies
    on this).
    """
    u = rng.random(lo.shape[0])
    span = (hi - lo).astype(np.float64)
    t = -np.log1p(u * np.expm1(-per_day * span)) / per_day
    return np.clip(lo + np.floor(t).astype(np.int64), lo, hi - 1)


def _poisson_rows(
    rng: np.random.Generator, persons: IntArray, lo: IntArray, hi: IntArray, rate: FloatArray
) -> tuple[IntArray, IntArray]:
    """Poisson events at ``rate`` per day-window share over [lo, hi): (person, day) rows.

    ``rate`` is the expected count over the whole window.
    """
    span = np.maximum(hi - lo, 0)
    counts = rng.poisson(np.where(span > 0, np.maximum(rate, 0.0), 0.0))
    rep = np.repeat(np.arange(persons.shape[0]), counts)
    days = _uniform_days(rng, lo[rep], hi[rep])
    return persons[rep], days


def _pick(rng: np.random.Generator, weights: FloatArray) -> IntArray:
    """One column index per row of a non-negative weight matrix (rows must not sum to 0)."""
    cum = np.cumsum(weights, axis=1)
    r = rng.random(weights.shape[0]) * cum[:, -1]
    picked: IntArray = np.minimum((cum < r[:, None]).sum(axis=1), weights.shape[1] - 1).astype(
        np.int64
    )
    return picked


def _masked(
    values: npt.NDArray[np.generic], keep: BoolArray, dtype: str
) -> pd.api.extensions.ExtensionArray:
    """A pandas array of ``dtype`` with missing values where ``keep`` is false."""
    masked: pd.api.extensions.ExtensionArray = pd.Series(values, dtype=dtype).where(keep).array
    return masked


def _sort_order(rank: IntArray, day: IntArray, *codes: IntArray) -> IntArray:
    """Stable order by (rank, day, codes...), all non-negative except day.

    The keys are packed into one int64 (much faster than ``np.lexsort``); rows equal on every
    key keep their generation order, which is itself deterministic.
    """
    if rank.size == 0:
        return np.zeros(0, dtype=np.int64)
    key = rank.astype(np.int64)
    bits = int(rank.max()).bit_length()
    parts = [day.astype(np.int64) - int(day.min()), *(c.astype(np.int64) for c in codes)]
    for part in parts:
        width = max(1, int(part.max()).bit_length())
        bits += width
        key = (key << width) | part
    if bits > 63:
        raise OverflowError("sort keys do not fit in 63 bits")
    order: IntArray = np.argsort(key, kind="stable")
    return order


def _weekday_shift(days: IntArray) -> IntArray:
    """Move Saturdays to Friday and Sundays to Monday (1970-01-01 was a Thursday)."""
    wd = (days + 3) % 7  # Monday = 0
    shifted: IntArray = days - (wd == 5) + (wd == 6)
    return shifted
