"""The words of each reason group: what a clinician reads for a person's own values.

A reason's text is a noun phrase built from the person's VALUES only (bands for measures,
counts for events, classes for medicines), never from what a template assumes about them:
"very severe frailty (CFS 8)", "1 emergency admission in the last 12 months", "no falls
recorded in the last 12 months". Whether the reason raises or lowers the risk is the sign of
its contribution, said next to the text by whoever shows it (``direction``, or
``cohorts.listing.reason_sentence``); a phrase is also told that sign, so that it never names
something as lowering the risk that only a raising reason should name (a falls-risk medicine
under a reason that lowers the risk, say).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from riskstrat.data.contract import CONDITIONS, DRUG_CLASSES, EVENT_CODES, STATE_CODES

Values = Mapping[str, Any]

CONDITION_NAMES = {
    "AF": "atrial fibrillation", "ASTHMA": "asthma", "CANCER": "cancer",
    "CHD": "coronary heart disease", "CKD": "chronic kidney disease", "COPD": "COPD",
    "DEMENTIA": "dementia", "DEPRESSION": "depression", "DIABETES": "diabetes",
    "EPILEPSY": "epilepsy", "HEART_FAILURE": "heart failure", "HYPERTENSION": "hypertension",
    "LEARNING_DISABILITY": "a learning disability", "LIVER_DISEASE": "liver disease",
    "OSTEOPOROSIS": "osteoporosis", "PAD": "peripheral arterial disease",
    "PALLIATIVE": "palliative care needs", "PARKINSONS": "Parkinson's disease",
    "RHEUMATOID_ARTHRITIS": "rheumatoid arthritis", "SMI": "serious mental illness",
    "STROKE_TIA": "stroke or TIA",
}  # fmt: skip
DRUG_NAMES = {
    "ANTICOAGULANT": "an anticoagulant", "ANTIPLATELET": "an antiplatelet",
    "ANTIHYPERTENSIVE": "an antihypertensive", "BETA_BLOCKER": "a beta blocker",
    "DIURETIC": "a diuretic", "DIGOXIN": "digoxin", "STATIN": "a statin", "INSULIN": "insulin",
    "ORAL_HYPOGLYCAEMIC": "an oral hypoglycaemic", "OPIOID": "an opioid", "NSAID": "an NSAID",
    "BENZODIAZEPINE": "a benzodiazepine", "Z_DRUG": "a Z-drug",
    "ANTIPSYCHOTIC": "an antipsychotic", "ANTIDEPRESSANT": "an antidepressant",
    "ANTIEPILEPTIC": "an antiepileptic", "ANTICHOLINERGIC": "an anticholinergic",
    "ORAL_CORTICOSTEROID": "an oral corticosteroid",
    "INHALED_CORTICOSTEROID": "an inhaled corticosteroid", "BRONCHODILATOR": "a bronchodilator",
    "DOPAMINERGIC": "a dopaminergic", "PPI": "a PPI", "LAXATIVE": "a laxative",
    "ANTIBIOTIC": "an antibiotic", "OTHER": "other medicines",
}  # fmt: skip
STATE_NAMES = {
    "LIVES_ALONE": "lives alone", "CARE_HOME": "lives in a care home",
    "HOUSEBOUND": "housebound", "HOME_CARE_PACKAGE": "receives home care",
    "HAS_CARER": "has a carer", "IS_CARER": "is a carer", "HOMELESS": "homeless",
    "SOCIAL_ISOLATION": "socially isolated", "SMOKER": "smoker",
}  # fmt: skip
PROBLEM_NAMES = {
    "MOBILITY_PROBLEM": "mobility problem", "ALCOHOL_MISUSE": "alcohol misuse",
    "INCONTINENCE": "incontinence", "MEMORY_CONCERN": "memory concern",
    "VISUAL_IMPAIRMENT": "visual impairment", "HEARING_IMPAIRMENT": "hearing impairment",
    "WEIGHT_LOSS": "weight loss",
}  # fmt: skip
# Drug classes named first when a patient's medicines are described (falls-risk drugs). They
# are named only under a reason that raises the risk, and only those whose own contribution
# raises it too.
NOTABLE_DRUGS = ("OPIOID", "BENZODIAZEPINE", "Z_DRUG", "ANTIPSYCHOTIC", "ANTICHOLINERGIC",
                 "ANTIDEPRESSANT", "ANTIEPILEPTIC", "DOPAMINERGIC", "INSULIN", "ANTICOAGULANT",
                 "ORAL_CORTICOSTEROID", "DIGOXIN")  # fmt: skip

#: Rockwood's Clinical Frailty Scale (version 2), a whole number from 1 to 9, by band.
CFS_BANDS = {
    1: "fit", 2: "fit", 3: "fit", 4: "very mild frailty", 5: "mild frailty",
    6: "moderate frailty", 7: "severe frailty", 8: "very severe frailty", 9: "terminally ill",
}  # fmt: skip


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _number(value: Any) -> float | None:
    """A value as a finite number, or ``None`` when it is missing or unreadable."""
    if _missing(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    """A count as a whole number: missing, unreadable or negative counts are 0."""
    number = _number(value)
    return 0 if number is None else max(int(number), 0)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _ago(days: int) -> str:
    """A time since, in the largest unit that reads right: days, months or years."""
    if days < 1:
        return "less than a day"
    if days < 60:
        return _plural(days, "day")
    if days < 730:
        return _plural(days // 30, "month")
    return _plural(days // 365, "year")


def _emergency(v: Values) -> str:
    n = _count(v.get("emergency_admissions_365d"))
    days = _number(v.get("days_since_last_emergency_admission"))
    if days is not None and days < 0:
        days = None
    if n:
        text = f"{_plural(n, 'emergency admission')} in the last 12 months"
        if days is not None:
            text += f", the latest {_ago(int(days))} ago"
        return text
    if days is not None:
        return f"no emergency admission in the last 12 months (the last one {_ago(int(days))} ago)"
    return "no emergency admissions on record"


def _ae(v: Values) -> str:
    n, ever = _count(v.get("ae_attendances_365d")), _count(v.get("ae_attendances_ever"))
    text = (
        f"{_plural(n, 'A&E attendance')} in the last 12 months"
        if n
        else "no A&E attendances in the last 12 months"
    )
    if ever > n:
        text += f" ({ever} in the whole record)"
    return text


def _planned(v: Values) -> str:
    gp, op = _count(v.get("gp_contacts_365d")), _count(v.get("outpatient_attendances_365d"))
    missed = _count(v.get("gp_missed_365d")) + _count(v.get("outpatient_missed_365d"))
    if not gp and not op:
        text = "no GP contacts or outpatient attendances in the last 12 months"
    else:
        text = (
            f"{_plural(gp, 'GP contact')} and {_plural(op, 'outpatient attendance')} "
            "in the last 12 months"
        )
    if missed:
        text += f", {_plural(missed, 'missed appointment')}"
    return text


def _age(v: Values) -> str:
    age = _number(v.get("age_years"))
    if age is None or age < 0:
        return "age not recorded"
    return f"aged {int(age)}"


def _record(v: Values) -> str:
    days = _count(v.get("recorded_history_days"))
    if days < 30:
        return "a short record here (less than a month), so little history"
    if days < 365:
        return f"a short record here ({_plural(days // 30, 'month')}), so little history"
    return f"{_plural(days // 365, 'year')} of record here"


def _sex(v: Values) -> str:
    return "female" if _count(v.get("sex_female")) else "male or sex not recorded"


def _deprivation(v: Values) -> str:
    d = _number(v.get("imd_decile"))
    if d is None or not 1 <= d <= 10:
        return "area deprivation not recorded"
    return f"lives in an area in deprivation decile {int(d)} (1 = most deprived)"


def _ordered(
    present: list[str], column: Mapping[str, str], contrib: Mapping[str, float], raises: bool
) -> list[str]:
    """``present`` codes whose own contribution does not push against the reason, most
    first: under a reason that raises the risk, those that raise it or are neutral; under
    one that lowers it, only those that lower it. All of them, in their order, when no
    contributions are given."""
    if not contrib:
        return present
    sign = 1.0 if raises else -1.0
    size = {c: sign * contrib.get(column[c], 0.0) for c in present}
    agreeing = [c for c in present if (size[c] >= 0 if raises else size[c] > 0)]
    return sorted(agreeing, key=lambda c: -size[c])


def _conditions(v: Values, contrib: Mapping[str, float], raises: bool = True) -> str:
    column = {c: f"ltc_{c.lower()}" for c in CONDITIONS}
    present = [c for c in CONDITIONS if _count(v.get(column[c]))]
    if not present:
        return "no long-term conditions recorded"
    named = [CONDITION_NAMES[c] for c in _ordered(present, column, contrib, raises)]
    if len(present) <= 2 and len(named) == len(present):
        return _join(named)
    if not named:
        return _plural(len(present), "long-term condition")
    return f"{len(present)} long-term conditions, including {_join(named[:2])}"


def _medicines(v: Values, contrib: Mapping[str, float], raises: bool = True) -> str:
    n = _count(v.get("distinct_medicines_90d"))
    if not n:
        return "no medicines issued in the last 90 days"
    text = f"{_plural(n, 'medicine')} issued in the last 90 days"
    if not raises:  # a falls-risk medicine is never named as lowering the risk
        return text
    column = {c: f"{c.lower()}_90d" for c in NOTABLE_DRUGS}
    present = [c for c in NOTABLE_DRUGS if _count(v.get(column[c]))]
    classes = [c for c in present if c in _ordered(present, column, contrib, raises)]
    if classes:
        text += f", including {_join([DRUG_NAMES[c] for c in classes[:3]])}"
    return text


def efi_band(efi: float) -> str:
    """eFI bands (Clegg et al. 2016): fit <= 0.12, mild <= 0.24, moderate <= 0.36, severe
    above."""
    if efi <= 0.12:
        return "fit"
    if efi <= 0.24:
        return "mild frailty"
    if efi <= 0.36:
        return "moderate frailty"
    return "severe frailty"


def cfs_band(cfs: int) -> str:
    """Rockwood's Clinical Frailty Scale: 1-3 fit, 4 very mild, 5 mild, 6 moderate, 7 severe,
    8 very severe frailty, 9 terminally ill."""
    return CFS_BANDS[cfs]


def _frailty(v: Values) -> str:
    """Frailty in the band of the measure shown beside it: the Clinical Frailty Scale (a
    clinician's assessment) when one is recorded, else the electronic frailty index."""
    efi, cfs = _number(v.get("efi")), _number(v.get("cfs_latest"))
    efi_text = None
    if efi is not None:
        efi_text = f"eFI {efi:.2f}" if 0.0 <= efi <= 1.0 else "eFI recorded outside 0 to 1"
    if cfs is not None and cfs.is_integer() and int(cfs) in CFS_BANDS:
        return f"{cfs_band(int(cfs))} (CFS {int(cfs)}" + (f"; {efi_text})" if efi_text else ")")
    if efi is not None and 0.0 <= efi <= 1.0:
        text = f"{efi_band(efi)} ({efi_text})"
    elif efi_text:
        text = f"frailty index out of range ({efi_text})"
    else:
        text = "no frailty measure recorded"
    if cfs is not None:
        text += "; a Clinical Frailty Scale value not on the 1-9 scale"
    return text


def _falls(v: Values) -> str:
    n = _count(v.get("falls_365d"))
    if n:
        return f"{_plural(n, 'fall')} recorded in the last 12 months"
    return "no falls recorded in the last 12 months"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


def _season(v: Values) -> str:
    month = _count(v.get("index_month"))
    name = _MONTHS[month - 1] if 1 <= month <= 12 else "this month"
    winter = " (winter)" if month in (12, 1, 2) else ""
    return f"time of year: {name}{winter}"


def _living(v: Values) -> str:
    present = [STATE_NAMES[c] for c in STATE_CODES if c != "SMOKER" and _count(v.get(c.lower()))]
    return _join(present) if present else "no living-situation risks recorded"


def _other(v: Values) -> str:
    items = [
        PROBLEM_NAMES[c] for c in EVENT_CODES if c in PROBLEM_NAMES and _count(v.get(c.lower()))
    ]
    if _count(v.get("smoker")):
        items.insert(0, "smoker")
    bmi = _number(v.get("bmi_latest"))
    if bmi is not None and bmi > 0:
        items.append(f"BMI {bmi:.1f}")
    return _join(items) if items else "no other recorded problems"


_CARE = (
    ("falls_assessment_365d", "a falls assessment in the last 12 months"),
    ("medication_review_365d", "a medication review in the last 12 months"),
    ("advance_care_plan_ever", "an advance care plan"),
)


def _care(v: Values) -> str:
    given = [words for column, words in _CARE if _count(v.get(column))]
    if not given:
        return "no falls assessment, medication review or advance care plan recorded"
    return "care already recorded: " + _join(given)


class Phrase(Protocol):
    """Words a reason from a row's values (and, for some groups, its features'
    contributions), told whether the reason raises the risk."""

    def __call__(
        self, values: Values, contributions: Mapping[str, float], raises: bool = True, /
    ) -> str: ...


class WordsKey(Protocol):
    """What a group's words depend on, for many rows at once: rows with equal keys are worded
    alike, so each distinct key is worded once (``explain.reasons.choose_reasons``).

    Takes the rows' values and contributions of the group's ``features`` (in that order; a
    feature the model lacks is missing, with no contribution) and whether the reason raises
    the risk; returns one row of numbers per row."""

    def __call__(
        self,
        values: npt.NDArray[np.float64],
        contributions: npt.NDArray[np.float64],
        raises: npt.NDArray[np.bool_],
        /,
    ) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class ReasonGroup:
    key: str
    features: tuple[str, ...]
    #: Words the reason from the row's values of ``words_from`` only, whether the group
    #: raises the risk and, if ``uses_contributions``, the signs and order of the features'
    #: contributions.
    phrase: Phrase
    uses_contributions: bool = False
    #: The features the words read (default: all of ``features``); the rest only size the
    #: reason. Rows alike in these are worded once.
    reads: tuple[str, ...] | None = None
    #: For a group whose words depend on its contributions: what they depend on, coarser
    #: than every value and contribution (which nearly every person would differ in).
    words_key: WordsKey | None = None

    @property
    def words_from(self) -> tuple[str, ...]:
        return self.features if self.reads is None else self.reads


def _counts(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``_count`` for arrays: whole numbers, missing, unreadable or negative as 0."""
    finite = np.where(np.isfinite(values), values, 0.0)
    return np.where(finite >= 1, np.trunc(finite), 0.0)


def _agreeing(
    present: npt.NDArray[np.bool_], contrib: npt.NDArray[np.float64], raises: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """``_ordered``'s test for arrays: which present codes do not push against the reason,
    and each code's size signed the reason's way."""
    size = np.where(raises[:, None], 1.0, -1.0) * contrib
    return present & np.where(raises[:, None], size >= 0, size > 0), size


def _conditions_key(
    values: npt.NDArray[np.float64],
    contrib: npt.NDArray[np.float64],
    raises: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """``_conditions`` reads how many conditions are present, the first two it names (in
    their order) and whether it names them all: nothing else."""
    k = len(CONDITIONS)
    present = _counts(values[:, :k]) > 0
    agreeing, size = _agreeing(present, contrib[:, :k], raises)
    # sorted(..., key=-size) over codes in CONDITIONS order: a stable sort of -size.
    order = np.argsort(np.where(agreeing, -size, np.inf), axis=1, kind="stable")
    n_present, n_named = present.sum(axis=1), agreeing.sum(axis=1)
    first = np.where(n_named >= 1, order[:, 0], -1)
    second = np.where(n_named >= 2, order[:, 1] if k > 1 else -1, -1)
    return np.column_stack([n_present, first, second, n_named == n_present]).astype(np.float64)


def _medicines_key(
    values: npt.NDArray[np.float64],
    contrib: npt.NDArray[np.float64],
    raises: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """``_medicines`` reads the number of medicines, the direction and, raising, the first
    three notable classes present whose own contribution agrees: nothing else."""
    n = _counts(values[:, 0])
    columns = [2 + DRUG_CLASSES.index(c) for c in NOTABLE_DRUGS]
    present = _counts(values[:, columns]) > 0
    agreeing, _ = _agreeing(present, contrib[:, columns], raises)
    named = agreeing & (raises & (n > 0))[:, None]
    # The first three named classes in NOTABLE_DRUGS order (-1 where fewer).
    order = np.argsort(~named, axis=1, kind="stable")[:, :3]
    count = named.sum(axis=1)
    picks = np.where(np.arange(3)[None, :] < count[:, None], order, -1)
    return np.column_stack([n, raises & (n > 0), picks]).astype(np.float64)


class _Simple:
    """A phrase of the values alone (the same words whichever way the reason pushes)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(
        self, values: Values, contributions: Mapping[str, float], raises: bool = True, /
    ) -> str:
        return str(self.fn(values))


REASON_GROUPS: tuple[ReasonGroup, ...] = (
    ReasonGroup("recent_emergency_admissions",
                ("emergency_admissions_30d", "emergency_admissions_90d",
                 "emergency_admissions_365d", "emergency_admissions_730d",
                 "emergency_admissions_ever", "emergency_admissions_per_year",
                 "days_since_last_emergency_admission", "emergency_bed_days_365d"),
                _Simple(_emergency),
                reads=("emergency_admissions_365d", "days_since_last_emergency_admission")),
    ReasonGroup("ae_attendances",
                ("ae_attendances_30d", "ae_attendances_90d", "ae_attendances_180d",
                 "ae_attendances_365d", "ae_attendances_730d", "ae_attendances_ever",
                 "ae_attendances_per_year", "days_since_last_ae_attendance"),
                _Simple(_ae), reads=("ae_attendances_365d", "ae_attendances_ever")),
    ReasonGroup("planned_care",
                tuple(f"{s}_{w}d" for s in ("elective_admissions", "outpatient_attendances",
                                             "outpatient_missed", "gp_contacts", "gp_missed",
                                             "community_contacts") for w in (90, 365))
                + ("gp_contacts_30d",),
                _Simple(_planned),
                reads=("gp_contacts_365d", "outpatient_attendances_365d", "gp_missed_365d",
                       "outpatient_missed_365d")),
    ReasonGroup("age", ("age_years",), _Simple(_age)),
    ReasonGroup("length_of_record", ("recorded_history_days",), _Simple(_record)),
    ReasonGroup("sex", ("sex_female",), _Simple(_sex)),
    ReasonGroup("deprivation", ("imd_decile",), _Simple(_deprivation)),
    ReasonGroup("long_term_conditions",
                tuple(f"ltc_{c.lower()}" for c in CONDITIONS) + ("ltc_count",), _conditions,
                uses_contributions=True, words_key=_conditions_key),
    ReasonGroup("medicines",
                ("distinct_medicines_90d", "falls_risk_drug_classes_90d")
                + tuple(f"{c.lower()}_90d" for c in DRUG_CLASSES),
                _medicines, uses_contributions=True, words_key=_medicines_key),
    ReasonGroup("frailty", ("efi", "cfs_latest"), _Simple(_frailty)),
    ReasonGroup("falls", ("falls_180d", "falls_365d"), _Simple(_falls), reads=("falls_365d",)),
    ReasonGroup("time_of_year", ("index_month",), _Simple(_season)),
    ReasonGroup("living_situation",
                tuple(c.lower() for c in STATE_CODES if c != "SMOKER"), _Simple(_living)),
    ReasonGroup("other_recorded_problems",
                ("smoker", "bmi_latest") + tuple(c.lower() for c in EVENT_CODES if c != "FALL"),
                _Simple(_other),
                reads=("smoker", "bmi_latest")
                + tuple(c.lower() for c in EVENT_CODES if c in PROBLEM_NAMES)),
    ReasonGroup("care_already_given",
                ("falls_assessment_365d", "medication_review_365d", "advance_care_plan_ever"),
                _Simple(_care)),
)  # fmt: skip


#: Each reason group in a few words, for summaries such as "what changed".
REASON_LABELS = {
    "recent_emergency_admissions": "recent emergency admissions",
    "ae_attendances": "A&E attendances",
    "planned_care": "planned care (GP, outpatient, community)",
    "age": "age",
    "length_of_record": "length of the record",
    "sex": "sex",
    "deprivation": "area deprivation",
    "long_term_conditions": "long-term conditions",
    "medicines": "medicines",
    "frailty": "frailty",
    "falls": "falls",
    "time_of_year": "time of year",
    "living_situation": "living situation",
    "other_recorded_problems": "other recorded problems",
    "care_already_given": "care already given",
}
