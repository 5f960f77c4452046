"""The simulation of one block of people: :class:`Simulation` (what a simulation returns) and
the simulator that builds the population and runs the monthly loop.

The simulation is vectorised over people and loops over calendar months only. A burn-in year
before the history gives everyone a realistic recent-admission history; nothing from the
burn-in is written. Emergency admissions are drawn from
:func:`riskstrat.synth.hazards.emergency_admission_hazard`, the single place their risk is
defined.

The simulator is one class assembled from parts: the population and the monthly loop here,
the month's recordings (:mod:`riskstrat.synth.recording`) and the work after the loop, down to
the contract tables (:mod:`riskstrat.synth.assembly`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.calendar import add_months
from riskstrat.data.contract import CONDITIONS
from riskstrat.synth.assembly import _Assembly
from riskstrat.synth.catalogue import CONDITION_SPECS
from riskstrat.synth.dynamics import (
    draw_falls,
    draw_palliative_and_interventions,
    draw_states,
)
from riskstrat.synth.hazards import (
    BoolArray,
    FloatArray,
    death_hazard,
    emergency_admission_hazard,
    inhospital_death_probability,
    latent_frailty,
)
from riskstrat.synth.params import (
    ProgressCallback,
    SimulationParams,
    _logit,
    _sigmoid,
    _to_day,
    history_start_for,
)
from riskstrat.synth.population import DAYS_PER_YEAR, NEVER, People, Practices, draw_people
from riskstrat.synth.recording import _MonthRecording
from riskstrat.synth.simbase import (
    _ACT_COLS,
    _C,
    _OBS_COLS,
    _first_event_days,
    _Rows,
    _uniform_days,
)
from riskstrat.synth.state import (
    DEFICIT_CAP,
    DEFICIT_PER_ADMISSION,
    LONG_AGO,
    RECENT_ADMISSIONS_KEPT,
    HiddenState,
    hazard_inputs,
)


@dataclass
class Simulation:
    """Result of :func:`~riskstrat.synth.blocks.simulate`: the extract's tables plus the hidden
    truth behind them.

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


class _Simulator(_MonthRecording, _Assembly):
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
