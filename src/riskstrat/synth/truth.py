"""The hidden truth at any past day, rebuilt from a finished simulation.

The monthly loop keeps only running state (the latest fall, the last few admissions, ...).
:func:`hazard_inputs_at` rebuilds the exact covariates the loop used on the first day of any
simulated month from the final hidden state plus the hidden event log, so that an oracle can
evaluate :func:`~riskstrat.synth.hazards.emergency_admission_hazard` at an index date.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from riskstrat.synth.generator import Simulation
from riskstrat.synth.hazards import HazardInputs, IntArray, latent_frailty
from riskstrat.synth.population import DAYS_PER_YEAR
from riskstrat.synth.state import (
    DEFICIT_CAP,
    DEFICIT_PER_ADMISSION,
    DEFICIT_PER_FALL,
    INTERVENTION_VALID_DAYS,
    RECENT_ADMISSIONS_KEPT,
)


def _count(persons: IntArray, mask: np.ndarray, n: int) -> IntArray:
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
    )
