"""Hidden per-person state of the synthetic population and the snapshot the hazards read.

The generator mutates a :class:`HiddenState` month by month; :func:`hazard_inputs` turns the
state of some people on a day into the :class:`~riskstrat.synth.hazards.HazardInputs` that the
hazard functions take. An oracle can call the same function on the final state for any index
date inside the history, because every dated quantity is either an onset/entry date or is
recoverable from the hidden event log (see ``Simulation.events``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from riskstrat.synth.hazards import BoolArray, FloatArray, HazardInputs, IntArray, latent_frailty
from riskstrat.synth.population import DAYS_PER_YEAR, NEVER, People

#: A day long past (sentinel for "never happened yet").
LONG_AGO = -(10**9)
#: How many recent emergency admission dates each person keeps: enough that the capped counts
#: the hazard uses (at most 3 in 90 days plus 4 more in 365 days; at most 2 admissions a month)
#: never differ from counts over the full event log.
RECENT_ADMISSIONS_KEPT = 12
#: Frailty deficits accrued per emergency admission and per fall at age 65 or over (age on the
#: day of the event), and their ceiling.
DEFICIT_PER_ADMISSION = 0.012
DEFICIT_PER_FALL = 0.004
DEFICIT_CAP = 0.15
#: A falls assessment is not repeated within this many days (and counts for as long).
INTERVENTION_VALID_DAYS = 365


@dataclass
class HiddenState:
    """Everything the generator knows about each person that the extract does not show.

    Arrays have one entry per person, in the same order as ``Simulation.nhs_numbers``.
    Days are integers counted from 1970-01-01; ``NEVER`` (10**9) means "no such date".
    """

    people: People
    individual_effect: FloatArray  # unobserved log multiplier of the admission hazard
    frailty_propensity: FloatArray  # log multiplier of the age part of latent frailty
    multimorbidity: FloatArray  # shared latent factor of condition onsets (N(0, 1))
    prescribing_intensity: FloatArray  # latent driver of repeat medicines (polypharmacy)
    smoker_ever: BoolArray
    smoker: BoolArray  # current smoker
    alcohol_misuse: BoolArray
    homeless: BoolArray
    lives_alone: BoolArray
    onset: npt.NDArray[np.int32]  # (n, C) condition onset day, contract order; NEVER if none
    care_home_from: IntArray
    housebound_from: IntArray
    has_carer_from: IntArray
    home_care_from: IntArray
    housebound_threshold: FloatArray  # frailty at which a person becomes housebound
    has_carer_threshold: FloatArray
    home_care_threshold: FloatArray
    accumulated_deficits: FloatArray  # frailty added by earlier admissions and falls
    recent_admissions: IntArray  # (n, RECENT_ADMISSIONS_KEPT) latest admission days, newest 1st
    in_hospital_until: IntArray  # discharge day of the latest emergency stay
    last_fall: IntArray
    last_falls_assessment: IntArray  # latest scheduled (may be a few weeks ahead)
    last_medication_review: IntArray
    advance_care_plan: IntArray  # day recorded, NEVER if none
    death_day: IntArray  # true day of death (may be >= extract date: not yet known); NEVER
    frailty_at_extract: FloatArray  # latent frailty on the extract date (or at death)
    #: First day of the month in which the death day was drawn (NEVER if none): the death is
    #: part of the hidden state from the next month on (in-hospital deaths are decided at
    #: admission and may fall in a later month).
    death_decided: IntArray

    @property
    def n(self) -> int:
        """Number of people."""
        return int(self.individual_effect.shape[0])

    def take(self, rows: IntArray) -> HiddenState:
        """A copy holding only the people at positions ``rows`` (repeats allowed), in order."""
        values: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.take(rows) if f.name == "people" else v[rows]
        return replace(self, **values)  # type: ignore[arg-type]


def hazard_inputs(
    state: HiddenState, idx: IntArray, day: int, month_of_year: int
) -> tuple[HazardInputs, FloatArray]:
    """Covariates of people ``idx`` as at the start of ``day`` (the first day of a month).

    Only what is dated before ``day`` counts: onsets, care home entry, admissions, falls and
    interventions on ``day`` itself take effect from the next month.

    Args:
        state: the hidden state (as it stood on ``day`` for dated quantities).
        idx: positions of the people to include.
        day: the day, counted from 1970-01-01.
        month_of_year: calendar month of ``day`` (1..12), for the winter rise.

    Returns:
        The hazard inputs and, for convenience, each person's age in years.
    """
    p = state.people
    age = np.maximum((day - p.dob[idx]) / DAYS_PER_YEAR, 0.0)
    conditions = state.onset[idx] < day
    frailty = latent_frailty(
        age, conditions, state.frailty_propensity[idx], state.accumulated_deficits[idx]
    )
    recent = state.recent_admissions[idx]
    fa = state.last_falls_assessment[idx]
    mr = state.last_medication_review[idx]
    x = HazardInputs(
        age_years=age,
        male=p.male[idx],
        deprivation=p.deprivation[idx],
        conditions=conditions,
        frailty=frailty,
        emergency_admissions_90d=(recent >= day - 90).sum(axis=1).astype(np.int64),
        emergency_admissions_365d=(recent >= day - 365).sum(axis=1).astype(np.int64),
        fall_180d=state.last_fall[idx] >= day - 180,
        lives_alone=state.lives_alone[idx],
        care_home=state.care_home_from[idx] < day,
        smoker=state.smoker[idx],
        alcohol_misuse=state.alcohol_misuse[idx],
        homeless=state.homeless[idx],
        falls_assessment_365d=(fa < day) & (fa >= day - INTERVENTION_VALID_DAYS),
        medication_review_365d=(mr < day) & (mr >= day - INTERVENTION_VALID_DAYS),
        individual_effect=state.individual_effect[idx],
        month_of_year=month_of_year,
        prescribing_intensity=state.prescribing_intensity[idx],
    )
    return x, age


__all__ = [
    "DEFICIT_CAP",
    "DEFICIT_PER_ADMISSION",
    "DEFICIT_PER_FALL",
    "INTERVENTION_VALID_DAYS",
    "LONG_AGO",
    "NEVER",
    "RECENT_ADMISSIONS_KEPT",
    "HiddenState",
    "hazard_inputs",
]
