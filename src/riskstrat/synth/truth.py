"""The hidden truth at any past day, rebuilt from a finished simulation.

The monthly loop keeps only running state (the latest fall, the last few admissions, ...).
:func:`hazard_inputs_at` rebuilds the exact covariates the loop used on the first day of any
simulated month from the final hidden state plus the hidden event log, so that an oracle can
evaluate :func:`~riskstrat.synth.hazards.emergency_admission_hazard` at an index date;
:func:`state_at` rebuilds the whole hidden state as it stood then, so that the oracle can run
the generator's own dynamics forward from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from riskstrat.synth.catalogue import CONDITION_INDEX
from riskstrat.synth.hazards import BoolArray, HazardInputs, IntArray, latent_frailty
from riskstrat.synth.population import DAYS_PER_YEAR, NEVER
from riskstrat.synth.simulation import Simulation
from riskstrat.synth.state import (
    DEFICIT_CAP,
    DEFICIT_PER_ADMISSION,
    DEFICIT_PER_FALL,
    INTERVENTION_VALID_DAYS,
    LONG_AGO,
    RECENT_ADMISSIONS_KEPT,
    HiddenState,
)


def _count(persons: IntArray, mask: BoolArray, n: int) -> IntArray:
    return np.bincount(persons[mask], minlength=n).astype(np.int64)


def hazard_inputs_at(sim: Simulation, idx: IntArray, day: dt.date | int) -> HazardInputs:
    """Covariates of people ``idx`` (positions in ``sim.nhs_numbers``) at the start of ``day``.

    Only what is dated before ``day`` counts (onsets, care home entry, admissions, falls,
    interventions). For the first day of a simulated month this equals exactly what the
    generator used for that month.

    Args:
        sim: a finished simulation.
        idx: positions of the people.
        day: a date, or an integer day counted from 1970-01-01.

    Returns:
        The hazard inputs, ready for ``emergency_admission_hazard`` and ``death_hazard``.
    """
    d = sim.day(day) if isinstance(day, dt.date) else int(day)
    month = (dt.date(1970, 1, 1) + dt.timedelta(days=d)).month
    st = sim.state
    n = st.n
    dob = st.people.dob
    age = np.maximum((d - dob[idx]) / DAYS_PER_YEAR, 0.0)
    conditions = st.onset[idx] < d

    adm = sim.events["emergency_admissions"]
    a_per = adm["person"].to_numpy()
    a_day = adm["start_day"].to_numpy()
    before = a_day < d
    n90 = _count(a_per, before & (a_day >= d - 90), n)[idx]
    # The loop remembers the latest RECENT_ADMISSIONS_KEPT admissions (enough for the hazard).
    n365 = np.minimum(_count(a_per, before & (a_day >= d - 365), n)[idx], RECENT_ADMISSIONS_KEPT)
    adm65 = _count(a_per, before & ((a_day - dob[a_per]) / DAYS_PER_YEAR >= 65), n)[idx]

    falls = sim.events["falls"]
    f_per = falls["person"].to_numpy()
    f_day = falls["day"].to_numpy()
    f_before = f_day < d
    fall_180d = _count(f_per, f_before & (f_day >= d - 180), n)[idx] > 0
    fall65 = _count(f_per, f_before & ((f_day - dob[f_per]) / DAYS_PER_YEAR >= 65), n)[idx]
    deficits = np.minimum(DEFICIT_PER_ADMISSION * adm65 + DEFICIT_PER_FALL * fall65, DEFICIT_CAP)

    iv = sim.events["interventions"]
    i_per = iv["person"].to_numpy()
    i_day = iv["day"].to_numpy()
    i_code = iv["code"].astype(str).to_numpy()
    valid = (i_day < d) & (i_day >= d - INTERVENTION_VALID_DAYS)
    fa = _count(i_per, valid & (i_code == "FALLS_ASSESSMENT"), n)[idx] > 0
    mr = _count(i_per, valid & (i_code == "MEDICATION_REVIEW"), n)[idx] > 0

    frailty = latent_frailty(age, conditions, st.frailty_propensity[idx], deficits)
    return HazardInputs(
        age_years=age,
        male=st.people.male[idx],
        deprivation=st.people.deprivation[idx],
        conditions=conditions,
        frailty=frailty,
        emergency_admissions_90d=n90,
        emergency_admissions_365d=n365,
        fall_180d=fall_180d,
        lives_alone=st.lives_alone[idx],
        care_home=st.care_home_from[idx] < d,
        smoker=st.smoker[idx],
        alcohol_misuse=st.alcohol_misuse[idx],
        homeless=st.homeless[idx],
        falls_assessment_365d=fa,
        medication_review_365d=mr,
        individual_effect=st.individual_effect[idx],
        month_of_year=month,
        prescribing_intensity=st.prescribing_intensity[idx],
    )


def _latest_before(
    persons: IntArray, days: IntArray, mask: BoolArray, n: int, default: int
) -> IntArray:
    """Per person, the largest ``days`` among rows where ``mask`` holds (else ``default``)."""
    out = np.full(n, default, dtype=np.int64)
    np.maximum.at(out, persons[mask], days[mask])
    return out


def state_at(sim: Simulation, day: dt.date | int) -> HiddenState:
    """The hidden state as the generator held it at the start of the month beginning ``day``.

    Rebuilt from the finished simulation's final state and hidden event log: everything drawn
    before ``day`` is kept (including what was then already decided for later, such as a
    discharge, a death in hospital or a booked falls assessment); everything drawn from
    ``day`` on is undone. Fields the generator fills only after the loop
    (``frailty_at_extract``) are zero. Registration is as finally recorded.

    Args:
        sim: a finished simulation.
        day: the first day of a simulated month (a date, or days since 1970-01-01).

    Returns:
        A new :class:`HiddenState` (the simulation is not changed).
    """
    d = sim.day(day) if isinstance(day, dt.date) else int(day)
    st = sim.state
    n = st.n
    dob = st.people.dob

    def undo(values: npt.NDArray[np.signedinteger[Any]]) -> npt.NDArray[np.signedinteger[Any]]:
        return np.where(values < d, values, NEVER).astype(values.dtype)

    onset = st.onset.copy()
    pal = CONDITION_INDEX["PALLIATIVE"]
    onset[:, pal] = undo(onset[:, pal])

    adm = sim.events["emergency_admissions"]
    a_per = adm["person"].to_numpy()
    a_day = adm["start_day"].to_numpy()
    a_end = adm["end_day"].to_numpy()
    before = a_day < d
    # The latest RECENT_ADMISSIONS_KEPT admission days, newest first.
    order = np.lexsort((-a_day[before], a_per[before]))
    bp, bd, be = a_per[before][order], a_day[before][order], a_end[before][order]
    first = np.ones(bp.size, dtype=bool)
    first[1:] = bp[1:] != bp[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(bp.size) - np.repeat(starts, np.diff(np.append(starts, bp.size)))
    keep = rank < RECENT_ADMISSIONS_KEPT
    recent = np.full((n, RECENT_ADMISSIONS_KEPT), LONG_AGO, dtype=np.int64)
    recent[bp[keep], rank[keep]] = bd[keep]
    in_hospital = np.full(n, LONG_AGO, dtype=np.int64)
    in_hospital[bp[first]] = be[first]  # the latest admission's discharge
    adm65 = _count(a_per, before & ((a_day - dob[a_per]) / DAYS_PER_YEAR >= 65), n)

    falls = sim.events["falls"]
    f_per = falls["person"].to_numpy()
    f_day = falls["day"].to_numpy()
    f_before = f_day < d
    fall65 = _count(f_per, f_before & ((f_day - dob[f_per]) / DAYS_PER_YEAR >= 65), n)
    deficits = np.minimum(DEFICIT_PER_ADMISSION * adm65 + DEFICIT_PER_FALL * fall65, DEFICIT_CAP)

    iv = sim.events["interventions"]
    i_per = iv["person"].to_numpy()
    i_day = iv["day"].to_numpy()
    i_dec = iv["decided"].to_numpy()
    i_code = iv["code"].astype(str).to_numpy()
    decided = i_dec < d
    fa = _latest_before(i_per, i_day, decided & (i_code == "FALLS_ASSESSMENT"), n, LONG_AGO)
    mr = _latest_before(i_per, i_day, decided & (i_code == "MEDICATION_REVIEW"), n, LONG_AGO)
    acp = _latest_before(i_per, i_day, decided & (i_code == "ADVANCE_CARE_PLAN"), n, -NEVER)
    acp = np.where(acp == -NEVER, NEVER, acp)

    known_death = st.death_decided < d
    return replace(
        st,
        onset=onset,
        care_home_from=undo(st.care_home_from),
        housebound_from=undo(st.housebound_from),
        has_carer_from=undo(st.has_carer_from),
        home_care_from=undo(st.home_care_from),
        accumulated_deficits=deficits,
        recent_admissions=recent,
        in_hospital_until=in_hospital,
        last_fall=_latest_before(f_per, f_day, f_before, n, LONG_AGO),
        last_falls_assessment=fa,
        last_medication_review=mr,
        advance_care_plan=acp,
        death_day=np.where(known_death, st.death_day, NEVER),
        death_decided=np.where(known_death, st.death_decided, NEVER),
        frailty_at_extract=np.zeros(n),
    )
