"""SHAP contributions turned into reasons a clinician can read.

Contributions are exact TreeSHAP values in log-odds: the same numbers as LightGBM's own
``pred_contrib`` (to rounding, about 1e-14), computed by ``riskstrat.explain.treeshap`` at tens of
times its speed.
Related features are summed into one reason (all emergency-admission counts and recency
make "recent emergency admissions"), so a reason's size is the whole group's share of the
prediction. Each reason is phrased from the patient's own values and sized in percentage
points: how much lower the risk would be without that group's contribution.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.data.contract import CONDITIONS, DRUG_CLASSES, EVENT_CODES, STATE_CODES
from riskstrat.explain.treeshap import TreeShapExplainer
from riskstrat.modelling.model import Calibrator

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
# Drug classes named first when a patient's medicines are described (falls-risk drugs).
_NOTABLE_DRUGS = ("OPIOID", "BENZODIAZEPINE", "Z_DRUG", "ANTIPSYCHOTIC", "ANTICHOLINERGIC",
                  "ANTIDEPRESSANT", "ANTIEPILEPTIC", "DOPAMINERGIC", "INSULIN", "ANTICOAGULANT",
                  "ORAL_CORTICOSTEROID", "DIGOXIN")  # fmt: skip


def _n(value: Any) -> int:
    try:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return 0
        return int(value)
    except (TypeError, ValueError):
        return 0


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _emergency(v: Values) -> str:
    n = _n(v.get("emergency_admissions_365d"))
    days = v.get("days_since_last_emergency_admission")
    if n:
        text = f"{_plural(n, 'emergency admission')} in the last 12 months"
        if days is not None and not pd.isna(days):
            text += f", the latest {_plural(int(days), 'day')} ago"
        return text
    if days is not None and not pd.isna(days):
        return (
            f"no emergency admission in the last 12 months (last one {int(days) // 30} months ago)"
        )
    return "no emergency admissions on record"


def _ae(v: Values) -> str:
    n, ever = _n(v.get("ae_attendances_365d")), _n(v.get("ae_attendances_ever"))
    text = (
        f"{_plural(n, 'A&E attendance')} in the last 12 months"
        if n
        else "no A&E attendances in the last 12 months"
    )
    if ever > n:
        text += f" ({ever} in the whole record)"
    return text


def _planned(v: Values) -> str:
    gp, op = _n(v.get("gp_contacts_365d")), _n(v.get("outpatient_attendances_365d"))
    missed = _n(v.get("gp_missed_365d")) + _n(v.get("outpatient_missed_365d"))
    text = (
        f"{_plural(gp, 'GP contact')} and {_plural(op, 'outpatient attendance')} "
        "in the last 12 months"
    )
    if missed:
        text += f", {_plural(missed, 'missed appointment')}"
    return text


def _age(v: Values) -> str:
    return f"aged {_n(v.get('age_years'))}"


def _record(v: Values) -> str:
    days = _n(v.get("recorded_history_days"))
    if days < 365:
        return f"a short record here ({_plural(max(days // 30, 0), 'month')}), so little history"
    return f"{_plural(days // 365, 'year')} of record here"


def _sex(v: Values) -> str:
    return "female" if _n(v.get("sex_female")) else "male or sex not recorded"


def _deprivation(v: Values) -> str:
    d = v.get("imd_decile")
    if d is None or pd.isna(d):
        return "area deprivation not recorded"
    return f"lives in an area in deprivation decile {int(d)} (1 = most deprived)"


def _conditions(v: Values, contrib: Mapping[str, float]) -> str:
    present = [c for c in CONDITIONS if _n(v.get(f"ltc_{c.lower()}"))]
    if not present:
        return "no long-term conditions recorded"
    present.sort(key=lambda c: -abs(contrib.get(f"ltc_{c.lower()}", 0.0)))
    names = [CONDITION_NAMES[c] for c in present]
    if len(names) <= 2:
        return _join(names)
    return f"{len(names)} long-term conditions, including {_join(names[:2])}"


def _medicines(v: Values) -> str:
    n = _n(v.get("distinct_medicines_90d"))
    if not n:
        return "no medicines issued in the last 90 days"
    classes = [c for c in _NOTABLE_DRUGS if _n(v.get(f"{c.lower()}_90d"))]
    text = f"{_plural(n, 'medicine')} issued in the last 90 days"
    if classes:
        text += f", including {_join([DRUG_NAMES[c] for c in classes[:3]])}"
    return text


def efi_band(efi: float) -> str:
    """eFI bands: fit <= 0.12, mild <= 0.24, moderate <= 0.36, severe above."""
    if efi <= 0.12:
        return "fit"
    if efi <= 0.24:
        return "mild frailty"
    if efi <= 0.36:
        return "moderate frailty"
    return "severe frailty"


def _frailty(v: Values) -> str:
    efi = v.get("efi")
    efi = 0.0 if efi is None or pd.isna(efi) else float(efi)
    text = f"{efi_band(efi)} (eFI {efi:.2f})"
    cfs = v.get("cfs_latest")
    if cfs is not None and not pd.isna(cfs):
        text += f", Clinical Frailty Scale {int(cfs)}"
    return text


def _falls(v: Values) -> str:
    n = _n(v.get("falls_365d"))
    return (
        f"{_plural(n, 'fall')} recorded in the last 12 months"
        if n
        else ("no falls recorded in the last 12 months")
    )


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


def _season(v: Values) -> str:
    month = _n(v.get("index_month"))
    name = _MONTHS[month - 1] if 1 <= month <= 12 else "this month"
    winter = " (winter)" if month in (12, 1, 2) else ""
    return f"time of year: {name}{winter}"


def _living(v: Values) -> str:
    present = [STATE_NAMES[c] for c in STATE_CODES if c != "SMOKER" and _n(v.get(c.lower()))]
    return _join(present) if present else "no living-situation risks recorded"


def _other(v: Values) -> str:
    items = [PROBLEM_NAMES[c] for c in EVENT_CODES if c in PROBLEM_NAMES and _n(v.get(c.lower()))]
    if _n(v.get("smoker")):
        items.insert(0, "smoker")
    bmi = v.get("bmi_latest")
    if bmi is not None and not pd.isna(bmi):
        items.append(f"BMI {float(bmi):.1f}")
    return _join(items) if items else "no other recorded problems"


@dataclass(frozen=True)
class ReasonGroup:
    key: str
    features: tuple[str, ...]
    #: Words the reason from the row's values of ``features`` only (and, if
    #: ``uses_contributions``, those features' contributions).
    phrase: Callable[[Values, Mapping[str, float]], str]
    uses_contributions: bool = False


def _simple(fn: Callable[[Values], str]) -> Callable[[Values, Mapping[str, float]], str]:
    return lambda v, _c: fn(v)


REASON_GROUPS: tuple[ReasonGroup, ...] = (
    ReasonGroup("recent_emergency_admissions",
                ("emergency_admissions_30d", "emergency_admissions_90d",
                 "emergency_admissions_365d", "emergency_admissions_730d",
                 "emergency_admissions_ever", "emergency_admissions_per_year",
                 "days_since_last_emergency_admission", "emergency_bed_days_365d"),
                _simple(_emergency)),
    ReasonGroup("ae_attendances",
                ("ae_attendances_30d", "ae_attendances_90d", "ae_attendances_180d",
                 "ae_attendances_365d", "ae_attendances_730d", "ae_attendances_ever",
                 "ae_attendances_per_year", "days_since_last_ae_attendance"),
                _simple(_ae)),
    ReasonGroup("planned_care",
                tuple(f"{s}_{w}d" for s in ("elective_admissions", "outpatient_attendances",
                                             "outpatient_missed", "gp_contacts", "gp_missed",
                                             "community_contacts") for w in (90, 365))
                + ("gp_contacts_30d",),
                _simple(_planned)),
    ReasonGroup("age", ("age_years",), _simple(_age)),
    ReasonGroup("length_of_record", ("recorded_history_days",), _simple(_record)),
    ReasonGroup("sex", ("sex_female",), _simple(_sex)),
    ReasonGroup("deprivation", ("imd_decile",), _simple(_deprivation)),
    ReasonGroup("long_term_conditions",
                tuple(f"ltc_{c.lower()}" for c in CONDITIONS) + ("ltc_count",), _conditions,
                uses_contributions=True),
    ReasonGroup("medicines",
                ("distinct_medicines_90d", "falls_risk_drug_classes_90d")
                + tuple(f"{c.lower()}_90d" for c in DRUG_CLASSES),
                _simple(_medicines)),
    ReasonGroup("frailty", ("efi", "cfs_latest"), _simple(_frailty)),
    ReasonGroup("falls", ("falls_180d", "falls_365d"), _simple(_falls)),
    ReasonGroup("time_of_year", ("index_month",), _simple(_season)),
    ReasonGroup("living_situation",
                tuple(c.lower() for c in STATE_CODES if c != "SMOKER"), _simple(_living)),
    ReasonGroup("other_recorded_problems",
                ("smoker", "bmi_latest") + tuple(c.lower() for c in EVENT_CODES if c != "FALL"),
                _simple(_other)),
    ReasonGroup("care_already_given",
                ("falls_assessment_365d", "medication_review_365d", "advance_care_plan_ever"),
                _simple(lambda v: "care already recorded (reviews or care plans)")),
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


_EXPLAINERS: weakref.WeakKeyDictionary[lgb.Booster, TreeShapExplainer] = weakref.WeakKeyDictionary()


def shap_contributions(booster: lgb.Booster, X: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Exact TreeSHAP values in log-odds: one column per model feature plus the base value.

    Each row sums to the model's log-odds for that row. Equal to LightGBM's
    ``pred_contrib`` (tested to 1e-6 against it and against shap's TreeExplainer); the
    per-model tables are built once per booster and kept while the booster lives.
    """
    explainer = _EXPLAINERS.get(booster)
    if explainer is None:
        explainer = TreeShapExplainer(booster, num_iteration=booster.best_iteration or None)
        _EXPLAINERS[booster] = explainer
    return explainer.shap_values(X)


def group_matrix(feature_names: Sequence[str]) -> tuple[list[ReasonGroup], npt.NDArray[np.float64]]:
    """The reason groups that cover ``feature_names`` and a 0/1 feature-by-group matrix."""
    groups = [g for g in REASON_GROUPS if set(g.features) & set(feature_names)]
    index = {name: i for i, name in enumerate(feature_names)}
    matrix = np.zeros((len(feature_names), len(groups)))
    for j, g in enumerate(groups):
        for f in g.features:
            if f in index:
                matrix[index[f], j] = 1.0
    unassigned = [f for f, i in index.items() if matrix[i].sum() == 0]
    if unassigned:
        raise ValueError(f"features without a reason group: {', '.join(unassigned)}")
    return groups, matrix


def explain_rows(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> list[list[dict[str, Any]]]:
    """The top reasons for each row of ``X``.

    Returns, per row, up to ``top_raising`` reasons that raise the risk (largest first) then
    up to ``top_lowering`` that lower it; contributions under ``min_percentage_points`` are
    too small to be a reason. Each reason is a dict with ``group``, ``text``,
    ``direction`` ("raises" or "lowers"), ``log_odds`` and ``percentage_points``. With a
    calibrator, risks and sizes are the calibrated model's.
    """
    reasons, _ = explain_with_contributions(
        booster,
        X,
        top_raising=top_raising,
        top_lowering=top_lowering,
        min_percentage_points=min_percentage_points,
        contributions=contributions,
        calibrator=calibrator,
    )
    return reasons


@dataclass(frozen=True)
class GroupedContributions:
    """SHAP contributions summed into reason groups, for a batch of rows."""

    groups: list[ReasonGroup]
    log_odds: npt.NDArray[np.float64]  # (rows, groups), the calibrated model's log-odds
    percentage_points: npt.NDArray[np.float64]  # (rows, groups)
    base_log_odds: npt.NDArray[np.float64]  # (rows,), the calibrated base value
    risk: npt.NDArray[np.float64]  # (rows,)


def group_contributions(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> GroupedContributions:
    """Exact TreeSHAP summed into reason groups.

    With Platt calibration (or none), ``base_log_odds + log_odds.sum(axis=1)`` is exactly the
    calibrated model's log-odds for each row. A group's size in percentage points is how much
    lower the calibrated risk would be without that group's contribution.
    """
    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X) if contributions is None else contributions
    calibrator = calibrator or Calibrator()
    groups, matrix = group_matrix(names)
    raw_grouped = contrib[:, :-1] @ matrix  # (rows, groups) in the trees' log-odds
    logit = contrib.sum(axis=1)
    risk = calibrator.transform(logit)
    pp = 100.0 * (risk[:, None] - calibrator.transform(logit[:, None] - raw_grouped))
    # Platt calibration is linear in log-odds, so contributions scale exactly to the
    # calibrated model's log-odds; other calibrators report the trees' own log-odds.
    if calibrator.method == "platt":
        grouped = raw_grouped * calibrator.a
        base = contrib[:, -1] * calibrator.a + calibrator.b
    else:
        grouped, base = raw_grouped, contrib[:, -1]
    return GroupedContributions(groups, grouped, pp, base, risk)


def _distinct_rows(
    key: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The first row of each distinct row of ``key`` (no NaNs), in order of first
    appearance, and each row's distinct-row number: ``np.unique(axis=0)`` by hashing
    instead of sorting (which took seconds for a million rows)."""
    codes = (
        pd.DataFrame(key).groupby(list(range(key.shape[1])), sort=False).ngroup().to_numpy()
    ).astype(np.intp)
    # Numbered by first appearance, so a row opens a new group when its number is new.
    seen = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.concatenate([[True], codes[1:] > seen[:-1]]))
    return first, codes


def explain_with_contributions(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, float]]]:
    """``explain_rows``'s reasons, and every group's size in percentage points per row
    (groups under 0.001 points left out), which is what "what changed" compares."""
    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X) if contributions is None else contributions
    gc = group_contributions(booster, X, contributions=contrib, calibrator=calibrator)
    groups, grouped, pp = gc.groups, gc.log_odds, gc.percentage_points
    keys = [g.key for g in groups]
    # Each group's phrase depends only on the row's values of that group's features (and,
    # for conditions, the order of their contributions), so it is worded once per distinct
    # combination among the rows that show that group: a million people share far fewer.
    n = len(X)
    index = {name: i for i, name in enumerate(names)}
    values = X[names].to_numpy(dtype=np.float64, na_value=np.nan)
    # Missing values as one bit pattern, so equal rows compare equal.
    keyed = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(-grouped, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    up = order[:, :top_raising]
    down = order[:, ::-1][:, :top_lowering]
    chosen = np.concatenate([up, down], axis=1)
    shown = np.concatenate(
        [pp[rows, up] >= min_percentage_points, pp[rows, down] <= -min_percentage_points], axis=1
    )
    texts = np.empty(chosen.shape, dtype=object)
    for j, group in enumerate(groups):
        hit = shown & (chosen == j)
        if not hit.any():
            continue
        r = np.flatnonzero(hit.any(axis=1))
        cols = np.array([index[f] for f in group.features if f in index], dtype=np.intp)
        present = [f for f in group.features if f in index]
        key = keyed[np.ix_(r, cols)]
        if group.uses_contributions:
            ranks = np.argsort(np.argsort(-np.abs(contrib[np.ix_(r, cols)]), axis=1, kind="stable"))
            key = np.concatenate([key, ranks.astype(np.float64)], axis=1)
        first, inverse = _distinct_rows(key)
        worded = []
        for i in r[first]:
            v = dict(zip(present, values[i, cols].tolist(), strict=True))
            v = {f: (None if x != x else x) for f, x in v.items()}  # NaN as missing
            fc = dict(zip(present, contrib[i, cols].tolist(), strict=True))
            worded.append(group.phrase(v, fc if group.uses_contributions else {}))
        per_row = np.asarray(worded, dtype=object)[inverse]
        slot = np.argmax(hit[r], axis=1)
        texts[r, slot] = per_row

    # Only the chosen groups' sizes become Python objects, rounded as arrays (as the sizes
    # below are): a million rows of every group's sizes as lists took seconds.
    chosen_lo, chosen_pp = grouped[rows, chosen], pp[rows, chosen]
    key_list = np.asarray(keys, dtype=object)[chosen].tolist()
    shown_list, text_list = shown.tolist(), texts.tolist()
    raises_list = (chosen_lo > 0).tolist()
    lo_list, pp_list = np.round(chosen_lo, 4).tolist(), np.round(chosen_pp, 3).tolist()
    out: list[list[dict[str, Any]]] = [
        [
            {
                "group": g,
                "text": t,
                "direction": "raises" if positive else "lowers",
                "log_odds": lo,
                "percentage_points": p,
            }
            for g, ok, t, positive, lo, p in zip(
                key_list[i],
                shown_list[i],
                text_list[i],
                raises_list[i],
                lo_list[i],
                pp_list[i],
                strict=True,
            )
            if ok
        ]
        for i in range(n)
    ]
    pp_rounded = np.round(pp, 3)
    size_mask, sizes_list = (np.abs(pp_rounded) >= 0.001).tolist(), pp_rounded.tolist()
    sizes = [
        {k: v for k, v, keep in zip(keys, sizes_list[i], size_mask[i], strict=True) if keep}
        for i in range(n)
    ]
    return out, sizes
