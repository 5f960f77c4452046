"""The monthly non-admission dynamics of the hidden state: falls, care, palliative care and
interventions.

Each ``draw_*`` function draws one month of one kind of event for people ``idx`` from the
covariates at the start of the month, writes the result into the hidden state and returns
what happened so that the generator can record it. The generator's monthly loop and the
oracle (:mod:`riskstrat.synth.oracle`) call the same functions: the oracle runs them on copies
of the state to integrate over what may change inside an outcome window.

Windows: ``olo``/``ohi`` bound the days each person spends out of hospital and alive in the
month (``ohi > olo`` where ``live``); ``frac`` is that span as a share of the month.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskstrat.synth.catalogue import CONDITION_INDEX
from riskstrat.synth.hazards import (
    BoolArray,
    FloatArray,
    HazardInputs,
    HazardParams,
    IntArray,
    palliative_entry_hazard,
)
from riskstrat.synth.population import DAYS_PER_YEAR, NEVER
from riskstrat.synth.state import (
    DEFICIT_CAP,
    DEFICIT_PER_FALL,
    INTERVENTION_VALID_DAYS,
    HiddenState,
)

_C = CONDITION_INDEX

#: Share of falls in people aged 60+ that lead to a multifactorial falls assessment (unless
#: one was done or booked in the last year), booked 7 to 60 days after the fall.
FALLS_ASSESSMENT_SHARE = 0.1


def uniform_days(rng: np.random.Generator, lo: IntArray, hi: IntArray) -> IntArray:
    """A uniform day in [lo, hi) for each pair (hi > lo)."""
    days: IntArray = lo + np.floor(rng.random(lo.shape[0]) * (hi - lo)).astype(np.int64)
    return days


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def fall_hazard_annual(x: HazardInputs) -> FloatArray:
    """Annual rate of falls: rising with age from 50, with frailty, dementia and Parkinson's.

    About a third of people aged 65+ fall each year. Most falls are never coded; the
    generator records a share of them as ``FALL``.
    """
    c = x.conditions
    age = x.age_years
    annual = np.where(age >= 50, 0.16 * np.exp(0.04 * (age - 70.0)), 0.02)
    rate: FloatArray = (
        annual
        * (1.0 + 5.0 * x.frailty)
        * (1.0 + 0.6 * c[:, _C["DEMENTIA"]] + 0.8 * c[:, _C["PARKINSONS"]])
    )
    return rate


def care_home_entry_probability(x: HazardInputs) -> FloatArray:
    """Monthly probability of moving into a care home (people aged 65+ not yet resident)."""
    z = (
        -10.5
        + 0.09 * (x.age_years - 65.0)
        + 7.0 * x.frailty
        + 1.6 * x.conditions[:, _C["DEMENTIA"]]
        + 0.6 * x.lives_alone
    )
    return np.where(x.age_years >= 65, _sigmoid(z), 0.0)


def medication_review_hazard(x: HazardInputs) -> FloatArray:
    """Monthly hazard of a structured medication review (complex patients, older people)."""
    n_cond = x.conditions.sum(axis=1)
    complex_ = (n_cond >= 4) | x.care_home | (x.frailty > 0.24)
    return np.where(complex_, 0.025, np.where(x.age_years >= 65, 0.002, 0.0))


@dataclass(frozen=True)
class Falls:
    """Falls drawn in a month: positions in ``idx`` of who fell, the day, and assessments."""

    local: IntArray  # positions in idx
    day: IntArray
    assessed: BoolArray  # per fall: a falls assessment was booked
    assessment_day: IntArray  # per assessed fall


def draw_falls(
    rng: np.random.Generator,
    st: HiddenState,
    idx: IntArray,
    x: HazardInputs,
    olo: IntArray,
    ohi: IntArray,
    frac: FloatArray,
    live: BoolArray,
) -> Falls:
    """Falls in the month (at most one each) and the falls assessments they lead to.

    Updates ``last_fall``, ``accumulated_deficits`` (falls at 65+) and
    ``last_falls_assessment``.
    """
    annual = fall_hazard_annual(x)
    fell = live & (rng.random(idx.shape[0]) < 1.0 - np.exp(-annual / 12.0 * frac))
    f = np.flatnonzero(fell)
    day = uniform_days(rng, olo[f], ohi[f])
    who = idx[f]
    st.last_fall[who] = day
    old = (day - st.people.dob[who]) / DAYS_PER_YEAR >= 65
    st.accumulated_deficits[who] = np.minimum(
        st.accumulated_deficits[who] + DEFICIT_PER_FALL * old, DEFICIT_CAP
    )
    recent_fa = st.last_falls_assessment[who] > day - INTERVENTION_VALID_DAYS
    assess = (x.age_years[f] >= 60) & ~recent_fa & (rng.random(f.size) < FALLS_ASSESSMENT_SHARE)
    fa_day = day[assess] + rng.integers(7, 61, size=int(assess.sum()))
    st.last_falls_assessment[who[assess]] = fa_day
    return Falls(local=f, day=day, assessed=assess, assessment_day=fa_day)


def draw_states(
    rng: np.random.Generator,
    st: HiddenState,
    idx: IntArray,
    x: HazardInputs,
    olo: IntArray,
    ohi: IntArray,
    live: BoolArray,
) -> None:
    """Care home entry and frailty-driven states (housebound, has a carer, home care)."""
    k = idx.shape[0]
    not_in = st.care_home_from[idx] == NEVER
    enter = live & not_in & (rng.random(k) < care_home_entry_probability(x))
    ent = np.flatnonzero(enter)
    st.care_home_from[idx[ent]] = uniform_days(rng, olo[ent], ohi[ent])
    for arr, thr in (
        (st.housebound_from, st.housebound_threshold),
        (st.has_carer_from, st.has_carer_threshold),
        (st.home_care_from, st.home_care_threshold),
    ):
        new = live & (arr[idx] == NEVER) & (x.frailty > thr[idx])
        nw = np.flatnonzero(new)
        arr[idx[nw]] = uniform_days(rng, olo[nw], ohi[nw])


@dataclass(frozen=True)
class Interventions:
    """Advance care plans and medication reviews drawn in a month (positions in ``idx``)."""

    acp_local: IntArray
    acp_day: IntArray
    acp_decided: IntArray  # the day the plan was decided (it may be recorded weeks later)
    review_local: IntArray
    review_day: IntArray


def draw_palliative_and_interventions(
    rng: np.random.Generator,
    st: HiddenState,
    idx: IntArray,
    x: HazardInputs,
    olo: IntArray,
    ohi: IntArray,
    frac: FloatArray,
    live: BoolArray,
    hp: HazardParams,
) -> Interventions:
    """Palliative register entry, advance care plans and structured medication reviews."""
    k = idx.shape[0]
    h = palliative_entry_hazard(x, hp)
    enter = np.flatnonzero(live & (rng.random(k) < 1.0 - np.exp(-h * frac)))
    pday = uniform_days(rng, olo[enter], ohi[enter])
    st.onset[idx[enter], _C["PALLIATIVE"]] = pday
    # Advance care plans: on entering the register, or for people in care homes, with
    # dementia or severe frailty.
    no_acp = st.advance_care_plan[idx] == NEVER
    acp_now = no_acp[enter] & (rng.random(enter.size) < 0.5)
    acp_idx = enter[acp_now]
    acp_day = pday[acp_now] + rng.integers(0, 61, size=acp_idx.size)
    candidates = (
        (x.care_home | x.conditions[:, _C["DEMENTIA"]] | (x.frailty > 0.36)) & live & no_acp
    )
    other = np.flatnonzero(candidates & (rng.random(k) < 0.008))
    other = np.setdiff1d(other, acp_idx)
    oday = uniform_days(rng, olo[other], ohi[other])
    who_acp = np.concatenate([acp_idx, other])
    day_acp = np.concatenate([acp_day, oday])
    decided = np.concatenate([pday[acp_now], oday])
    st.advance_care_plan[idx[who_acp]] = day_acp
    # Structured medication reviews, annual at most.
    p_mr = medication_review_hazard(x)
    p_mr = np.where(st.last_medication_review[idx] > olo - INTERVENTION_VALID_DAYS, 0.0, p_mr)
    mr = np.flatnonzero(live & (rng.random(k) < 1.0 - np.exp(-p_mr * frac)))
    mday = uniform_days(rng, olo[mr], ohi[mr])
    st.last_medication_review[idx[mr]] = mday
    return Interventions(
        acp_local=who_acp,
        acp_day=day_acp,
        acp_decided=decided,
        review_local=mr,
        review_day=mday,
    )


__all__ = [
    "FALLS_ASSESSMENT_SHARE",
    "Falls",
    "Interventions",
    "care_home_entry_probability",
    "draw_falls",
    "draw_palliative_and_interventions",
    "draw_states",
    "fall_hazard_annual",
    "medication_review_hazard",
    "uniform_days",
]
