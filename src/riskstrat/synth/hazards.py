"""The hidden risk model: latent frailty, emergency admission hazard and death hazard.

Each function is a pure function of a :class:`HazardInputs` snapshot (one row per person, as
at the first day of a calendar month). The generator builds the snapshot from its hidden state
every month and draws events from these rates; a later oracle can build the same snapshot at an
index date and integrate the rates to get each person's true probability of an emergency
admission in the next 90 days.

Conventions:

* A *monthly hazard* is the expected number of events in one whole calendar month of exposure.
  Within a month the hazard is constant per day: a person exposed for ``d`` of the month's
  ``n`` days has ``P(>=1 event) = 1 - exp(-hazard * d / n)``; the day of a death is uniform
  over the exposed days.
* Exposure to emergency admission excludes days in hospital (from admission to discharge) and
  days after death; it includes the days of unregistered hidden history of people who join the
  list later (those events are simulated but never written) and the days after a person leaves
  the list (those admissions are written: the activity table is SUS-linked).
* Within a month the first admission happens with probability ``1 - exp(-hazard * d / n)`` and
  its day follows the same constant hazard (an exponential truncated to the exposed days), so
  the chance of none before any day ``t`` is ``exp(-hazard * (t - start) / n)``. A second
  admission in the month is possible only after the first one's discharge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from riskstrat.data.contract import CONDITIONS
from riskstrat.synth.catalogue import ALL_CONDITION_SPECS

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class HazardParams:
    """Coefficients of the hidden risk model (log scale unless said otherwise)."""

    #: Monthly emergency admission hazard of a reference person (age 30, no conditions,
    #: frailty 0, average deprivation, individual effect 0, no winter).
    emergency_base_monthly: float = 0.0022
    #: Age knots (years) and log multipliers, interpolated linearly.
    emergency_age_knots: tuple[float, ...] = (0.0, 1.0, 5.0, 16.0, 30.0, 45.0, 65.0, 75.0,
                                              85.0, 95.0, 115.0)  # fmt: skip
    emergency_age_log: tuple[float, ...] = (1.6, 0.6, 0.0, -0.05, -0.35, -0.15, 0.25, 0.45,
                                            0.75, 0.95, 0.95)  # fmt: skip
    emergency_frailty: float = 3.0  # per unit of latent frailty (eFI scale)
    emergency_male: float = 0.05
    emergency_deprivation: float = 0.3  # per unit deprivation (+1 = most deprived)
    emergency_admissions_90d: float = 0.9  # per admission in the last 90 days (max 3)
    emergency_admissions_365d: float = 0.35  # per earlier admission in the last year (max 4)
    emergency_fall_180d: float = 0.3
    emergency_lives_alone_frail: float = 0.5  # times frailty excess over 0.12, scaled to 1
    emergency_care_home: float = 0.35
    emergency_smoker: float = 0.15
    emergency_alcohol: float = 0.6
    emergency_homeless: float = 0.9
    emergency_prescribing: float = 0.15  # per unit of prescribing intensity (polypharmacy)
    #: Delivered interventions (log of the relative rate): falls assessment after a fall
    #: (about -35%), structured medication review (about -25%).
    emergency_falls_assessment: float = float(np.log(0.65))
    emergency_medication_review: float = float(np.log(0.75))
    #: Ceiling of the monthly hazard (keeps the most extreme repeat admitters plausible).
    emergency_max_monthly: float = 1.0
    #: Winter rise: multiplier ``1 + winter_amplitude * cos(2 pi (month - 1) / 12)``, x1.095
    #: in January and x0.905 in July: the size published for England, about 200,000 extra
    #: emergency admissions a winter (Department of Health, 2015: some eight for each of about
    #: 25,000 excess winter deaths) on 5.3 million a year (HES, 2013-14), about 12% more per
    #: day from December to March than the rest of the year (docs/synthetic-population.md,
    #: "Seasons"). Until December 2026 it was 0.15 (about 19%), on the strong side.
    winter_amplitude: float = 0.095
    #: Standard deviation of the unobserved individual effect (log scale).
    individual_effect_sd: float = 0.9

    #: Gompertz death hazard (annual): exp(death_intercept + death_age * age).
    death_intercept: float = -10.85
    death_age: float = 0.07
    death_infant_annual: float = 0.003
    death_frailty: float = 1.5
    death_admission_90d: float = 0.8
    death_care_home: float = 0.5
    #: In-hospital death per emergency admission: sigmoid of this linear predictor.
    inhospital_intercept: float = -5.4
    inhospital_age: float = 0.055  # per year over 60
    inhospital_frailty: float = 4.0
    inhospital_palliative: float = 1.5
    inhospital_cancer: float = 0.7

    #: Palliative register entry: monthly hazard = this * death hazard * (1 + 2 * cancer).
    palliative_entry: float = 0.4


DEFAULT_HAZARD_PARAMS = HazardParams()

_FRAILTY_WEIGHTS = np.array([ALL_CONDITION_SPECS[c].frailty_weight for c in CONDITIONS])
_ADMISSION_LOG_HR = np.array([ALL_CONDITION_SPECS[c].admission_log_hr for c in CONDITIONS])
_DEATH_LOG_HR = np.array([ALL_CONDITION_SPECS[c].death_log_hr for c in CONDITIONS])
_CANCER = CONDITIONS.index("CANCER")
_PALLIATIVE = CONDITIONS.index("PALLIATIVE")


@dataclass(frozen=True)
class HazardInputs:
    """Covariates of n people as at the first day of a month (hidden truth, not the record).

    ``conditions`` is an (n, len(CONDITIONS)) boolean matrix in contract order: condition
    present (onset before the day). Counts of admissions include hidden ones (before the
    history or before registration).
    """

    age_years: FloatArray
    male: BoolArray
    deprivation: FloatArray  # -1 least deprived .. +1 most deprived (true LSOA decile)
    conditions: BoolArray
    frailty: FloatArray  # latent frailty on the eFI scale (0 .. 0.9)
    emergency_admissions_90d: IntArray
    emergency_admissions_365d: IntArray  # includes the last 90 days; counted up to 12
    fall_180d: BoolArray
    lives_alone: BoolArray
    care_home: BoolArray
    smoker: BoolArray
    alcohol_misuse: BoolArray
    homeless: BoolArray
    falls_assessment_365d: BoolArray
    medication_review_365d: BoolArray
    individual_effect: FloatArray  # unobserved, log scale
    month_of_year: int  # 1..12, for the winter rise
    #: Prescribing intensity (N(0, 1)-like): drives how many repeat medicines a person gets
    #: beyond their conditions, and with them the risk that comes with polypharmacy.
    prescribing_intensity: FloatArray | None = None


def latent_frailty(
    age_years: FloatArray,
    conditions: BoolArray,
    frailty_propensity: FloatArray,
    accumulated_deficits: FloatArray,
) -> FloatArray:
    """Latent frailty on the eFI scale: rises steeply with age and with each condition.

    Args:
        age_years: age on the day.
        conditions: (n, C) conditions present on the day, contract order.
        frailty_propensity: persistent individual log multiplier of the age component.
        accumulated_deficits: deficits accrued from earlier emergency admissions and falls.

    Returns:
        Frailty clipped to [0, 0.9].
    """
    age_part = 0.015 + 0.10 * np.exp((age_years - 80.0) / 13.0)
    f = age_part * np.exp(frailty_propensity) + conditions @ _FRAILTY_WEIGHTS
    frailty: FloatArray = np.clip(f + accumulated_deficits, 0.0, 0.9)
    return frailty


def winter_multiplier(month_of_year: int, params: HazardParams = DEFAULT_HAZARD_PARAMS) -> float:
    """Seasonal multiplier of the emergency admission hazard, highest in January."""
    return 1.0 + params.winter_amplitude * float(np.cos(2.0 * np.pi * (month_of_year - 1) / 12))


def emergency_admission_hazard(
    x: HazardInputs, params: HazardParams = DEFAULT_HAZARD_PARAMS
) -> FloatArray:
    """Monthly hazard of an emergency admission for each person (see module conventions).

    Rises steeply with age, with long-term conditions, latent frailty, recent emergency
    admissions (repeat admitters), a recent fall, deprivation, frailty when living alone, care
    home residence, smoking, alcohol misuse, homelessness and prescribing intensity (the
    latent driver of polypharmacy); multiplied by the unobserved
    individual effect and a winter rise; lowered by a recent falls assessment (for people who
    have fallen) or structured medication review.
    """
    age_log = np.interp(x.age_years, params.emergency_age_knots, params.emergency_age_log)
    frail_excess = np.clip((x.frailty - 0.12) / 0.24, 0.0, 1.0)
    log_h = (
        np.log(params.emergency_base_monthly)
        + age_log
        + x.conditions @ _ADMISSION_LOG_HR
        + params.emergency_frailty * x.frailty
        + params.emergency_male * x.male
        + params.emergency_deprivation * x.deprivation
        + params.emergency_admissions_90d * np.minimum(x.emergency_admissions_90d, 3)
        + params.emergency_admissions_365d
        * np.minimum(x.emergency_admissions_365d - x.emergency_admissions_90d, 4)
        + params.emergency_fall_180d * x.fall_180d
        + params.emergency_lives_alone_frail * (x.lives_alone * frail_excess)
        + params.emergency_care_home * x.care_home
        + params.emergency_smoker * x.smoker
        + params.emergency_alcohol * x.alcohol_misuse
        + params.emergency_homeless * x.homeless
        + params.emergency_falls_assessment * (x.falls_assessment_365d & x.fall_180d)
        + params.emergency_medication_review * x.medication_review_365d
        + x.individual_effect
    )
    if x.prescribing_intensity is not None:
        log_h = log_h + params.emergency_prescribing * x.prescribing_intensity
    h = np.minimum(np.exp(log_h), params.emergency_max_monthly)
    hazard: FloatArray = h * winter_multiplier(x.month_of_year, params)
    return hazard


def death_hazard(x: HazardInputs, params: HazardParams = DEFAULT_HAZARD_PARAMS) -> FloatArray:
    """Monthly hazard of dying outside an emergency admission (Gompertz in age).

    Multiplied by latent frailty, conditions (cancer, dementia, heart failure, the palliative
    register above all), an emergency admission in the last 90 days and care home residence.
    """
    annual = np.exp(params.death_intercept + params.death_age * x.age_years)
    annual = annual + params.death_infant_annual * (x.age_years < 1.0)
    log_mult = (
        params.death_frailty * x.frailty
        + x.conditions @ _DEATH_LOG_HR
        + params.death_admission_90d * (x.emergency_admissions_90d > 0)
        + params.death_care_home * x.care_home
    )
    monthly: FloatArray = annual / 12.0 * np.exp(log_mult)
    return monthly


def inhospital_death_probability(
    x: HazardInputs, params: HazardParams = DEFAULT_HAZARD_PARAMS
) -> FloatArray:
    """Probability that an emergency admission ends in death (at the discharge date)."""
    z = (
        params.inhospital_intercept
        + params.inhospital_age * np.maximum(x.age_years - 60.0, 0.0)
        + params.inhospital_frailty * x.frailty
        + params.inhospital_palliative * x.conditions[:, _PALLIATIVE]
        + params.inhospital_cancer * x.conditions[:, _CANCER]
    )
    probability: FloatArray = np.minimum(1.0 / (1.0 + np.exp(-z)), 0.5)
    return probability


def palliative_entry_hazard(
    x: HazardInputs, params: HazardParams = DEFAULT_HAZARD_PARAMS
) -> FloatArray:
    """Monthly hazard of joining the palliative care register (zero once on it)."""
    not_on = ~x.conditions[:, _PALLIATIVE]
    h = params.palliative_entry * death_hazard(x, params) * (1.0 + 2.0 * x.conditions[:, _CANCER])
    return np.where(not_on, h, 0.0)
