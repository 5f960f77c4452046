"""The oracle: each person's true probability of the outcome, from the generator's hidden state.

For an index date D the outcome is the label's event: at least one emergency admission row
*written to the extract* with a start date in ``[D, D + horizon)``. For people in the
population at D (the features' rule) every emergency admission in that window is written,
because the generator writes SUS-linked activity (emergency admissions and their A&E
attendances) for as long as the person lives, whether or not they are still registered. So
the oracle needs no knowledge of future deregistration; only death ends exposure.

Method (Rao-Blackwellised Monte Carlo). The hidden state at D is rebuilt exactly
(:func:`riskstrat.synth.truth.state_at`). The generator's emergency admission hazard is
constant within a calendar month and set by the state at the month's start; what can change
that state inside the window without an admission is a fall (and the falls assessment it may
bring), care home entry, joining the palliative care register and a medication review, plus
death, which ends exposure. Each Monte Carlo draw runs those dynamics forward month by month
with the generator's own functions (:mod:`riskstrat.synth.dynamics`) on a copy of the state,
as if the person survived and was not admitted. Along that path the probability of no
admission, with death integrated analytically over its month and day exactly as the generator
draws it, is

    P(no admission) = sum_m S_m * B_m + S_end,   S_{m+1} = S_m * A_m,

where ``A_m`` is the chance of surviving month m without an admission and ``B_m`` the chance of
dying in month m without an admission before death. The true risk is one minus the mean over
draws. The first month needs no draws; with the default 32 draws the Monte Carlo standard
error is a small fraction of each person's risk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from riskstrat.calendar import add_months
from riskstrat.synth.dynamics import draw_falls, draw_palliative_and_interventions, draw_states
from riskstrat.synth.hazards import (
    FloatArray,
    IntArray,
    death_hazard,
    emergency_admission_hazard,
)
from riskstrat.synth.params import SimulationParams
from riskstrat.synth.population import NEVER
from riskstrat.synth.simulation import Simulation
from riskstrat.synth.state import HiddenState, hazard_inputs
from riskstrat.synth.truth import state_at

#: The outcome window of the product, in days.
ORACLE_HORIZON_DAYS = 90
#: Monte Carlo draws per person of the within-window dynamics.
ORACLE_DRAWS = 32
#: People per chunk (times the draws: rows held at once).
_CHUNK_PEOPLE = 4096
_EPOCH = dt.date(1970, 1, 1)
_ORACLE_SCHEMA = pa.schema(
    [
        pa.field("nhs_number", pa.string()),
        pa.field("index_date", pa.date32()),
        pa.field("true_risk", pa.float64()),
    ]
)


def default_oracle_date(extract_date: dt.date, horizon_days: int = ORACLE_HORIZON_DAYS) -> dt.date:
    """The latest first-of-month D with ``D + horizon_days <= extract_date``."""
    d = dt.date(extract_date.year, extract_date.month, 1)
    while d + dt.timedelta(days=horizon_days) > extract_date:
        d = add_months(d, -1)
    return d


def default_oracle_path(out_dir: Path) -> Path:
    """Where the true risks of the extract in ``out_dir`` go by default: a sibling file."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.oracle.parquet"


def check_oracle_dates(
    index_dates: Sequence[dt.date],
    history_start: dt.date,
    extract_date: dt.date,
    horizon_days: int,
) -> None:
    """Raise ValueError unless every date is a first of month whose window is in the history."""
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    for d in index_dates:
        if isinstance(d, dt.datetime) or not isinstance(d, dt.date):
            raise TypeError("index dates must be datetime.date values")
        if d.day != 1:
            raise ValueError(f"index date {d} is not the first day of a month")
        if d < history_start:
            raise ValueError(f"index date {d} is before the history starts ({history_start})")
        if d + dt.timedelta(days=horizon_days) > extract_date:
            raise ValueError(
                f"index date {d}: its {horizon_days}-day window runs past the extract date "
                f"{extract_date}"
            )


def _geometric(g: FloatArray, a: IntArray, b: IntArray) -> FloatArray:
    """Sum over integers u in [a, b] of exp(-g u), elementwise (0 where b < a)."""
    count = np.maximum(b - a + 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g > 0, np.expm1(-g * count) / np.expm1(-g), count)
    return np.where(count > 0, np.exp(-g * a) * ratio, 0.0)


def _no_admission_path(
    st: HiddenState,
    index_day: int,
    end_day: int,
    extract_day: int,
    rng: np.random.Generator,
    params: SimulationParams,
) -> FloatArray:
    """P(no written emergency admission in [index_day, end_day)) for each row of ``st``,
    given one draw of the non-admission dynamics (each row is one person and draw).

    Within a month the generator draws whether a first admission happens with probability
    ``1 - exp(-g * span)`` and then its day from the same constant hazard, so the chance of
    none before day ``top`` is ``exp(-g * (top - start))`` whatever the month's end.
    """
    hp = params.hazards
    n = st.n
    rows = np.arange(n)
    dob = st.people.dob
    survive = np.ones(n)  # S_m
    total = np.zeros(n)  # sum of S_m * B_m
    s = index_day
    while s < end_day:
        start = _EPOCH + dt.timedelta(days=s)
        e = min((add_months(start, 1) - _EPOCH).days, extract_day)
        ndays = e - s
        x, _ = hazard_inputs(st, rows, s, start.month)
        g = emergency_admission_hazard(x, hp) / ndays  # per-day admission hazard
        lo = np.maximum(s, dob)
        ex_lo = np.maximum(lo, st.in_hospital_until + 1)
        death = st.death_day
        known = death < NEVER
        top = np.minimum(e, end_day)
        # Exposure days of the month: [ex_lo, top) and before a death already decided.
        length = np.maximum(np.minimum(top, np.where(known, death + 1, top)) - ex_lo, 0)
        # A new death: drawn with the generator's probability, on a uniform day of the month.
        dlo = np.maximum(lo, st.people.reg_from)
        dspan = np.maximum(e - dlo, 0)
        can_die = ~known & (dspan > 0)
        q = np.where(can_die, 1.0 - np.exp(-death_hazard(x, hp) * dspan / ndays), 0.0)
        # Dying on day d leaves exposure clip(d + 1 - ex_lo, 0, length): u = d + 1 - ex_lo runs
        # over [u0, u1].
        u0 = dlo + 1 - ex_lo
        u1 = np.maximum(e, dlo + 1) - ex_lo
        zeros = np.maximum(np.minimum(u1, 0) - u0 + 1, 0)
        middle = _geometric(g, np.maximum(u0, 1), np.minimum(u1, length))
        tail = np.maximum(u1 - np.maximum(u0, length + 1) + 1, 0) * np.exp(-g * length)
        die_no_adm = q / np.maximum(dspan, 1) * (zeros + middle + tail)
        total += survive * die_no_adm
        survive = survive * (1.0 - q) * np.exp(-g * length)
        nxt = e
        if nxt < end_day:
            # The month's other events, as if the person lived through it unadmitted.
            olo = ex_lo
            ohi = np.minimum(e, np.where(known, death + 1, e))
            ospan = np.maximum(ohi - olo, 0)
            frac = ospan / ndays
            live = ospan > 0
            draw_falls(rng, st, rows, x, olo, ohi, frac, live)
            draw_states(rng, st, rows, x, olo, ohi, live)
            draw_palliative_and_interventions(rng, st, rows, x, olo, ohi, frac, live, hp)
        s = nxt
    return np.asarray(total + survive, dtype=np.float64)


def population_at(state: HiddenState, day: int) -> IntArray:
    """Positions of the people in the features' population on ``day`` (recorded registration:
    registered on the day, not dead before it, born by it)."""
    p = state.people
    return np.flatnonzero(
        (p.reg_from <= day)
        & (p.reg_to > day)  # NEVER when still registered
        & (state.death_day >= day)  # NEVER when alive; later deaths are not yet recorded
        & (p.dob <= day)
    )


def compute_oracle(
    sim: Simulation,
    index_dates: Sequence[dt.date],
    *,
    horizon_days: int = ORACLE_HORIZON_DAYS,
    draws: int = ORACLE_DRAWS,
    seed: int | np.random.SeedSequence | None = None,
) -> pd.DataFrame:
    """True probability of one or more written emergency admissions in each person's window.

    Args:
        sim: a finished simulation (one block of :func:`generate_extract`, or
            :func:`~riskstrat.synth.simulate`'s result).
        index_dates: first days of months, each with its window inside the history.
        horizon_days: the outcome window ``[D, D + horizon_days)``.
        draws: Monte Carlo draws of the within-window dynamics per person.
        seed: seeds the draws; default ``sim.oracle_seed`` (so results are reproducible).

    Returns:
        Columns ``nhs_number`` (str), ``index_date`` (date) and ``true_risk`` (float in
        [0, 1]): one row for each person in the features' population at each index date,
        sorted by index date, then NHS number.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    check_oracle_dates(index_dates, sim.history_start, sim.extract_date, horizon_days)
    if seed is None:
        seed = sim.oracle_seed if sim.oracle_seed is not None else np.random.SeedSequence(sim.seed)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    extract_day = sim.day(sim.extract_date)
    final = sim.state
    frames: list[pd.DataFrame] = []
    for d in index_dates:
        # One stream per index date, keyed by the date: the same whatever else is asked for.
        child = np.random.SeedSequence(
            root.entropy, spawn_key=(*root.spawn_key, sim.day(d)), pool_size=root.pool_size
        )
        rng = np.random.default_rng(child)
        day = sim.day(d)
        end_day = day + horizon_days
        pop = population_at(final, day)
        st = state_at(sim, day)
        risk = np.empty(pop.size)
        for c0 in range(0, pop.size, _CHUNK_PEOPLE):
            people = pop[c0 : c0 + _CHUNK_PEOPLE]
            sub = st.take(np.repeat(people, draws))
            p_none = _no_admission_path(sub, day, end_day, extract_day, rng, sim.params)
            risk[c0 : c0 + people.size] = 1.0 - p_none.reshape(people.size, draws).mean(axis=1)
        nhs = sim.nhs_numbers[pop].astype(str)
        order = np.argsort(nhs, kind="stable")
        frames.append(
            pd.DataFrame(
                {
                    "nhs_number": pd.array(nhs[order], dtype="str"),
                    "index_date": [d] * pop.size,
                    "true_risk": np.clip(risk[order], 0.0, 1.0),
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                "nhs_number": pd.array([], dtype="str"),
                "index_date": pd.Series([], dtype=object),
                "true_risk": pd.Series([], dtype=np.float64),
            }
        )
    return pd.concat(frames, ignore_index=True)


def write_oracle(frames: Sequence[pd.DataFrame], path: Path) -> int:
    """Write oracle frames (blocks in NHS-number order) as one Parquet file sorted by index
    date, then NHS number. Returns the number of rows."""
    parts = [f for f in frames if len(f)]
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"nhs_number": [], "index_date": [], "true_risk": []})
    )
    # Blocks hold ascending NHS-number ranges, so a stable sort by date keeps them in order.
    order = np.argsort(
        np.array([(d - _EPOCH).days for d in table["index_date"]], dtype=np.int64), kind="stable"
    )
    days = np.array([(d - _EPOCH).days for d in table["index_date"]], dtype=np.int32)[order]
    arrow = pa.Table.from_arrays(
        [
            pa.array(np.asarray(table["nhs_number"], dtype=object)[order], pa.string()),
            pa.array(days, pa.int32()).cast(pa.date32()),
            pa.array(np.asarray(table["true_risk"], dtype=np.float64)[order], pa.float64()),
        ],
        schema=_ORACLE_SCHEMA,
    )
    pq.write_table(arrow, str(path), compression="snappy")
    return int(arrow.num_rows)


__all__ = [
    "ORACLE_DRAWS",
    "ORACLE_HORIZON_DAYS",
    "check_oracle_dates",
    "compute_oracle",
    "default_oracle_date",
    "default_oracle_path",
    "population_at",
    "write_oracle",
]
