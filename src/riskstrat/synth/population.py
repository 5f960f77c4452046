"""Who is in the population: practices, PCNs, neighbourhoods, demography and registration.

All functions are vectorised over people and take an explicit ``numpy.random.Generator``.
Days are integers counted from 1970-01-01 (numpy ``datetime64[D]`` epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from riskstrat.synth.hazards import BoolArray, FloatArray, IntArray

#: A day that never comes (sentinel for "no date"); safe to add a few thousand to in int64.
NEVER = 10**9
DAYS_PER_YEAR = 365.25

# England 2021 census, five-year bands from 0-4 to 85-89, then 90+ (percent of population).
_AGE_BAND_STARTS = np.arange(0, 95, 5, dtype=np.float64)  # 0, 5, ..., 90
_AGE_BAND_SHARES = np.array(
    [5.4, 5.9, 6.0, 5.6, 6.0, 6.6, 6.9, 6.7, 6.3, 6.3, 6.9, 6.7, 5.8, 5.0, 5.0, 3.7, 2.5, 2.6, 1.9]
)
# People moving onto a list are mostly young adults and children.
_MOVER_BAND_SHARES = np.array(
    [
        8.0,
        5.0,
        4.0,
        6.0,
        14.0,
        16.0,
        13.0,
        9.0,
        6.0,
        4.5,
        3.5,
        2.8,
        2.2,
        1.8,
        1.5,
        1.2,
        1.0,
        0.7,
        0.4,
    ]
)

# NHS ethnic category codes with census-like shares within White and within the other groups.
_WHITE_CODES = np.array(["A", "B", "C"])
_WHITE_SHARES = np.array([0.905, 0.012, 0.083])
_OTHER_CODES = np.array(list("DEFGHJKLMNPRS"))
_OTHER_SHARES = np.array([0.8, 0.35, 0.75, 0.95, 3.3, 2.7, 1.1, 1.6, 1.1, 2.5, 0.5, 0.8, 1.6])
_PRACTICE_LETTERS = np.array(list("ABCDEFGHJKLMNPY"))


@dataclass(frozen=True)
class Practices:
    """GP practices, their PCNs and the neighbourhoods (LSOAs) their patients live in."""

    practice_code: npt.NDArray[np.str_]
    pcn_code: npt.NDArray[np.str_]  # per practice
    deprivation_mean: FloatArray  # mean IMD decile of the practice's neighbourhoods
    diversity: FloatArray  # multiplier of the share of non-White patients
    size_weight: FloatArray  # share of patients
    lsoa_practice: IntArray  # for each LSOA, its practice
    lsoa_code: npt.NDArray[np.str_]
    lsoa_decile: IntArray  # IMD decile of each LSOA, 1 = most deprived
    lsoa_start: IntArray  # practice p's LSOAs are lsoa_start[p] .. lsoa_start[p + 1] - 1


def _unique_codes(rng: np.random.Generator, n: int, make: str) -> npt.NDArray[np.str_]:
    """Draw n distinct ODS-shaped codes: 'practice' ([A-Z][0-9]{5}) or 'pcn' (U[0-9]{5})."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = n - len(out) + 8
        digits = rng.integers(10_000, 100_000, size=k)
        if make == "practice":
            letters = rng.choice(_PRACTICE_LETTERS, size=k)
            codes = [f"{a}{d:05d}" for a, d in zip(letters, digits, strict=True)]
        else:
            codes = [f"U{d:05d}" for d in digits]
        for c in codes:
            if c not in seen and len(out) < n:
                seen.add(c)
                out.append(c)
    return np.array(out)


def build_practices(rng: np.random.Generator, n_patients: int) -> Practices:
    """About one practice per 3,000 patients (at least 4), in PCNs of about 3-6 practices."""
    n_prac = max(4, round(n_patients / 3000))
    n_pcn = max(2, round(n_prac / 4.5))
    practice_code = _unique_codes(rng, n_prac, "practice")
    pcn_codes = _unique_codes(rng, n_pcn, "pcn")
    # Contiguous, near-equal groups: practices 0..k1-1 in PCN 0, and so on.
    pcn_of = (np.arange(n_prac) * n_pcn) // n_prac
    # Neighbouring practices share deprivation: a PCN level plus a practice deviation. PCN
    # levels are stratified over 2..9 so that a population's overall deprivation (and what
    # depends on it) does not swing with the seed when there are only a few PCNs.
    pcn_dep = 2.0 + 7.0 * (rng.permutation(n_pcn) + rng.random(n_pcn)) / n_pcn
    dep_mean = np.clip(pcn_dep[pcn_of] + rng.normal(0.0, 1.0, size=n_prac), 1.3, 9.7)
    diversity = np.exp(rng.normal(0.0, 0.6, size=n_prac)) * (1.0 + 0.12 * (5.5 - dep_mean))
    size_weight = np.exp(rng.normal(0.0, 0.35, size=n_prac))
    size_weight = size_weight / size_weight.sum()
    # Keep the population's overall ethnic mix census-like whatever practices were drawn.
    diversity = np.clip(diversity / float(np.sum(diversity * size_weight)), 0.2, 3.5)
    expected = size_weight * n_patients
    n_lsoa = np.clip(np.round(expected / 150.0), 5, 80).astype(np.int64)
    total = int(n_lsoa.sum())
    if total > 33_000:  # England has about 33,800 LSOAs
        n_lsoa = np.maximum(1, (n_lsoa * 33_000) // total)
        total = int(n_lsoa.sum())
    numbers = rng.choice(np.arange(1, 35_000), size=total, replace=False)
    lsoa_code = np.array([f"E01{x:06d}" for x in numbers])
    lsoa_practice = np.repeat(np.arange(n_prac), n_lsoa)
    noise = rng.normal(0.0, 1.4, size=total)
    lsoa_decile = np.clip(np.round(dep_mean[lsoa_practice] + noise), 1, 10).astype(np.int64)
    lsoa_start = np.concatenate([[0], np.cumsum(n_lsoa)]).astype(np.int64)
    return Practices(
        practice_code=practice_code,
        pcn_code=pcn_codes[pcn_of],
        deprivation_mean=dep_mean,
        diversity=diversity,
        size_weight=size_weight,
        lsoa_practice=lsoa_practice,
        lsoa_code=lsoa_code,
        lsoa_decile=lsoa_decile,
        lsoa_start=lsoa_start,
    )


def _draw_ages(rng: np.random.Generator, n: int, shares: FloatArray, max_age: float) -> FloatArray:
    """Ages in years from five-year band shares; the 90+ band has an exponential tail."""
    band = rng.choice(len(shares), size=n, p=shares / shares.sum())
    start = _AGE_BAND_STARTS[band]
    within = rng.random(n) * 5.0
    tail = rng.exponential(3.5, size=n)
    age = np.where(band == len(shares) - 1, 90.0 + tail, start + within)
    return np.minimum(age, max_age - rng.random(n) * 2.0)


@dataclass
class People:
    """Demography and registration of everyone ever registered (hidden truth)."""

    dob: IntArray
    male: BoolArray
    sex_code: npt.NDArray[np.str_]
    ethnic_category: npt.NDArray[np.str_]  # "" = missing
    practice: IntArray
    lsoa: IntArray
    deprivation: FloatArray  # -1 least .. +1 most deprived (true)
    imd_recorded: IntArray  # 0 = missing in the record
    lsoa_recorded: BoolArray
    reg_from: IntArray
    reg_to: IntArray  # NEVER = still registered (before deaths are simulated)
    type1_opt_out: npt.NDArray[np.int8]  # 1 true, 0 false, -1 missing

    def take(self, rows: IntArray) -> People:
        """A copy holding only the people at positions ``rows`` (repeats allowed), in order."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def draw_people(
    rng: np.random.Generator,
    n: int,
    practices: Practices,
    history_start: int,
    extract: int,
) -> People:
    """Draw n people: most registered before the history starts, some born or moving in.

    Leaving the list (moving away) is drawn here, independently of health; deaths are
    simulated later and may bring ``reg_to`` forward.
    """
    years = (extract - history_start) / DAYS_PER_YEAR
    birth_rate, mover_rate = 0.011, 0.040
    join_share = (birth_rate + mover_rate) * years / (1.0 + (birth_rate + mover_rate) * years)
    n_join = min(n - 1, round(n * join_share)) if n > 1 else 0
    n_birth = round(n_join * birth_rate / (birth_rate + mover_rate))
    n_mover = n_join - n_birth
    n_base = n - n_join
    max_age = 112.0 - years

    # Baseline: registered before the history starts.
    age0 = np.maximum(_draw_ages(rng, n_base, _AGE_BAND_SHARES, max_age), 2.0 / DAYS_PER_YEAR)
    dob_base = history_start - np.ceil(age0 * DAYS_PER_YEAR).astype(np.int64)
    lag = np.floor(rng.exponential(9.0 * DAYS_PER_YEAR, size=n_base)).astype(np.int64) + 1
    early = dob_base + np.minimum(14, history_start - 1 - dob_base)
    reg_base = np.minimum(np.maximum(history_start - lag, early), history_start - 1)

    # Births during the history: registered a few weeks after birth.
    span = max(1, extract - history_start - 30)
    dob_birth = history_start + np.floor(rng.random(n_birth) * span).astype(np.int64)
    reg_birth = np.minimum(dob_birth + 7 + rng.integers(0, 50, size=n_birth), extract - 1)

    # Movers in during the history.
    reg_mover = history_start + np.floor(rng.random(n_mover) * (extract - history_start))
    reg_mover = reg_mover.astype(np.int64)
    age_m = np.maximum(_draw_ages(rng, n_mover, _MOVER_BAND_SHARES, max_age), 0.05)
    dob_mover = reg_mover - np.ceil(age_m * DAYS_PER_YEAR).astype(np.int64)

    dob = np.concatenate([dob_base, dob_birth, dob_mover])
    reg_from = np.concatenate([reg_base, reg_birth, reg_mover])

    # Leaving the list: exponential, age-dependent (young adults move most).
    start = np.maximum(reg_from, history_start)
    age_at_start = (start - dob) / DAYS_PER_YEAR
    leave_rate = np.select(
        [age_at_start < 18, age_at_start < 35, age_at_start < 65, age_at_start < 85],
        [0.03, 0.075, 0.03, 0.012],
        0.008,
    )
    leave = start + 1 + np.floor(rng.exponential(1.0, size=n) / leave_rate * DAYS_PER_YEAR)
    leave = leave.astype(np.int64)
    reg_to = np.where(leave < extract, leave, NEVER)

    # Sex: more women at older ages; a handful unknown.
    age_now = (extract - dob) / DAYS_PER_YEAR
    p_female = 0.49 + 0.14 * np.clip((age_now - 60.0) / 30.0, 0.0, 1.0)
    female = rng.random(n) < p_female
    unknown = rng.random(n) < 0.001
    sex_code = np.where(unknown, "U", np.where(female, "F", "M"))
    male = sex_code == "M"

    # Practice and neighbourhood.
    practice = rng.choice(len(practices.size_weight), size=n, p=practices.size_weight)
    n_lsoa = np.diff(practices.lsoa_start)[practice]
    lsoa = practices.lsoa_start[practice] + np.floor(rng.random(n) * n_lsoa).astype(np.int64)
    decile = practices.lsoa_decile[lsoa]
    deprivation = ((5.5 - decile) / 4.5).astype(np.float64)
    lsoa_recorded = rng.random(n) >= 0.03
    # The IMD decile is looked up from the LSOA, as in a real extract, so it is recorded
    # exactly when the LSOA is (an OMOP source can say no more). The draw that once left it
    # out for 0.5% more is still made, so every later draw is unchanged.
    rng.random(n)
    imd_recorded = np.where(lsoa_recorded, decile, 0)

    # Ethnicity: census-like, more diverse in younger people and in diverse practices.
    age_factor = np.select([age_now < 40, age_now < 65], [1.3, 0.9], 0.45)
    p_other = np.clip(0.19 * age_factor * practices.diversity[practice], 0.0, 0.85)
    other = rng.random(n) < p_other
    white_pick = rng.choice(_WHITE_CODES, size=n, p=_WHITE_SHARES)
    other_pick = rng.choice(_OTHER_CODES, size=n, p=_OTHER_SHARES / _OTHER_SHARES.sum())
    ethnic = np.where(other, other_pick, white_pick)
    r = rng.random(n)
    ethnic = np.where(r < 0.04, "", np.where(r < 0.07, "Z", ethnic))

    r = rng.random(n)
    opt_out = np.where(r < 0.03, 1, np.where(r < 0.88, 0, -1)).astype(np.int8)

    return People(
        dob=dob,
        male=male,
        sex_code=sex_code,
        ethnic_category=ethnic,
        practice=practice,
        lsoa=lsoa,
        deprivation=deprivation,
        imd_recorded=imd_recorded,
        lsoa_recorded=lsoa_recorded,
        reg_from=reg_from,
        reg_to=reg_to,
        type1_opt_out=opt_out,
    )
