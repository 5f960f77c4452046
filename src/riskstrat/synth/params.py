"""Parameters and constants of the synthetic population simulation, and its day arithmetic.

The bottom of the generator's modules: :class:`SimulationParams`, the shares the monthly loop
uses, the integer day the hidden state counts in (days since 1970-01-01) and the first day of
a history. It imports nothing else from the generator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from riskstrat.calendar import add_months
from riskstrat.synth.hazards import DEFAULT_HAZARD_PARAMS, FloatArray, HazardParams

ProgressCallback = Callable[[str, float], None]
Format = Literal["csv", "parquet", "omop"]

#: Share of falls that are coded in the GP record, and that are seen in A&E.
FALL_CODED_SHARE = 0.3
FALL_AE_SHARE = 0.1
#: Share of same-day duplicate GP contacts kept (the rest are merged, as most systems do).
GP_DUPLICATES_KEPT = 0.3

_EPOCH = dt.date(1970, 1, 1)


def _to_day(d: dt.date) -> int:
    return (d - _EPOCH).days


def _to_date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


def history_start_for(extract_date: dt.date, months: int) -> dt.date:
    """First day of the history: the first of ``extract_date``'s month, ``months`` earlier."""
    return add_months(dt.date(extract_date.year, extract_date.month, 1), -months)


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


@dataclass(frozen=True)
class SimulationParams:
    """Knobs of the simulation beyond size, seed and dates."""

    burn_in_months: int = 12
    hazards: HazardParams = DEFAULT_HAZARD_PARAMS
