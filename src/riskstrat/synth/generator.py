"""Synthetic population generator: simulate a GP-registered population month by month and
write it as an extract that satisfies the input data contract (``shared/spec/data-contract.md``).

Public entry points:

* :func:`simulate` returns the five tables as pandas DataFrames together with the hidden state
  and hidden event log (nothing is written);
* :func:`generate_extract` simulates and writes ``manifest.json`` plus the five tables as CSV
  or Parquet, atomically, and optionally each person's true risk (the oracle).

People are simulated in fixed blocks of :data:`BLOCK_SIZE`, each with its own random stream
spawned from the seed, and each block is written before the next is simulated, so that memory
stays flat whatever the population size. Only the practice structure and the NHS numbers are
drawn up front for everyone: the numbers are sorted and each block takes a contiguous slice,
so the blocks concatenated in order keep every table sorted by NHS number, then date.

Hospital activity that SUS would hold (emergency admissions and the A&E attendances that lead
to them) is written for as long as the person lives, whether or not they are still registered,
because the activity table is SUS-linked; everything else is written only while registered.

The simulation is vectorised over people and loops over calendar months only. A burn-in year
before the history gives everyone a realistic recent-admission history; nothing from the
burn-in is written. Emergency admissions are drawn from
:func:`riskstrat.synth.hazards.emergency_admission_hazard`, the single place their risk is
defined.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from riskstrat.calendar import add_months
from riskstrat.data.contract import (
    ADMISSION_METHODS,
    CONDITIONS,
    CONTRACT_VERSION,
    OBSERVATION_CODES,
    SETTINGS,
    TABLE_ORDER,
    TABLES,
)
from riskstrat.data.files import replace_folder
from riskstrat.nhs_number import SYNTHETIC_NHS_CAPACITY, sorted_synthetic_nhs_numbers
from riskstrat.synth.catalogue import (
    AE_DIAGNOSES,
    AE_FALL_DIAGNOSIS,
    ANTIBIOTIC_COURSES,
    CONDITION_INDEX,
    CONDITION_SPECS,
    ELECTIVE_DIAGNOSES,
    EMERGENCY_DIAGNOSES,
    MATERNITY_DIAGNOSES,
    REGIMEN_GROUPS,
    STEROID_COURSE,
    Medicine,
)
from riskstrat.synth.dynamics import (
    Falls,
    Interventions,
    draw_falls,
    draw_palliative_and_interventions,
    draw_states,
    uniform_days,
)
from riskstrat.synth.hazards import (
    DEFAULT_HAZARD_PARAMS,
    BoolArray,
    FloatArray,
    HazardInputs,
    HazardParams,
    IntArray,
    death_hazard,
    emergency_admission_hazard,
    inhospital_death_probability,
    latent_frailty,
)
from riskstrat.synth.omop import OmopLayout, OmopWriter
from riskstrat.synth.population import (
    DAYS_PER_YEAR,
    NEVER,
    People,
    Practices,
    build_practices,
    draw_people,
)
from riskstrat.synth.state import (
    DEFICIT_CAP,
    DEFICIT_PER_ADMISSION,
    LONG_AGO,
    RECENT_ADMISSIONS_KEPT,
    HiddenState,
    hazard_inputs,
)

ProgressCallback = Callable[[str, float], None]
Format = Literal["csv", "parquet", "omop"]
_T = TypeVar("_T")

#: People simulated and written together. A constant, never derived from the machine, so that
#: the same seed gives the same files everywhere; a block of 100,000 people with 48 months of
#: history peaks at about 1.5 GB.
BLOCK_SIZE = 100_000
#: Share of falls that are coded in the GP record, and that are seen in A&E.
FALL_CODED_SHARE = 0.3
FALL_AE_SHARE = 0.1
#: Share of same-day duplicate GP contacts kept (the rest are merged, as most systems do).
GP_DUPLICATES_KEPT = 0.3

_EPOCH = dt.date(1970, 1, 1)
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
_RX_EFFECT = 1.1  # log-odds of each regimen per SD of prescribing intensity
#: Log-odds added to every background regimen and per long-term condition ever diagnosed,
#: so that polypharmacy in the oldest reaches its real level (10+ medicines: 15-25% of 75+).
_BACKGROUND_SHIFT = 0.7
_BACKGROUND_PER_CONDITION = 0.2


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


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_extract` wrote."""

    out_dir: Path
    n_patients: int
    rows: dict[str, int]
    extract_date: dt.date
    history_start: dt.date
    seconds: float
    fmt: str = "csv"
    seed: int = 0
    oracle_path: Path | None = None  # where the true risks were written, if asked for
    oracle_dates: tuple[dt.date, ...] = ()  # their index dates


@dataclass
class Simulation:
    """Result of :func:`simulate`: the extract's tables plus the hidden truth behind them.

    ``tables`` holds the five contract tables (patients, activity, conditions, medications,
    observations) with the contract's column names; child tables use categorical columns for
    codes and NHS numbers to keep memory low. ``state`` is the hidden per-person state at the
    end of the simulation (row i belongs to ``nhs_numbers[i]``). ``events`` is the hidden event
    log, including events never written (burn-in, before registration): ``emergency_admissions``
    (person, start_day, end_day, recorded), ``falls`` (person, day) and ``interventions``
    (person, code, day, decided: the day it was decided, which may be earlier than ``day``).
    ``oracle_seed`` seeds the Monte Carlo of :func:`riskstrat.synth.oracle.compute_oracle`.
    """

    tables: dict[str, pd.DataFrame]
    state: HiddenState
    events: dict[str, pd.DataFrame]
    nhs_numbers: npt.NDArray[np.str_]
    practices: Practices
    extract_date: dt.date
    history_start: dt.date
    seed: int
    months: int
    params: SimulationParams = field(default_factory=SimulationParams)
    oracle_seed: np.random.SeedSequence | None = None

    @property
    def patients(self) -> pd.DataFrame:
        """The patients table."""
        return self.tables["patients"]

    @property
    def activity(self) -> pd.DataFrame:
        """The activity table."""
        return self.tables["activity"]

    @property
    def conditions(self) -> pd.DataFrame:
        """The conditions table."""
        return self.tables["conditions"]

    @property
    def medications(self) -> pd.DataFrame:
        """The medications table."""
        return self.tables["medications"]

    @property
    def observations(self) -> pd.DataFrame:
        """The observations table."""
        return self.tables["observations"]

    def day(self, d: dt.date) -> int:
        """A date as the integer day used by the hidden state."""
        return _to_day(d)


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
    return np.minimum((cum < r[:, None]).sum(axis=1), weights.shape[1] - 1).astype(np.int64)


def _masked(
    values: npt.NDArray[np.generic], keep: BoolArray, dtype: str
) -> pd.api.extensions.ExtensionArray:
    """A pandas array of ``dtype`` with missing values where ``keep`` is false."""
    return pd.Series(values, dtype=dtype).where(keep).array


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
    return np.argsort(key, kind="stable")


def _weekday_shift(days: IntArray) -> IntArray:
    """Move Saturdays to Friday and Sundays to Monday (1970-01-01 was a Thursday)."""
    wd = (days + 3) % 7  # Monday = 0
    return days - (wd == 5) + (wd == 6)


class _Simulator:
    """Holds the hidden state and runs the monthly loop."""

    def __init__(
        self,
        *,
        nhs: npt.NDArray[np.int64],
        practices: Practices,
        seed_sequence: np.random.SeedSequence,
        months: int,
        extract_date: dt.date,
        params: SimulationParams,
        progress: ProgressCallback | None,
    ) -> None:
        self.n = int(nhs.shape[0])
        self.months = months
        self.params = params
        self.hp = params.hazards
        self.progress = progress
        self.extract_date = extract_date
        self.history_start_date = history_start_for(extract_date, months)
        self.hs = _to_day(self.history_start_date)
        self.extract = _to_day(extract_date)
        children = seed_sequence.spawn(6)
        (
            self.rng_pop,
            self.rng_sim,
            self.rng_med,
            self.rng_obs,
            self.rng_out,
        ) = (np.random.default_rng(c) for c in children[:5])
        self.oracle_seed = children[5]
        self.practices = practices
        # The block's numbers are a sorted slice; shuffle them over the people drawn.
        self.nhs = self.rng_out.permutation(nhs).astype("U10")
        self.act = _Rows(_ACT_COLS)
        self.obs = _Rows(_OBS_COLS)
        self.adm_log = _Rows(("person", "start", "end", "recorded"))
        self.fall_log = _Rows(("person", "day"))
        self.int_log = _Rows(("person", "code", "day", "decided"))

    def _report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, float(min(max(fraction, 0.0), 1.0)))

    # ------------------------------------------------------------------ population
    def build_population(self) -> None:
        rng = self.rng_pop
        n = self.n
        people = draw_people(rng, n, self.practices, self.hs, self.extract)
        self.people = people
        dep = people.deprivation
        age_hs = (self.hs - people.dob) / DAYS_PER_YEAR
        adult = age_hs >= 16
        hp = self.hp

        u = rng.normal(-0.5 * hp.individual_effect_sd**2, hp.individual_effect_sd, size=n)
        z_frail = rng.normal(-0.125, 0.5, size=n)
        mm = rng.normal(0.0, 1.0, size=n)
        # Prescribing intensity: frailer and multimorbid people get more of everything.
        rx = 0.7 * (z_frail + 0.125) / 0.5 + 0.5 * mm + rng.normal(0.0, 0.5, size=n)
        smoker_ever = adult & (rng.random(n) < _sigmoid(-0.8 + 0.6 * dep + 0.3 * people.male))
        smoker = smoker_ever & (
            rng.random(n) < _sigmoid(-0.3 + 0.5 * dep - 0.035 * np.maximum(age_hs - 35.0, 0.0))
        )
        alcohol = (age_hs >= 18) & (rng.random(n) < _sigmoid(-4.0 + 0.7 * people.male + 0.6 * dep))
        homeless = (
            (age_hs >= 18)
            & (age_hs < 70)
            & (rng.random(n) < _sigmoid(-6.8 + 1.5 * dep + 0.6 * people.male))
        )
        p_alone = np.interp(
            age_hs, [0, 17, 20, 30, 65, 75, 85, 100], [0.0, 0.0, 0.08, 0.14, 0.16, 0.27, 0.40, 0.55]
        )
        p_alone = p_alone * np.where(people.male, 0.8, 1.15)
        lives_alone = rng.random(n) < p_alone

        onset = self._draw_onsets(rng, people, dep, mm, smoker_ever, alcohol)

        self.state = HiddenState(
            people=people,
            individual_effect=u,
            frailty_propensity=z_frail,
            multimorbidity=mm,
            prescribing_intensity=rx,
            smoker_ever=smoker_ever,
            smoker=smoker,
            alcohol_misuse=alcohol,
            homeless=homeless,
            lives_alone=lives_alone,
            onset=onset,
            care_home_from=np.full(n, NEVER, np.int64),
            housebound_from=np.full(n, NEVER, np.int64),
            has_carer_from=np.full(n, NEVER, np.int64),
            home_care_from=np.full(n, NEVER, np.int64),
            housebound_threshold=rng.normal(0.30, 0.08, size=n),
            has_carer_threshold=rng.normal(0.26, 0.08, size=n),
            home_care_threshold=rng.normal(0.32, 0.08, size=n),
            accumulated_deficits=np.zeros(n),
            recent_admissions=np.full((n, RECENT_ADMISSIONS_KEPT), LONG_AGO, np.int64),
            in_hospital_until=np.full(n, LONG_AGO, np.int64),
            last_fall=np.full(n, LONG_AGO, np.int64),
            last_falls_assessment=np.full(n, LONG_AGO, np.int64),
            last_medication_review=np.full(n, LONG_AGO, np.int64),
            advance_care_plan=np.full(n, NEVER, np.int64),
            death_day=np.full(n, NEVER, np.int64),
            frailty_at_extract=np.zeros(n),
            death_decided=np.full(n, NEVER, np.int64),
        )
        self._init_care_home(rng)

    def _draw_onsets(
        self,
        rng: np.random.Generator,
        people: People,
        dep: FloatArray,
        mm: FloatArray,
        smoker_ever: BoolArray,
        alcohol: BoolArray,
    ) -> npt.NDArray[np.int32]:
        """Onset day of every condition (NEVER if none), drawn once; parents first."""
        n = people.dob.shape[0]
        onset = np.full((n, len(CONDITIONS)), NEVER, dtype=np.int32)
        ever = np.zeros((n, len(CONDITIONS)), dtype=bool)
        for spec in CONDITION_SPECS:
            z = (
                _logit(spec.lifetime)
                + spec.male * people.male
                + spec.deprivation * dep
                + spec.multimorbidity * mm
                + spec.smoker * smoker_ever
                + spec.alcohol * alcohol
            )
            for parent, beta in spec.parents:
                z = z + beta * ever[:, _C[parent]]
            lifetime = _sigmoid(z)
            u = rng.random(n)
            has = u < lifetime
            q = np.clip(u / lifetime, 1e-9, 1 - 1e-9)
            a50 = spec.a50 - spec.deprivation_age_shift * dep
            age = np.maximum(a50 + spec.scale * np.log(q / (1.0 - q)), spec.min_age)
            age = age + rng.random(n) * 0.5  # break ties at min_age
            day = people.dob + np.round(age * DAYS_PER_YEAR).astype(np.int64)
            ci = _C[spec.code]
            onset[:, ci] = np.where(has, np.minimum(day, NEVER), NEVER)
            ever[:, ci] = has
        return onset

    def _init_care_home(self, rng: np.random.Generator) -> None:
        """Care home residents at the start of the burn-in (older, frail, with dementia)."""
        st = self.state
        day0 = self.hs - round(self.params.burn_in_months * 30.44)
        idx = np.flatnonzero(st.people.dob < day0)
        x, age = hazard_inputs(st, idx, day0, 1)
        z = (
            -7.1
            + 0.09 * (age - 65.0)
            + 7.0 * x.frailty
            + 1.6 * x.conditions[:, _C["DEMENTIA"]]
            + 0.5 * x.lives_alone
        )
        resident = (age >= 65) & (rng.random(idx.shape[0]) < _sigmoid(z))
        back = np.floor(rng.random(idx.shape[0]) * 4 * DAYS_PER_YEAR).astype(np.int64)
        st.care_home_from[idx[resident]] = day0 - back[resident]
        for arr, thr in (
            (st.housebound_from, st.housebound_threshold),
            (st.has_carer_from, st.has_carer_threshold),
            (st.home_care_from, st.home_care_threshold),
        ):
            hit = x.frailty > thr[idx]
            arr[idx[hit]] = day0 - back[hit]

    # ------------------------------------------------------------------ monthly loop
    def run(self) -> None:
        start = add_months(self.history_start_date, -self.params.burn_in_months)
        month_starts: list[dt.date] = []
        m = start
        while _to_day(m) < self.extract:
            month_starts.append(m)
            m = add_months(m, 1)
        total = len(month_starts)
        for i, ms in enumerate(month_starts):
            s = _to_day(ms)
            e = min(_to_day(add_months(ms, 1)), self.extract)
            self._month(s, e, ms.month, recording=s >= self.hs)
            self._report("simulate", (i + 1) / total)
        # Frailty on the extract date (or the day of death) for the post-hoc recordings.
        st = self.state
        day = np.minimum(st.death_day, self.extract)
        age = np.maximum((day - st.people.dob) / DAYS_PER_YEAR, 0.0)
        st.frailty_at_extract = latent_frailty(
            age, st.onset <= day[:, None], st.frailty_propensity, st.accumulated_deficits
        )

    def _month(self, s: int, e: int, month_of_year: int, *, recording: bool) -> None:
        st = self.state
        p = st.people
        rng = self.rng_sim
        hp = self.hp
        ndays = e - s
        # Everyone born and alive, registered or not: people who join later have a hidden
        # history, and people who have left still have (SUS-linked) emergency admissions.
        idx = np.flatnonzero((p.dob < e) & (st.death_day >= s))
        if idx.size == 0:
            return
        x, age = hazard_inputs(st, idx, s, month_of_year)
        lo = np.maximum(s, p.dob[idx])
        lam = emergency_admission_hazard(x, hp)
        mu = death_hazard(x, hp)
        k = idx.shape[0]
        reg_from = p.reg_from[idx]

        # Deaths outside an admission: inside the history, from registration on (people who
        # join later must live to join), whether or not they have left since.
        before = st.death_day[idx].copy()
        death = before.copy()
        if recording:
            dlo = np.maximum(lo, reg_from)
            dspan = np.maximum(e - dlo, 0)
            can = (death == NEVER) & (dspan > 0)
            pd_ = 1.0 - np.exp(-mu * dspan / ndays)
            dies = can & (rng.random(k) < pd_)
            dday = _uniform_days(rng, dlo, np.maximum(e, dlo + 1))
            death = np.where(dies, dday, death)

        # Emergency admissions (up to two a month), exposure outside hospital and before death.
        ex_lo = np.maximum(lo, st.in_hospital_until[idx] + 1)
        ex_hi = np.minimum(e, death + 1)
        q_die = inhospital_death_probability(x, hp)
        any_adm = np.zeros(k, dtype=bool)
        at_risk = np.ones(k, dtype=bool)  # a second admission only after a first one
        for _ in range(2):
            span = np.maximum(ex_hi - ex_lo, 0)
            hit = at_risk & (span > 0) & (rng.random(k) < 1.0 - np.exp(-lam * span / ndays))
            at_risk = hit
            h = np.flatnonzero(hit)
            if h.size == 0:
                break
            adm = _first_event_days(rng, lam[h] / ndays, ex_lo[h], ex_hi[h])
            los = self._length_of_stay(rng, age[h], x.frailty[h])
            dis = adm + los
            # Death in hospital: drawn per admission, or a death already due during the stay.
            dies_in = recording & (adm >= reg_from[h]) & (rng.random(h.size) < q_die[h])
            due = death[h]
            dis = np.where((due >= adm) & (due < dis), due, dis)
            new_death = np.where(dies_in, np.minimum(dis, due), due)
            dis = np.where(dies_in, new_death, dis)
            death[h] = new_death
            self._record_emergency(rng, idx[h], adm, dis, x, h, age[h], recording)
            any_adm[h] = True
            st.in_hospital_until[idx[h]] = dis
            ra = st.recent_admissions
            ra[idx[h], 1:] = ra[idx[h], :-1]
            ra[idx[h], 0] = adm
            old = (adm - p.dob[idx[h]]) / DAYS_PER_YEAR >= 65
            st.accumulated_deficits[idx[h]] = np.minimum(
                st.accumulated_deficits[idx[h]] + DEFICIT_PER_ADMISSION * old, DEFICIT_CAP
            )
            ex_lo[h] = dis + 1
            ex_hi[h] = np.minimum(ex_hi[h], death[h] + 1)
        st.death_day[idx] = death
        st.death_decided[idx[death != before]] = s

        # Out-of-hospital window for everything else (as at the start of the month).
        olo = np.maximum(lo, np.where(any_adm, lo, st.in_hospital_until[idx] + 1))
        ohi = np.minimum(e, death + 1)
        ospan = np.maximum(ohi - olo, 0)
        frac = ospan / ndays
        live = ospan > 0

        falls = draw_falls(rng, st, idx, x, olo, ohi, frac, live)
        self._record_falls(rng, idx, falls, recording)
        draw_states(rng, st, idx, x, olo, ohi, live)
        iv = draw_palliative_and_interventions(rng, st, idx, x, olo, ohi, frac, live, hp)
        self._record_interventions(idx, iv, recording)
        if recording:
            # GP-side records only for people on the list at some time this month.
            listed = live & (reg_from < e) & (p.reg_to[idx] > s)
            self._contacts(rng, idx, x, age, lam, olo, ohi, frac, listed)
            self._loop_observations(rng, idx, x, age, olo, ohi, frac, listed)

    def _length_of_stay(
        self, rng: np.random.Generator, age: FloatArray, frailty: FloatArray
    ) -> IntArray:
        zero = rng.random(age.shape[0]) < np.where(age < 65, 0.25, 0.12)
        mu = np.log(1.2 + 0.035 * age + 14.0 * frailty)
        los = 1 + np.floor(rng.lognormal(mu, 0.85))
        return np.where(zero, 0, np.minimum(los, 180)).astype(np.int64)

    def _record_emergency(
        self,
        rng: np.random.Generator,
        persons: IntArray,
        adm: IntArray,
        dis: IntArray,
        x: HazardInputs,
        h: IntArray,
        age: FloatArray,
        recording: bool,
    ) -> None:
        self.adm_log.add(
            person=persons, start=adm, end=dis, recorded=np.full(persons.shape[0], recording)
        )
        if not recording:
            return
        c = x.conditions[h]
        fell = x.fall_180d[h]
        old = age >= 65

        def cc(code: str) -> FloatArray:
            return c[:, _C[code]].astype(np.float64)

        columns = [
            3.0 * cc("COPD"),  # J44.1
            3.0 * cc("HEART_FAILURE"),  # I50.9
            0.4 + 1.0 * (age >= 75) + 1.0 * cc("DEMENTIA"),  # N39.0
            0.6 + 0.3 * old,  # R55
            2.5 * fell * old + 0.3 * cc("OSTEOPOROSIS") + 0.1 * (age >= 80),  # S72.0
            0.3 + 0.8 * old + cc("COPD"),  # J18.9
            0.8 + 0.8 * cc("CHD"),  # R07.4
            0.7 * cc("CHD"),  # I21.9
            0.8 * cc("AF"),  # I48.9
            0.1 + 0.4 * (age >= 60) + 0.8 * cc("AF") + 0.5 * cc("STROKE_TIA"),  # I63.9
            0.3 + 1.0 * (age < 65),  # R10.4
            0.4,  # A09
            1.5 * cc("ASTHMA") * (age < 60),  # J45.9
            1.5 * cc("DEMENTIA"),  # F05.9
            0.6 * cc("DIABETES"),  # E16.2
            0.6 * cc("DEPRESSION") * (age < 65) + 1.0 * cc("SMI"),  # T43.2
            2.0 * cc("LIVER_DISEASE"),  # K70.3
            1.5 * cc("CANCER"),  # C80.9
            2.0 * cc("EPILEPSY"),  # G40.9
            2.0 * (age < 5),  # J06.9
            0.4,  # L03.1
            0.3 + 0.5 * cc("HEART_FAILURE"),  # R06.0
        ]
        w = np.column_stack(
            [np.broadcast_to(np.asarray(v, np.float64), age.shape) for v in columns]
        )
        diag_local = _pick(rng, w)
        em_codes = np.array([_DIAG_INDEX[d] for d in EMERGENCY_DIAGNOSES])
        diag = np.where(rng.random(h.size) < 0.9, em_codes[diag_local], -1)
        n = persons.shape[0]
        self.act.add(
            person=persons,
            setting=_SETTING["inpatient"],
            method=_METHOD["emergency"],
            start=adm,
            end=dis,
            diag=diag,
            attended=np.full(n, -1),
            linked=1,
        )
        via_ae = rng.random(n) < 0.8
        ae_diag = np.where(rng.random(n) < 0.5, diag, -1)
        self.act.add(
            person=persons[via_ae],
            setting=_SETTING["ae"],
            method=-1,
            start=adm[via_ae],
            end=adm[via_ae],
            diag=ae_diag[via_ae],
            attended=np.full(np.count_nonzero(via_ae), -1),
            linked=1,
        )

    def _record_falls(
        self, rng: np.random.Generator, idx: IntArray, falls: Falls, recording: bool
    ) -> None:
        """Log the month's falls and assessments; code some falls and send some to A&E."""
        who = idx[falls.local]
        day = falls.day
        assess = falls.assessed
        self.fall_log.add(person=who, day=day)
        self.int_log.add(
            person=who[assess],
            code=_OBS["FALLS_ASSESSMENT"],
            day=falls.assessment_day,
            decided=day[assess],
        )
        if not recording:
            return
        n = who.shape[0]
        coded = rng.random(n) < FALL_CODED_SHARE
        self.obs.add(
            person=who[coded],
            day=day[coded],
            code=_OBS["FALL"],
            value=np.full(np.count_nonzero(coded), np.nan),
        )
        self.obs.add(
            person=who[assess],
            day=falls.assessment_day,
            code=_OBS["FALLS_ASSESSMENT"],
            value=np.full(np.count_nonzero(assess), np.nan),
        )
        to_ae = rng.random(n) < FALL_AE_SHARE
        m = np.count_nonzero(to_ae)
        self.act.add(
            person=who[to_ae],
            setting=_SETTING["ae"],
            method=-1,
            start=day[to_ae],
            end=day[to_ae],
            diag=np.where(rng.random(m) < 0.6, _DIAG_INDEX[AE_FALL_DIAGNOSIS], -1),
            attended=np.full(m, -1),
            linked=0,
        )

    def _record_interventions(self, idx: IntArray, iv: Interventions, recording: bool) -> None:
        """Log the month's advance care plans and medication reviews; record them."""
        who_acp = idx[iv.acp_local]
        who_mr = idx[iv.review_local]
        self.int_log.add(
            person=who_acp, code=_OBS["ADVANCE_CARE_PLAN"], day=iv.acp_day, decided=iv.acp_decided
        )
        self.int_log.add(
            person=who_mr, code=_OBS["MEDICATION_REVIEW"], day=iv.review_day, decided=iv.review_day
        )
        if recording:
            self.obs.add(
                person=who_acp,
                day=iv.acp_day,
                code=_OBS["ADVANCE_CARE_PLAN"],
                value=np.full(who_acp.size, np.nan),
            )
            self.obs.add(
                person=who_mr,
                day=iv.review_day,
                code=_OBS["MEDICATION_REVIEW"],
                value=np.full(who_mr.size, np.nan),
            )

    def _contacts(
        self,
        rng: np.random.Generator,
        idx: IntArray,
        x: HazardInputs,
        age: FloatArray,
        lam: FloatArray,
        olo: IntArray,
        ohi: IntArray,
        frac: FloatArray,
        live: BoolArray,
    ) -> None:
        """GP, outpatient, community, A&E (not admitted), elective and maternity activity."""
        st = self.state
        f = x.frailty
        c = x.conditions
        n_cond = c.sum(axis=1)
        cancer = c[:, _C["CANCER"]]
        dep = x.deprivation
        housebound = st.housebound_from[idx] <= olo
        frac = np.where(live, frac, 0.0)

        def add(
            setting: str,
            annual: FloatArray,
            *,
            attended_p: FloatArray | None = None,
            diag_codes: tuple[str, ...] | None = None,
            diag_p: float = 0.0,
            method: str | None = None,
            day_case: float = 1.0,
            weekdays: bool = False,
        ) -> None:
            pers, days = _poisson_rows(rng, np.arange(idx.shape[0]), olo, ohi, annual / 12.0 * frac)
            m = pers.shape[0]
            if m == 0:
                return
            if weekdays:
                days = np.clip(_weekday_shift(days), olo[pers], ohi[pers] - 1)
            if setting == "gp":
                # Most same-day repeats are merged; a few duplicates remain, as in real data.
                order = np.lexsort((days, pers))
                dup = np.zeros(m, dtype=bool)
                dup[order[1:]] = (pers[order[1:]] == pers[order[:-1]]) & (
                    days[order[1:]] == days[order[:-1]]
                )
                keep = ~dup | (rng.random(m) < GP_DUPLICATES_KEPT)
                pers, days = pers[keep], days[keep]
                m = pers.shape[0]
            att = np.full(m, -1)
            if attended_p is not None:
                att = (rng.random(m) >= attended_p[pers]).astype(np.int64)
            diag = np.full(m, -1)
            if diag_codes is not None:
                codes = np.array([_DIAG_INDEX[d] for d in diag_codes])
                pick = codes[rng.integers(0, len(codes), size=m)]
                diag = np.where(rng.random(m) < diag_p, pick, -1)
            if setting == "inpatient":
                # Day cases end the day they start; other stays last one to three nights.
                stay = np.where(rng.random(m) < day_case, 0, rng.integers(1, 4, size=m))
                end = days + stay
            elif setting == "ae":
                end = days
            else:
                end = np.full(m, -1)
            self.act.add(
                person=idx[pers],
                setting=_SETTING[setting],
                method=_METHOD[method] if method else -1,
                start=days,
                end=end,
                diag=diag,
                attended=att,
                linked=0,
            )

        gp_annual = 2.0 + 0.055 * age + 1.1 * n_cond + 14.0 * f + 3.0 * (age < 5) + 0.8 * (~x.male)
        add(
            "gp",
            gp_annual,
            attended_p=0.035 + 0.02 * np.maximum(dep, 0.0) + 0.02 * (age < 30),
            weekdays=True,
        )
        op_annual = 0.5 + 0.015 * age + 0.35 * n_cond + 2.0 * cancer
        add("outpatient", op_annual, attended_p=0.06 + 0.04 * np.maximum(dep, 0.0), weekdays=True)
        comm_annual = (
            0.05 + 25.0 * f**2 + 6.0 * housebound + 4.0 * x.care_home + 4.0 * c[:, _C["PALLIATIVE"]]
        )
        add("community", comm_annual, weekdays=True)
        ae_base = np.interp(
            age,
            [0, 5, 15, 16, 30, 31, 65, 80, 100],
            [0.45, 0.3, 0.25, 0.35, 0.35, 0.22, 0.22, 0.3, 0.4],
        )
        ae_annual = (
            ae_base * (1.0 + 0.3 * dep)
            + 2.5 * 12.0 * lam
            + 1.5 * x.homeless
            + 0.8 * x.alcohol_misuse
        )
        add("ae", ae_annual, diag_codes=AE_DIAGNOSES, diag_p=0.45)
        el_annual = 0.02 + 0.002 * age + 0.03 * n_cond + 1.2 * cancer
        add(
            "inpatient",
            el_annual,
            method="elective",
            diag_codes=ELECTIVE_DIAGNOSES,
            diag_p=0.85,
            day_case=0.65,
            weekdays=True,
        )
        fertile = (~x.male) & (st.people.sex_code[idx] == "F") & (age >= 17) & (age < 45)
        mat_annual = np.where(
            fertile, np.interp(age, [17, 25, 32, 40, 45], [0.03, 0.08, 0.10, 0.03, 0.0]), 0.0
        )
        add(
            "inpatient",
            mat_annual,
            method="maternity",
            diag_codes=MATERNITY_DIAGNOSES,
            diag_p=0.9,
            day_case=0.2,
        )

    def _loop_observations(
        self,
        rng: np.random.Generator,
        idx: IntArray,
        x: HazardInputs,
        age: FloatArray,
        olo: IntArray,
        ohi: IntArray,
        frac: FloatArray,
        live: BoolArray,
    ) -> None:
        """Frailty-dependent observations recorded in the month: CFS, mobility, weight loss."""
        k = idx.shape[0]
        f = x.frailty
        c = x.conditions

        def emit(code: str, monthly: FloatArray, value: FloatArray | None = None) -> None:
            hit = np.flatnonzero(live & (rng.random(k) < 1.0 - np.exp(-monthly * frac)))
            day = _uniform_days(rng, olo[hit], ohi[hit])
            v = np.full(hit.size, np.nan) if value is None else value[hit]
            self.obs.add(person=idx[hit], day=day, code=_OBS[code], value=v)

        cfs_rate = np.where(
            (age >= 75) & (f > 0.12), 0.03 + 0.03 * x.care_home, np.where(age >= 65, 0.004, 0.0)
        )
        cfs = np.clip(np.round(2.0 + 12.0 * f + rng.normal(0.0, 0.6, size=k)), 1, 9)
        emit("CFS", cfs_rate, cfs)
        emit("MOBILITY_PROBLEM", np.where(age >= 50, 0.12 * np.clip((f - 0.08) / 0.22, 0, 1), 0.0))
        wl = (
            0.0005 * (age >= 60)
            + 0.04 * np.clip((f - 0.15) / 0.25, 0, 1)
            + 0.015 * c[:, _C["CANCER"]]
            + 0.03 * c[:, _C["PALLIATIVE"]]
            + 0.006 * c[:, _C["DEMENTIA"]]
        )
        emit("WEIGHT_LOSS", wl)

    # ------------------------------------------------------------------ after the loop
    def finalise_registration(self) -> None:
        """Deaths known before the extract date end registration a few weeks later."""
        st = self.state
        p = st.people
        rng = self.rng_out
        died = st.death_day < self.extract
        dereg = st.death_day + rng.integers(0, 31, size=self.n)
        new = np.minimum(p.reg_to, dereg)
        p.reg_to = np.where(died, np.where(new < self.extract, new, NEVER), p.reg_to)
        self.died = died
        self.rec_lo = np.maximum(self.hs, p.reg_from)
        rec_hi = np.minimum(self.extract, p.reg_to)
        self.rec_hi = np.where(died, np.minimum(rec_hi, st.death_day + 1), rec_hi)
        # SUS-linked rows run on after deregistration, for as long as the person lives.
        self.life_hi = np.where(died, st.death_day + 1, self.extract)

    def medications(self) -> dict[str, npt.NDArray[np.generic]]:
        """Repeat prescriptions following conditions and background needs, plus courses."""
        rng = self.rng_med
        st = self.state
        p = st.people
        n = self.n
        onset = st.onset
        ever = onset < NEVER
        n_ever = ever.sum(axis=1)
        z_std = (st.frailty_propensity + 0.125) / 0.5
        rx = st.prescribing_intensity
        med_names: list[Medicine] = []
        med_id: dict[Medicine, int] = {}

        def mid(m: Medicine) -> int:
            if m not in med_id:
                med_id[m] = len(med_names)
                med_names.append(m)
            return med_id[m]

        persons: list[IntArray] = []
        starts: list[IntArray] = []
        stops: list[IntArray] = []
        intervals: list[IntArray] = []
        meds: list[IntArray] = []
        for g in REGIMEN_GROUPS:
            if g.trigger:
                cand = np.flatnonzero(ever[:, _C[g.trigger]])
                start = onset[cand, _C[g.trigger]].astype(np.int64)
                start = start + rng.integers(0, 45, size=cand.size)
            else:
                z = (
                    _logit(g.lifetime)
                    + _BACKGROUND_SHIFT
                    + _BACKGROUND_PER_CONDITION * n_ever
                    + g.male * p.male
                    + g.frailty * z_std
                    + g.per_condition * n_ever
                    + _RX_EFFECT * rx
                )
                for code, beta in g.conditions:
                    z = z + beta * ever[:, _C[code]]
                lifetime = _sigmoid(z)
                u = rng.random(n)
                has = u < lifetime
                if g.sex:
                    has &= p.sex_code == g.sex
                q = np.clip(u / lifetime, 1e-9, 1 - 1e-9)
                age = np.maximum(g.a50 + g.scale * np.log(q / (1 - q)), g.min_age)
                cand = np.flatnonzero(has)
                start = p.dob[cand] + np.round(age[cand] * DAYS_PER_YEAR).astype(np.int64)
            probs = np.array([pr for _, pr in g.options])
            total = float(probs.sum())
            if total < 1.0:
                p_any = _sigmoid(_logit(total) + _RX_EFFECT * rx[cand])
            else:
                p_any = np.ones(cand.size)
            r = rng.random(cand.size)
            take = r < p_any
            # Which option, given one is taken: proportional to the catalogue's shares.
            r2 = rng.random(cand.size) * total
            option = np.minimum(
                np.searchsorted(np.cumsum(probs), r2, side="right"), len(g.options) - 1
            )
            ids = np.array([mid(m) for m, _ in g.options])
            cand, start, option = cand[take], start[take], option[take]
            interval = np.where(
                rng.random(cand.size) < g.long_interval_share, 2 * g.interval_days, g.interval_days
            )
            if g.mean_duration_months is None:
                stop = np.full(cand.size, NEVER, np.int64)
            else:
                dur = rng.exponential(g.mean_duration_months * 30.44, size=cand.size)
                stop = start + 28 + np.floor(dur).astype(np.int64)
            persons.append(cand)
            starts.append(start)
            stops.append(stop)
            intervals.append(interval.astype(np.int64))
            meds.append(ids[option])
        per = np.concatenate(persons)
        st_ = np.concatenate(starts)
        sp = np.concatenate(stops)
        iv = np.concatenate(intervals)
        md = np.concatenate(meds)
        # One regimen per person and medicine: earliest start, latest stop.
        order = np.lexsort((st_, md, per))
        per, st_, sp, iv, md = per[order], st_[order], sp[order], iv[order], md[order]
        first = np.ones(per.size, dtype=bool)
        first[1:] = (per[1:] != per[:-1]) | (md[1:] != md[:-1])
        bounds = np.flatnonzero(first)
        sp = np.maximum.reduceat(sp, bounds) if bounds.size else sp
        per, st_, iv, md = per[bounds], st_[bounds], iv[bounds], md[bounds]
        # Issue dates in the recorded window.
        lo = np.maximum(st_, self.rec_lo[per])
        hi = np.minimum(sp, self.rec_hi[per])
        ok = hi > lo
        per, st_, iv, md, lo, hi = per[ok], st_[ok], iv[ok], md[ok], lo[ok], hi[ok]
        k0 = -((st_ - lo) // iv)  # ceil((lo - start) / interval)
        k1 = (hi - 1 - st_) // iv
        cnt = np.maximum(k1 - k0 + 1, 0)
        rep = np.repeat(np.arange(per.size), cnt)
        offs = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        kk = k0[rep] + (np.arange(rep.size) - offs[rep])
        day = st_[rep] + kk * iv[rep] + rng.integers(-3, 4, size=rep.size)
        keep = (day >= lo[rep]) & (day < hi[rep]) & (rng.random(rep.size) >= 0.03)
        out_p = [per[rep][keep]]
        out_d = [day[keep]]
        out_m = [md[rep][keep]]

        # Acute courses: antibiotics for everyone, steroid rescue for COPD and asthma.
        everyone = np.arange(n)
        mid_day = (self.rec_lo + self.rec_hi) // 2
        age = np.maximum((mid_day - p.dob) / DAYS_PER_YEAR, 0.0)
        has = onset <= mid_day[:, None]
        years = np.maximum(self.rec_hi - self.rec_lo, 0) / DAYS_PER_YEAR
        care_home = st.care_home_from <= mid_day
        abx = (
            0.25
            + 0.3 * (age < 5)
            + 0.01 * np.maximum(age - 50.0, 0.0)
            + 0.7 * has[:, _C["COPD"]]
            + 0.2 * has[:, _C["DIABETES"]]
            + 0.5 * care_home
            + 0.3 * (~p.male)
        )
        who, day = _poisson_rows(rng, everyone, self.rec_lo, self.rec_hi, abx * years)
        shares = np.array([s for _, s in ANTIBIOTIC_COURSES])
        ab_ids = np.array([mid(m) for m, _ in ANTIBIOTIC_COURSES])
        out_p.append(who)
        out_d.append(day)
        out_m.append(ab_ids[rng.choice(len(shares), size=who.size, p=shares / shares.sum())])
        ster = 0.8 * has[:, _C["COPD"]] + 0.2 * has[:, _C["ASTHMA"]]
        who, day = _poisson_rows(rng, everyone, self.rec_lo, self.rec_hi, ster * years)
        out_p.append(who)
        out_d.append(day)
        out_m.append(np.full(who.size, mid(STEROID_COURSE)))

        self.medicines = med_names
        return {
            "person": np.concatenate(out_p),
            "day": np.concatenate(out_d),
            "med": np.concatenate(out_m),
        }

    def static_observations(self) -> None:
        """Recordings of states and one-off findings over each person's recorded window."""
        rng = self.rng_obs
        st = self.state
        p = st.people
        n = self.n
        lo, hi = self.rec_lo, self.rec_hi
        mid_day = (lo + hi) // 2
        age = np.maximum((mid_day - p.dob) / DAYS_PER_YEAR, 0.0)
        f = st.frailty_at_extract
        ever = st.onset < NEVER
        n_cond = ever.sum(axis=1)

        def record(
            code: str,
            who: BoolArray,
            rate: FloatArray | float,
            since: IntArray | None = None,
            at_start: float = 0.0,
            value: Callable[[IntArray], FloatArray] | None = None,
        ) -> None:
            w = np.flatnonzero(who)
            wlo = lo[w] if since is None else np.maximum(lo[w], since[w])
            whi = hi[w]
            r = rate[w] if isinstance(rate, np.ndarray) else np.full(w.size, rate)
            pers, days = _poisson_rows(rng, w, wlo, whi, r * np.maximum(whi - wlo, 0) / 365.25)
            if since is not None and at_start > 0:
                first = (since[w] >= lo[w]) & (since[w] < whi) & (rng.random(w.size) < at_start)
                pers = np.concatenate([pers, w[first]])
                late = rng.integers(0, 15, size=np.count_nonzero(first))
                days = np.concatenate([days, since[w][first] + late])
            v = np.full(pers.size, np.nan) if value is None else value(pers)
            self.obs.add(person=pers, day=days, code=_OBS[code], value=v)

        old = age >= 75
        record("LIVES_ALONE", st.lives_alone, 0.3 + 0.3 * old + 0.4 * (f > 0.24))
        record("SMOKER", st.smoker, 0.3 + 0.4 * (n_cond > 0))
        record("CARE_HOME", st.care_home_from < hi, 0.8, since=st.care_home_from, at_start=0.9)
        record("HOUSEBOUND", st.housebound_from < hi, 0.7, since=st.housebound_from, at_start=0.6)
        record("HAS_CARER", st.has_carer_from < hi, 0.7, since=st.has_carer_from, at_start=0.5)
        record(
            "HOME_CARE_PACKAGE",
            (st.home_care_from < hi) & (st.care_home_from >= hi),
            0.5,
            since=st.home_care_from,
            at_start=0.6,
        )
        record("HOMELESS", st.homeless, 0.6)
        record("ALCOHOL_MISUSE", st.alcohol_misuse, 0.35)
        is_carer = (age >= 30) & (age < 80) & (rng.random(n) < 0.05)
        record("IS_CARER", is_carer, 0.2)
        isolated = st.lives_alone & (rng.random(n) < 0.15 + 0.7 * np.clip(f / 0.35, 0, 1))
        record("SOCIAL_ISOLATION", isolated & (age >= 50), 0.5)
        # Impairments: with age and, above all, with frailty (they are eFI deficits).
        incont = rng.random(n) < _sigmoid(-6.3 + 0.05 * (age - 40.0) + 19.0 * f)
        record("INCONTINENCE", incont & (age >= 40), 1.0)
        visual = rng.random(n) < _sigmoid(-5.2 + 0.06 * (age - 40.0) + 15.0 * f)
        record("VISUAL_IMPAIRMENT", visual, 1.0)
        hearing = rng.random(n) < _sigmoid(-4.0 + 0.07 * (age - 40.0) + 12.0 * f)
        record("HEARING_IMPAIRMENT", hearing, 1.0)
        # Memory concerns: before most dementia diagnoses, and now and then in older people.
        dem = st.onset[:, _C["DEMENTIA"]].astype(np.int64)
        pre = (dem < NEVER) & (rng.random(n) < 0.55)
        before = dem - rng.integers(30, 540, size=n)
        w = np.flatnonzero(pre & (before >= lo) & (before < hi))
        self.obs.add(
            person=w, day=before[w], code=_OBS["MEMORY_CONCERN"], value=np.full(w.size, np.nan)
        )
        record(
            "MEMORY_CONCERN",
            (age >= 65) & (dem == NEVER),
            0.01 + 0.02 * (age >= 80) + 0.3 * np.clip((f - 0.2) / 0.3, 0.0, 1.0),
        )
        # BMI: adults, more often with long-term conditions; lower when frail.
        has_dm = ever[:, _C["DIABETES"]]
        bmi_mean = (
            27.5
            + 2.5 * has_dm
            - 7.0 * np.clip(f - 0.25, 0, 0.4)
            - 0.05 * np.maximum(age - 75.0, 0.0)
        )
        bmi_person = bmi_mean + rng.normal(0.0, 4.5, size=n)

        def bmi(pers: IntArray) -> FloatArray:
            v = bmi_person[pers] + rng.normal(0.0, 0.8, size=pers.size)
            return np.round(np.clip(v, 14.0, 60.0), 1)

        record("BMI", age >= 16, 0.12 + 0.15 * (n_cond > 0) + 0.5 * has_dm, value=bmi)

    # ------------------------------------------------------------------ tables
    def tables(self, med: dict[str, npt.NDArray[np.generic]]) -> dict[str, pd.DataFrame]:
        """Filter rows to the recorded windows, sort them and build the contract tables."""
        st = self.state
        p = st.people
        order = np.argsort(self.nhs, kind="stable")
        rank = np.empty(self.n, dtype=np.int64)
        rank[order] = np.arange(self.n)
        sorted_nhs = self.nhs[order]
        nhs_cat = pd.CategoricalDtype(categories=pd.Index(sorted_nhs, dtype="str"))

        def nhs_col(person: IntArray) -> pd.Categorical:
            return pd.Categorical.from_codes(rank[person], dtype=nhs_cat)

        def cat(codes: IntArray, vocab: tuple[str, ...] | list[str]) -> pd.Categorical:
            dtype = pd.CategoricalDtype(pd.Index(list(vocab), dtype="str"))
            return pd.Categorical.from_codes(codes, dtype=dtype)

        def dates(days: IntArray, missing: BoolArray | None = None) -> npt.NDArray[np.generic]:
            d = np.where(missing, 0, days) if missing is not None else days
            out = d.astype("datetime64[D]").astype("datetime64[s]")
            if missing is not None:
                out[missing] = np.datetime64("NaT")
            return out

        def in_window(person: IntArray, day: IntArray) -> BoolArray:
            return (day >= self.rec_lo[person]) & (day < self.rec_hi[person])

        # patients
        died = self.died
        reg_to_missing = p.reg_to >= NEVER
        ethnic = _masked(p.ethnic_category, p.ethnic_category != "", "str")
        lsoa = _masked(self.practices.lsoa_code[p.lsoa], p.lsoa_recorded, "str")
        imd = _masked(p.imd_recorded, p.imd_recorded > 0, "Int8")
        opt = _masked(p.type1_opt_out == 1, p.type1_opt_out >= 0, "boolean")
        patients = (
            pd.DataFrame(
                {
                    "nhs_number": pd.array(self.nhs, dtype="str"),
                    "date_of_birth": dates(p.dob),
                    "sex": pd.array(p.sex_code, dtype="str"),
                    "ethnic_category": ethnic,
                    "lsoa_code": lsoa,
                    "imd_decile": imd,
                    "practice_code": pd.array(
                        self.practices.practice_code[p.practice], dtype="str"
                    ),
                    "pcn_code": pd.array(self.practices.pcn_code[p.practice], dtype="str"),
                    "registered_from": dates(p.reg_from),
                    "registered_to": dates(p.reg_to, reg_to_missing),
                    "date_of_death": dates(st.death_day, ~died),
                    "type1_opt_out": opt,
                }
            )
            .iloc[order]
            .reset_index(drop=True)
        )

        # activity
        a = self.act.build()
        person = a["person"].astype(np.int64)
        start = a["start"].astype(np.int64)
        hi = np.where(a["linked"] == 1, self.life_hi[person], self.rec_hi[person])
        keep = (start >= self.rec_lo[person]) & (start < hi)
        a = {k: v[keep] for k, v in a.items()}
        person = a["person"].astype(np.int64)
        start = a["start"].astype(np.int64)
        end = a["end"].astype(np.int64)
        setting = a["setting"].astype(np.int64)
        end_missing = (end < 0) | (end >= self.extract)
        srt = _sort_order(rank[person], start, setting, a["method"].astype(np.int64) + 1)
        method = a["method"].astype(np.int64)[srt]
        diag = a["diag"].astype(np.int64)[srt]
        attended = a["attended"].astype(np.int64)[srt]
        activity = pd.DataFrame(
            {
                "nhs_number": nhs_col(person[srt]),
                "setting": cat(setting[srt], SETTINGS),
                "admission_method": cat(method, ADMISSION_METHODS),
                "start_date": dates(start[srt]),
                "end_date": dates(end[srt], end_missing[srt]),
                "primary_diagnosis": cat(diag, _ALL_DIAGNOSES),
                "attended": _masked(attended == 1, attended >= 0, "boolean"),
            }
        )

        # conditions
        rows, cols = np.nonzero(st.onset < NEVER)
        on = st.onset[rows, cols].astype(np.int64)
        keep = on < self.rec_hi[rows]
        rows, cols, on = rows[keep], cols[keep], on[keep]
        srt = _sort_order(rank[rows], on, cols.astype(np.int64))
        conditions = pd.DataFrame(
            {
                "nhs_number": nhs_col(rows[srt]),
                "condition": cat(cols[srt], CONDITIONS),
                "diagnosed_on": dates(on[srt]),
            }
        )

        # medications
        mp = med["person"].astype(np.int64)
        mday = med["day"].astype(np.int64)
        mm = med["med"].astype(np.int64)
        keep = in_window(mp, mday)
        mp, mday, mm = mp[keep], mday[keep], mm[keep]
        names = [m.name for m in self.medicines]
        classes = sorted({m.drug_class for m in self.medicines})
        # Sort medicines by name so the tie-break order does not depend on catalogue order.
        name_order = np.argsort(np.array(names), kind="stable")
        name_rank = np.empty(len(names), dtype=np.int64)
        name_rank[name_order] = np.arange(len(names))
        srt = _sort_order(rank[mp], mday, name_rank[mm])
        class_idx = np.array([classes.index(m.drug_class) for m in self.medicines])
        medications = pd.DataFrame(
            {
                "nhs_number": nhs_col(mp[srt]),
                "issued_on": dates(mday[srt]),
                "medicine": cat(name_rank[mm[srt]], [names[i] for i in name_order]),
                "drug_class": cat(class_idx[mm[srt]], classes),
            }
        )

        # observations
        o = self.obs.build()
        op = o["person"].astype(np.int64)
        oday = o["day"].astype(np.int64)
        keep = in_window(op, oday)
        op, oday = op[keep], oday[keep]
        ocode = o["code"].astype(np.int64)[keep]
        oval = o["value"].astype(np.float64)[keep]
        srt = _sort_order(rank[op], oday, ocode)
        oval = oval[srt]
        observations = pd.DataFrame(
            {
                "nhs_number": nhs_col(op[srt]),
                "observed_on": dates(oday[srt]),
                "code": cat(ocode[srt], OBSERVATION_CODES),
                "value": _masked(oval, ~np.isnan(oval), "Float64"),
            }
        )
        return {
            "patients": patients,
            "activity": activity,
            "conditions": conditions,
            "medications": medications,
            "observations": observations,
        }

    def events(self) -> dict[str, pd.DataFrame]:
        """The hidden event log (all simulated events, written or not)."""
        a = self.adm_log.build()
        f = self.fall_log.build()
        i = self.int_log.build()
        return {
            "emergency_admissions": pd.DataFrame(
                {
                    "person": a["person"].astype(np.int64),
                    "start_day": a["start"].astype(np.int64),
                    "end_day": a["end"].astype(np.int64),
                    "recorded": a["recorded"].astype(bool),
                }
            ),
            "falls": pd.DataFrame(
                {"person": f["person"].astype(np.int64), "day": f["day"].astype(np.int64)}
            ),
            "interventions": pd.DataFrame(
                {
                    "person": i["person"].astype(np.int64),
                    "code": pd.Categorical.from_codes(
                        i["code"].astype(np.int64),
                        dtype=pd.CategoricalDtype(pd.Index(OBSERVATION_CODES, dtype="str")),
                    ),
                    "day": i["day"].astype(np.int64),
                    "decided": i["decided"].astype(np.int64),
                }
            ),
        }


@dataclass(frozen=True)
class _Plan:
    """What is drawn once for the whole population before any block is simulated."""

    n: int
    practices: Practices
    nhs: npt.NDArray[np.int64]  # every NHS number, ascending
    block_seeds: tuple[np.random.SeedSequence, ...]

    @property
    def blocks(self) -> int:
        return len(self.block_seeds)

    def bounds(self, block: int) -> tuple[int, int]:
        return block * BLOCK_SIZE, min(self.n, (block + 1) * BLOCK_SIZE)


def _plan(n: int, seed: int) -> _Plan:
    n_blocks = max(1, -(-n // BLOCK_SIZE))
    children = np.random.SeedSequence(seed).spawn(1 + n_blocks)
    rng = np.random.default_rng(children[0])
    practices = build_practices(rng, n)
    nhs = sorted_synthetic_nhs_numbers(rng, n)
    return _Plan(n=n, practices=practices, nhs=nhs, block_seeds=tuple(children[1:]))


class _Progress:
    """Maps (block, stage, fraction of the stage) to the caller's (stage, overall fraction)."""

    def __init__(
        self, callback: ProgressCallback | None, blocks: int, stages: dict[str, float]
    ) -> None:
        self.callback = callback
        self.blocks = blocks
        self.last = list(stages)[-1]
        total = sum(stages.values())
        self.start: dict[str, float] = {}
        self.weight: dict[str, float] = {}
        acc = 0.0
        for name, w in stages.items():
            self.start[name] = acc / total
            self.weight[name] = w / total
            acc += w

    def __call__(self, block: int, stage: str, fraction: float) -> None:
        if self.callback is None:
            return
        f = min(max(fraction, 0.0), 1.0)
        within = self.start[stage] + self.weight[stage] * f
        if stage == self.last and f >= 1.0:
            within = 1.0
        self.callback(stage, min(max((block + within) / self.blocks, 0.0), 1.0))


_SIM_STAGES = {"population": 0.03, "simulate": 0.6, "medications": 0.06, "observations": 0.03,
               "assemble": 0.08}  # fmt: skip


def _simulate_block(
    plan: _Plan,
    block: int,
    *,
    seed: int,
    months: int,
    extract_date: dt.date,
    params: SimulationParams,
    report: Callable[[str, float], None] | None,
) -> Simulation:
    lo, hi = plan.bounds(block)
    sim = _Simulator(
        nhs=plan.nhs[lo:hi],
        practices=plan.practices,
        seed_sequence=plan.block_seeds[block],
        months=months,
        extract_date=extract_date,
        params=params,
        progress=report,
    )
    sim._report("population", 0.0)
    sim.build_population()
    sim._report("population", 1.0)
    sim.run()
    sim.finalise_registration()
    sim._report("medications", 0.0)
    med = sim.medications()
    sim._report("medications", 1.0)
    sim._report("observations", 0.0)
    sim.static_observations()
    sim._report("observations", 1.0)
    sim._report("assemble", 0.0)
    tables = sim.tables(med)
    sim._report("assemble", 1.0)
    return Simulation(
        tables=tables,
        state=sim.state,
        events=sim.events(),
        nhs_numbers=sim.nhs,
        practices=sim.practices,
        extract_date=extract_date,
        history_start=sim.history_start_date,
        seed=seed,
        months=months,
        params=params,
        oracle_seed=sim.oracle_seed,
    )


def _check_arguments(n_patients: int, months: int, extract_date: dt.date) -> None:
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    if n_patients > SYNTHETIC_NHS_CAPACITY:
        raise ValueError(
            f"n_patients is {n_patients:,}, but synthetic NHS numbers must start 999 and that "
            f"range holds only {SYNTHETIC_NHS_CAPACITY:,} valid numbers (10**6 nine-digit "
            "bodies less those whose Modulus 11 check digit would be 10); ask for at most "
            f"{SYNTHETIC_NHS_CAPACITY:,} people"
        )
    if not 1 <= months <= 600:
        raise ValueError("months must be between 1 and 600")
    if isinstance(extract_date, dt.datetime) or not isinstance(extract_date, dt.date):
        raise TypeError("extract_date must be a datetime.date")


def _concat_simulations(sims: list[Simulation]) -> Simulation:
    """One Simulation from blocks simulated separately (positions offset block by block)."""
    first = sims[0]
    offsets = np.cumsum([0] + [s.state.n for s in sims[:-1]])
    tables: dict[str, pd.DataFrame] = {}
    for name in first.tables:
        frames = [s.tables[name] for s in sims]
        columns: dict[str, object] = {}
        for col in frames[0].columns:
            parts = [f[col] for f in frames]
            if isinstance(parts[0].dtype, pd.CategoricalDtype):
                columns[col] = pd.Series(
                    pd.api.types.union_categoricals([pd.Categorical(x) for x in parts])
                )
            else:
                columns[col] = pd.concat(parts, ignore_index=True)
        tables[name] = pd.DataFrame(columns)

    def cat(values: list[object]) -> object:
        arrays = [np.asarray(v) for v in values]
        return np.concatenate(arrays)

    people = _replace_fields(
        first.state.people, {f.name: cat([getattr(s.state.people, f.name) for s in sims])
                             for f in fields(first.state.people)}
    )  # fmt: skip
    values: dict[str, object] = {"people": people}
    for f in fields(first.state):
        if f.name != "people":
            values[f.name] = cat([getattr(s.state, f.name) for s in sims])
    state = _replace_fields(first.state, values)
    events: dict[str, pd.DataFrame] = {}
    for name in first.events:
        shifted: list[pd.DataFrame] = []
        for s, off in zip(sims, offsets, strict=True):
            frame = s.events[name].copy()
            frame["person"] = frame["person"] + int(off)
            shifted.append(frame)
        events[name] = pd.concat(shifted, ignore_index=True)
    return Simulation(
        tables=tables,
        state=state,
        events=events,
        nhs_numbers=np.concatenate([s.nhs_numbers for s in sims]),
        practices=first.practices,
        extract_date=first.extract_date,
        history_start=first.history_start,
        seed=first.seed,
        months=first.months,
        params=first.params,
        oracle_seed=first.oracle_seed,
    )


def _replace_fields(obj: _T, values: dict[str, object]) -> _T:
    """``dataclasses.replace`` for a dict of new field values."""
    return replace(obj, **values)  # type: ignore[type-var]


def simulate(
    *,
    n_patients: int,
    seed: int,
    extract_date: dt.date,
    months: int = 48,
    progress: ProgressCallback | None = None,
    params: SimulationParams | None = None,
) -> Simulation:
    """Simulate a registered population and return its extract tables and hidden truth.

    Everything is held in memory: for large populations use :func:`generate_extract`, which
    writes block by block. The tables are those :func:`generate_extract` writes for the same
    arguments.

    Args:
        n_patients: number of people ever registered during the history (rows of patients).
        seed: the seed; the same arguments give the same tables.
        extract_date: first day not covered by the extract.
        months: length of the history in calendar months before ``extract_date``'s month.
        progress: optional ``callback(stage, fraction_done)``.
        params: simulation parameters (burn-in length, hazard coefficients).

    Returns:
        A :class:`Simulation` with the five tables, the hidden state and the event log.
    """
    _check_arguments(n_patients, months, extract_date)
    params = params or SimulationParams()
    plan = _plan(n_patients, seed)
    tracker = _Progress(progress, plan.blocks, _SIM_STAGES)
    sims = []
    for b in range(plan.blocks):
        sims.append(
            _simulate_block(
                plan,
                b,
                seed=seed,
                months=months,
                extract_date=extract_date,
                params=params,
                report=lambda stage, f, b=b: tracker(b, stage, f),  # type: ignore[misc]
            )
        )
    return sims[0] if len(sims) == 1 else _concat_simulations(sims)


# ---------------------------------------------------------------------- writing

_ARROW_TYPES = {
    "nhs_number": pa.string(),
    "string": pa.string(),
    "code": pa.string(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "number": pa.float64(),
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a contract table is written with (Parquet types as the contract says)."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in TABLES[table].columns])


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        col = frame[f.name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            arr: pa.Array = pa.DictionaryArray.from_arrays(
                pa.array(col.cat.codes.to_numpy(), mask=col.isna().to_numpy()),
                pa.array(col.cat.categories.to_numpy(dtype=object), pa.string()),
            )
        else:
            arr = pa.array(col, from_pandas=True)
        arrays.append(arr.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _TableSink:
    """One table's file, appended to block by block."""

    def __init__(self, path: Path, table: str, fmt: Format) -> None:
        self.schema = arrow_schema(table)
        self.fmt = fmt
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._file: IO[bytes] | None = None
        if fmt == "parquet":
            self._parquet = pq.ParquetWriter(str(path), self.schema, compression="snappy")
        else:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
            header = ",".join(self.schema.names) + "\n"
            self._file.write(header.encode("utf-8"))
            self._csv = pacsv.CSVWriter(
                self._file,
                self.schema,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )

    def write(self, frame: pd.DataFrame) -> None:
        table = _to_arrow(frame, self.schema)
        self.rows += table.num_rows
        if table.num_rows == 0:
            return
        if self._parquet is not None:
            self._parquet.write_table(table, row_group_size=1 << 20)
        elif self._csv is not None:
            self._csv.write_table(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._file is not None:
            self._file.close()
            self._file = None


class _ExtractWriter:
    """Appends each block's five tables to their files; ``finish`` writes manifest.json with
    the rows written, so a file cut short later is caught by validation."""

    def __init__(self, folder: Path, *, fmt: Format, extract_date: dt.date, source: str) -> None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
        self.folder = folder
        self.manifest: dict[str, object] = {
            "contract_version": CONTRACT_VERSION,
            "extract_date": extract_date.isoformat(),
            "source": source,
            "identifier_kind": "nhs_number",
        }
        self.sinks: dict[str, _TableSink] = {}
        try:
            for name in TABLE_ORDER:
                self.sinks[name] = _TableSink(folder / f"{name}.{fmt}", name, fmt)
        except BaseException:
            self.close()
            raise

    def write_block(
        self, tables: dict[str, pd.DataFrame], report: Callable[[float], None] | None = None
    ) -> None:
        for i, name in enumerate(TABLE_ORDER):
            self.sinks[name].write(tables[name])
            if report is not None:
                report((i + 1) / len(TABLE_ORDER))

    @property
    def rows(self) -> dict[str, int]:
        return {name: sink.rows for name, sink in self.sinks.items()}

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def finish(self) -> None:
        """Close the files and write the manifest (only once every block is written)."""
        self.close()
        manifest = {**self.manifest, "row_counts": self.rows}
        text = json.dumps(manifest) + "\n"
        (self.folder / "manifest.json").write_text(text, encoding="utf-8")


def write_tables(
    tables: dict[str, pd.DataFrame],
    folder: Path,
    *,
    fmt: Format,
    extract_date: dt.date,
    source: str,
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Write manifest.json and the five tables into an existing empty ``folder``.

    Returns the number of rows written per table.
    """
    writer = _ExtractWriter(folder, fmt=fmt, extract_date=extract_date, source=source)
    try:
        writer.write_block(tables, None if progress is None else (lambda f: progress("write", f)))
        writer.finish()
    finally:
        writer.close()
    return writer.rows


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if overwrite or not out_dir.exists():
        return
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it"
        )


_WRITE_STAGES = {**_SIM_STAGES, "oracle": 0.0, "write": 0.2}


def generate_extract(
    out_dir: Path,
    *,
    n_patients: int,
    seed: int,
    months: int = 48,
    extract_date: dt.date,
    fmt: Format = "csv",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    oracle: bool = False,
    oracle_dates: Sequence[dt.date] | None = None,
    oracle_path: Path | None = None,
    omop_layout: OmopLayout = "duckdb",
) -> GenerationSummary:
    """Simulate a population and write it as a contract extract in ``out_dir``, atomically.

    People are simulated and written in blocks of :data:`BLOCK_SIZE`, so memory does not grow
    with the population. Everything is written into a hidden sibling folder first and renamed
    into place at the end; on any error the partial folder is removed and ``out_dir`` is left
    as it was.

    The true risk (the oracle, see :func:`riskstrat.synth.oracle.compute_oracle`) is written
    when ``oracle`` is true or ``oracle_dates`` or ``oracle_path`` is given: a Parquet file
    with ``nhs_number``, ``index_date`` and ``true_risk`` for everyone in the population at
    each index date, outside the extract folder (by default
    :func:`~riskstrat.synth.oracle.default_oracle_path`), also written atomically. Without
    dates it covers the latest index month whose 90-day window is complete.

    Args:
        out_dir: folder to create (its parent is created if needed).
        n_patients: rows of the patients table (everyone ever registered in the history), at
            most :data:`~riskstrat.nhs_number.SYNTHETIC_NHS_CAPACITY`.
        seed: random seed; the same arguments give byte-identical files.
        months: months of history before the extract date's month.
        extract_date: the manifest's extract date (first day not covered).
        fmt: ``"csv"`` or ``"parquet"`` (a contract extract), or ``"omop"``: the same
            population as an OMOP CDM 5.4 with its site map, IMD lookup and linkage files
            (see :mod:`riskstrat.synth.omop`); ``rows`` then counts the CDM's tables.
        omop_layout: with ``"omop"``, ``"duckdb"`` (``cdm.duckdb``) or ``"csv"`` (a ``cdm``
            folder of upper-case CSV files, as OHDSI's Eunomia ships).
        overwrite: replace a non-empty ``out_dir`` (only once the new extract is complete) and
            an existing oracle file.
        progress: optional ``callback(stage, fraction_done)`` for a progress bar.
        oracle: write the true risk at the default index date (or at ``oracle_dates``).
        oracle_dates: index dates (first days of months) for the true risk.
        oracle_path: where to write the true risk.

    Returns:
        A :class:`GenerationSummary`.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty (or the oracle file exists), and
            ``overwrite`` is false.
        ValueError: bad arguments, including more people than synthetic NHS numbers exist and
            oracle dates whose window is not inside the history.
    """
    from riskstrat.synth.oracle import (
        ORACLE_HORIZON_DAYS,
        check_oracle_dates,
        compute_oracle,
        default_oracle_date,
        default_oracle_path,
        write_oracle,
    )

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if fmt not in ("csv", "parquet", "omop"):
        raise ValueError(f"fmt must be 'csv', 'parquet' or 'omop', not {fmt!r}")
    _check_arguments(n_patients, months, extract_date)
    want_oracle = oracle or oracle_dates is not None or oracle_path is not None
    dates: tuple[dt.date, ...] = ()
    target: Path | None = None
    if want_oracle:
        dates = tuple(oracle_dates) if oracle_dates else (default_oracle_date(extract_date),)
        check_oracle_dates(
            dates, history_start_for(extract_date, months), extract_date, ORACLE_HORIZON_DAYS
        )
        target = Path(oracle_path) if oracle_path is not None else default_oracle_path(out_dir)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    _check_target(out_dir, overwrite)
    params = SimulationParams()
    plan = _plan(n_patients, seed)
    stages = {**_WRITE_STAGES, "oracle": 0.1 * len(dates)}
    tracker = _Progress(progress, plan.blocks, stages)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(6)}"
    tmp_oracle: Path | None = None
    tmp.mkdir()
    try:
        source = f"riskstrat synthetic generator, seed {seed}, {n_patients} patients"
        writer: _ExtractWriter | OmopWriter
        if fmt == "omop":
            pr = plan.practices
            writer = OmopWriter(
                tmp,
                layout=omop_layout,
                extract_date=extract_date,
                source=source,
                practices=pd.DataFrame({"practice_code": pr.practice_code,
                                        "pcn_code": pr.pcn_code}),
                lsoas=pd.DataFrame({"lsoa_code": pr.lsoa_code, "imd_decile": pr.lsoa_decile}),
            )  # fmt: skip
        else:
            writer = _ExtractWriter(tmp, fmt=fmt, extract_date=extract_date, source=source)
        risks: list[pd.DataFrame] = []
        history_start = history_start_for(extract_date, months)
        try:
            for b in range(plan.blocks):

                def report(stage: str, f: float, b: int = b) -> None:
                    tracker(b, stage, f)

                sim = _simulate_block(
                    plan,
                    b,
                    seed=seed,
                    months=months,
                    extract_date=extract_date,
                    params=params,
                    report=report,
                )
                history_start = sim.history_start
                if dates:
                    report("oracle", 0.0)
                    risks.append(compute_oracle(sim, dates))
                    report("oracle", 1.0)

                def report_write(f: float, b: int = b) -> None:
                    tracker(b, "write", f)

                writer.write_block(sim.tables, report_write)
                del sim
            if isinstance(writer, OmopWriter):
                writer.finish([str(n) for n in plan.nhs])
            else:
                writer.finish()
        finally:
            writer.close()
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_oracle = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
            write_oracle(risks, tmp_oracle)
        _check_target(out_dir, overwrite)
        replace_folder(tmp, out_dir)
        if target is not None and tmp_oracle is not None:
            os.replace(tmp_oracle, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_oracle is not None:
            tmp_oracle.unlink(missing_ok=True)
        raise
    return GenerationSummary(
        out_dir=out_dir,
        n_patients=n_patients,
        rows=writer.rows,
        extract_date=extract_date,
        history_start=history_start,
        seconds=time.perf_counter() - t0,
        fmt=fmt,
        seed=seed,
        oracle_path=target,
        oracle_dates=dates,
    )
