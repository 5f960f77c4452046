"""Numbers as a PCN team reads them: reasons' sizes with their verb, risks and percentiles
that are never impossible, and expected benefit in words with the assumption it rests on.

Every function here is pure and takes whatever number it is given: a probability is clamped to
0-100%, a size in percentage points to +-100, and a value too small to show is said to be
("less than 0.1 points"), never printed as a misleading zero.
"""

from __future__ import annotations

import math
import re

#: For an intervention that claims no effect on emergency admissions, what its evidence is
#: about instead, by the intervention code it is served by (from cohorts.yaml's comments).
OWN_MEASURES = {
    "ADVANCE_CARE_PLAN": "fewer days in hospital in the last months of life, which needs a "
    "mortality estimate",
}
#: For a list whose benefit is in bed days (cohort file ``bed_days``), whom the days are
#: saved for, by the intervention code it is served by. Others say "who has the outcome the
#: <ranking risk> is about".
BED_DAYS_FOR = {
    "ADVANCE_CARE_PLAN": "who dies within the year with a plan in place",
}

#: The horizon of every risk and every benefit, in words.
HORIZON = "in the next 90 days"


def _finite(value: float, default: float = 0.0) -> float:
    number = float(value)
    return number if math.isfinite(number) else default


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def points_words(percentage_points: float) -> str:
    """A reason's size with its verb from its sign: "raises the risk by 4.1 points", "lowers
    the risk by less than 0.1 points". Sizes are capped at 100 points (a difference of two
    probabilities cannot be more)."""
    pp = _finite(percentage_points)
    if pp == 0:
        return "does not change the risk"
    verb = "raises" if pp > 0 else "lowers"
    size = min(abs(pp), 100.0)
    amount = "less than 0.1" if size < 0.05 else f"{size:.1f}"
    return f"{verb} the risk by {amount} points"


def percent_text(probability: float) -> str:
    """A probability as a percentage that is never impossible: clamped to 0-100%, and
    "less than 0.1%" / "more than 99.9%" rather than a rounded 0.0% or 100.0%."""
    p = min(max(_finite(probability), 0.0), 1.0)
    if p == 0.0:
        return "0%"
    if p == 1.0:
        return "100%"
    if p < 0.0005:
        return "less than 0.1%"
    if p > 0.9995:
        return "more than 99.9%"
    return f"{100 * p:.1f}%"


def percentile_words(percentile: float) -> str:
    """Where a risk stands among everyone scored, from its percentile (the share of people
    at or below it): "in the top 1% of people scored", "as high as or higher than that of 57%
    of people scored". Never "higher than 100%"."""
    p = min(max(_finite(percentile), 0.0), 100.0)
    if p >= 99.0:
        return "in the top 1% of people scored"
    if p >= 90.0:
        return f"in the top {math.ceil(100.0 - p)}% of people scored"
    return f"as high as or higher than that of {math.floor(p)}% of people scored"


def chance_words(probability: float) -> str:
    """A chance as people say it: "about 1 in 3", "about 7 in 10", "less than 1 in 1,000"."""
    p = min(max(_finite(probability), 0.0), 1.0)
    if p == 0.0:
        return "no"
    if p < 0.001:
        return "less than 1 in 1,000"
    if p >= 0.5:
        tenths = int(p * 10 + 0.5)
        return "more than 9 in 10" if tenths >= 10 else f"about {tenths} in 10"
    return f"about 1 in {int(1 / p + 0.5):,}"


def _per_hundred(per100: float) -> str:
    if per100 <= 0:
        return "none"
    if per100 < 0.01:
        return "fewer than 0.01"
    if per100 >= 10:
        return f"about {int(per100 + 0.5)}"
    return f"about {per100:.2g}"


def intervention_label(title: str) -> str:
    """An intervention's title as it reads mid-sentence: "Falls review (multifactorial falls
    risk assessment)" as "falls review"."""
    short = re.sub(r"\s*\([^)]*\)\s*$", "", title.strip()) or title.strip()
    if len(short) > 1 and short[0].isupper() and not short[1].isupper():
        short = short[0].lower() + short[1:]
    return short


def _who(people: int) -> str:
    return "this person" if people == 1 else f"these {people:,} people"


def benefit_in_words(
    expected_admissions_avoided: float, people: int, *, intervention_label: str, effect: float
) -> str:
    """Expected admissions avoided as a PCN team reads them, with the assumption they rest on.

    "Reviewing these 30 people is expected to avoid about 2 emergency admissions in the next
    90 days (about 7 per 100 reviewed), assuming falls review cuts the emergency admission
    rate by 35% among people who receive it." Below one admission it is a chance: "...gives
    about a 1 in 3 chance of avoiding one emergency admission...". The number avoided is
    clamped to 0..people.
    """
    if not 0.0 < effect <= 1.0:
        raise ValueError(f"effect must be a share above 0 and at most 1, not {effect!r}")
    if people <= 0:
        return "Nobody is in this part of the list, so no admissions can be avoided here."
    avoided = min(max(_finite(expected_admissions_avoided), 0.0), float(people))
    per100 = _per_hundred(100.0 * avoided / people)
    assumption = (
        f"assuming {intervention_label} cuts the emergency admission rate by {effect:.0%} "
        "among people who receive it"
    )
    if avoided >= 1.0:
        count = _plural(int(avoided + 0.5), "emergency admission")
        return (
            f"Reviewing {_who(people)} is expected to avoid about {count} {HORIZON} "
            f"({per100} per 100 reviewed), {assumption}."
        )
    return (
        f"Reviewing {_who(people)} gives {chance_words(avoided)} chance of avoiding one "
        f"emergency admission {HORIZON} ({per100} per 100 reviewed), {assumption}."
    )


def no_effect_in_words(
    expected_admissions: float,
    people: int,
    *,
    intervention_label: str,
    served_by: str | None = None,
) -> str:
    """For an intervention that claims no effect on emergency admissions (advance care
    planning): why no admissions avoided are shown, what its evidence is about instead, and
    the admissions expected among the people listed, on which the list is ranked."""
    own = OWN_MEASURES.get(served_by or "")
    why = f"No effect on emergency admissions is claimed for {intervention_label}" + (
        f": its evidence is about {own}" if own else ""
    )
    why += ". The list is ranked by the risk of an emergency admission instead."
    if people <= 0:
        return why
    expected = min(max(_finite(expected_admissions), 0.0), float(people))
    if expected >= 1.0:
        among = f"about {_plural(int(expected + 0.5), 'emergency admission')}"
        tail = f"{_who(people).capitalize()} are expected to have {among} {HORIZON} between them."
        if people == 1:
            tail = f"This person is expected to have {among} {HORIZON}."
    else:
        tail = (
            f"There is {chance_words(expected)} chance of an emergency admission among "
            f"{_who(people)} {HORIZON}."
        )
    return f"{why} {tail}"


def days_text(days: float) -> str:
    """A number of bed days as it reads: "less than 0.1", "2.4", "41", "1,250"."""
    d = max(_finite(days), 0.0)
    if d == 0.0:
        return "0"
    if d < 0.05:
        return "less than 0.1"
    if d < 10:
        return f"{d:.1f}"
    return f"{int(d + 0.5):,}"


def bed_days_in_words(
    expected_bed_days: float,
    people: int,
    *,
    intervention_label: str,
    per_event: float,
    ranking_label: str,
    served_by: str | None = None,
) -> str:
    """Expected hospital bed days saved by a list ranked by another model's risk (cohort file
    ``bed_days``), with the assumption they rest on.

    "Reaching these 30 people with advance care planning is expected to save about 41 days
    in hospital (about 140 per 100 reached), assuming it saves 5 bed days for each person who
    dies within the year with a plan in place (each person's 12-month mortality risk x 5
    days). No effect on emergency admissions is claimed." The days are clamped to
    0..people x ``per_event``.
    """
    if not 0.0 < per_event <= 365.0:
        raise ValueError(f"per_event must be above 0 and at most 365 days, not {per_event!r}")
    who = BED_DAYS_FOR.get(served_by or "", f"who has the outcome the {ranking_label} is about")
    assumption = (
        f"assuming it saves {per_event:g} bed days for each person {who} (each person's "
        f"{ranking_label} x {per_event:g} days)"
    )
    if people <= 0:
        return "Nobody is in this part of the list, so no bed days can be saved here."
    days = min(max(_finite(expected_bed_days), 0.0), people * per_event)
    per100 = _per_hundred(100.0 * days / people)
    amount = days_text(days)
    about = "no" if amount == "0" else amount if amount.startswith("less") else f"about {amount}"
    return (
        f"Reaching {_who(people)} with {intervention_label} is expected to save {about} "
        f"days in hospital ({per100} per 100 reached), {assumption}. "
        "No effect on emergency admissions is claimed."
    )


def person_benefit_in_words(expected_benefit: float | None) -> str:
    """One person's expected admissions avoided in words (their risk x the effect): "about 1
    in 3 chance that reaching them avoids an emergency admission in the next 90 days"; with
    no effect claimed, why there is no number."""
    if expected_benefit is None or math.isnan(float(expected_benefit)):
        return "not estimated: no effect on admissions is claimed; listed by risk"
    return (
        f"{chance_words(expected_benefit)} chance that reaching them avoids an emergency "
        f"admission {HORIZON}"
    )
