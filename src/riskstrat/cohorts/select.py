"""Intervention cohorts: eligibility by published criteria, expected benefit and capacity.

The criteria live in configuration (``models/<name>/cohorts.yaml``), typed on load. A
condition is a string ``"<column> <op> <number>"``; ``all:`` and ``any:`` nest. Everything
here is a pure function of the scoring frame: one row per person with the model's features,
the cohort facts (``features.COHORT_COLUMNS``) and ``risk``.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from riskstrat.cohorts.words import bed_days_in_words, benefit_in_words, no_effect_in_words
from riskstrat.data.contract import INTERVENTION_CODES
from riskstrat.errors import ConfigError, MissingFileError, UsageError
from riskstrat.resources import model_dir

#: Where the default model's cohort configuration lives, relative to the project root.
COHORTS_FILE = "cohorts.yaml"


def default_cohorts_file() -> Path:
    """The shipped ``models/emergency_admission_90d/cohorts.yaml`` (a package resource)."""
    return model_dir() / COHORTS_FILE


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_LOOKBACK_COLUMN = {
    "FALLS_ASSESSMENT": "days_since_falls_assessment",
    "MEDICATION_REVIEW": "days_since_medication_review",
    "ADVANCE_CARE_PLAN": "days_since_advance_care_plan",
}

Condition = str | dict[str, list[Any]]


def _parse_condition(value: Any, where: str) -> Condition:
    if isinstance(value, str):
        if not _CONDITION.match(value):
            raise ValueError(
                f"{where}: {value!r} is not a condition like 'age_years >= 65' "
                "(column, one of >= > <= < == !=, a number)"
            )
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((kind, items),) = value.items()
        if kind in ("all", "any") and isinstance(items, list) and items:
            return {
                kind: [_parse_condition(v, f"{where}.{kind}[{i}]") for i, v in enumerate(items)]
            }
    raise ValueError(f"{where}: expected a condition string or one of all:/any: with a list")


def condition_columns(condition: Condition) -> set[str]:
    """The columns a condition reads."""
    if isinstance(condition, str):
        match = _CONDITION.match(condition)
        assert match is not None
        return {match.group(1)}
    (items,) = condition.values()
    return set().union(*(condition_columns(c) for c in items))


def evaluate_condition(frame: pd.DataFrame, condition: Condition) -> npt.NDArray[np.bool_]:
    """Rows of ``frame`` that satisfy ``condition``; a missing value satisfies nothing."""
    if isinstance(condition, str):
        match = _CONDITION.match(condition)
        assert match is not None
        column, op, number = match.groups()
        if column not in frame.columns:
            raise KeyError(f"cohort condition {condition!r} needs column {column!r}")
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            result = _OPS[op](values, float(number))
        return np.asarray(result & ~np.isnan(values), dtype=bool)
    ((kind, items),) = condition.items()
    parts = [evaluate_condition(frame, c) for c in items]
    combined = np.logical_and.reduce(parts) if kind == "all" else np.logical_or.reduce(parts)
    return np.asarray(combined, dtype=bool)


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    text: str
    when: Any

    @field_validator("when")
    @classmethod
    def _valid_condition(cls, value: Any) -> Condition:
        return _parse_condition(value, "when")


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    any: list[Criterion] = Field(min_length=1)


class RankBy(BaseModel):
    """A list ranked by another registered model's champion (for advance care planning, the
    risk of death within 12 months) instead of the lists' admission model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="The registered model whose champion ranks.")
    label: str = Field(min_length=1, description='Its risk in words: "12-month mortality risk".')


class BedDaysBenefit(BaseModel):
    """Expected benefit in hospital bed days: ``per_event`` days saved for each person who has
    the ranking model's outcome (the expected benefit of a listed person is their ranking risk
    times ``per_event``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_event: float = Field(gt=0, le=365)
    source: str = Field(min_length=1)
    text: str = Field(min_length=1, description="What the figure means, for the list's about.")


class Intervention(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    title: str
    source: str
    effect: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Relative reduction in emergency admissions among people who receive it; "
        "null when no admissions effect is claimed (the list is then ranked by risk).",
    )
    served_by: Literal["FALLS_ASSESSMENT", "MEDICATION_REVIEW", "ADVANCE_CARE_PLAN"]
    lookback_days: int | None = Field(default=None, ge=1)
    note: str | None = None
    rank_by: RankBy | None = None
    bed_days: BedDaysBenefit | None = None
    require: list[Requirement] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_benefit(self) -> Intervention:
        if self.bed_days is not None and self.rank_by is None:
            raise ValueError("bed_days needs rank_by: the days are per outcome of that model")
        if self.bed_days is not None and self.effect is not None:
            raise ValueError("give effect (admissions avoided) or bed_days, not both")
        return self

    @property
    def served_column(self) -> str:
        return _LOOKBACK_COLUMN[self.served_by]

    @property
    def criteria(self) -> list[Criterion]:
        return [c for r in self.require for c in r.any]

    @property
    def ranked_by(self) -> str:
        if self.rank_by is not None:
            return self.rank_by.label + (
                " (expected bed days saved)" if self.bed_days is not None else ""
            )
        return "expected admissions avoided" if self.effect is not None else "admission risk"


class CohortConfig(BaseModel):
    """The cohort configuration file, typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    #: The registered model whose champion scores everyone: the risk every list shows and
    #: criteria read as ``risk`` (``Settings.model_name`` when not given).
    model: str | None = None
    interventions: dict[str, Intervention]
    digest: str = ""

    @model_validator(mode="after")
    def _keys(self) -> CohortConfig:
        for key, intervention in self.interventions.items():
            if not re.match(r"^[a-z][a-z0-9_]*$", key):
                raise ValueError(f"intervention key {key!r} must be lower_snake_case")
            object.__setattr__(intervention, "key", key)
            keys = [c.key for c in intervention.criteria]
            if len(keys) != len(set(keys)):
                raise ValueError(f"{key}: criterion keys must be unique")
        return self

    def columns(self) -> set[str]:
        """Every column the criteria read, plus the look-back columns."""
        cols: set[str] = set()
        for intervention in self.interventions.values():
            cols.add(intervention.served_column)
            for criterion in intervention.criteria:
                cols |= condition_columns(criterion.when)
        return cols

    def ranking_models(self) -> list[str]:
        """The other models whose champions rank a list, in the file's order."""
        return list(
            dict.fromkeys(i.rank_by.model for i in self.interventions.values() if i.rank_by)
        )

    def get(self, key: str) -> Intervention:
        try:
            return self.interventions[key]
        except KeyError:
            known = ", ".join(self.interventions)
            raise KeyError(f"unknown intervention {key!r}; known: {known}") from None


def load_cohort_config(path: Path | None = None) -> CohortConfig:
    """Read and type-check a cohort configuration file.

    Raises:
        MissingFileError: there is no file at ``path`` (also a ``FileNotFoundError``).
        ConfigError: naming the file and what is wrong with it (also a ``ValueError``).
    """
    path = path or default_cohorts_file()
    if not path.is_file():
        raise MissingFileError(f"no cohort configuration at {path}")
    raw = path.read_bytes()
    hint = f"fix the YAML named above; {default_cohorts_file()} shows every field"
    try:
        data = yaml.safe_load(raw)
        config = CohortConfig.model_validate({**(data or {}), "digest": ""})
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid cohort configuration: {exc}", hint=hint) from None
    unknown_codes = {i.served_by for i in config.interventions.values()} - set(INTERVENTION_CODES)
    if unknown_codes:  # pragma: no cover - guarded by the Literal above
        raise ConfigError(f"{path}: unknown intervention codes {sorted(unknown_codes)}", hint=hint)
    return config.model_copy(update={"digest": hashlib.sha256(raw).hexdigest()[:16]})


def check_columns(config: CohortConfig, available: Sequence[str]) -> None:
    """Fail early, naming the columns the criteria need that the frame does not have."""
    missing = sorted(config.columns() - set(available))
    if missing:
        raise ConfigError(
            f"the cohort criteria need columns the scores lack: {', '.join(missing)}",
            hint="a criterion may read the scores' columns only: the model's features, the "
            "cohort facts (features.build.COHORT_COLUMNS) and risk",
        )


def build_cohort(
    frame: pd.DataFrame,
    intervention: Intervention,
    ranking: Mapping[str, npt.NDArray[np.float64]] | None = None,
) -> pd.DataFrame:
    """One intervention's cohort from a scored frame.

    Args:
        frame: one row per person with ``nhs_number``, ``practice_code``, ``pcn_code``,
            ``risk`` and every column the criteria read.
        intervention: the intervention's typed configuration.
        ranking: other models' risks for the rows of ``frame``, by registered model name
            (for interventions with ``rank_by``).

    Returns:
        The eligible people not served within the look-back, ranked (``rank`` 1 first) by
        expected admissions avoided (``risk x effect``), by risk with no effect, or, with
        ``rank_by`` and that model's risks given, by its risk (``ranking_risk``; with
        ``bed_days``, ``expected_bed_days`` is it times the days per outcome); ties by NHS
        number. ``criteria`` lists the keys of the criteria that held. With ``rank_by`` but
        no risks of that model, the list falls back to admission risk (``ranking_risk`` NaN).
    """
    ok = np.ones(len(frame), dtype=bool)
    held: dict[str, npt.NDArray[np.bool_]] = {}
    for requirement in intervention.require:
        group = np.zeros(len(frame), dtype=bool)
        for criterion in requirement.any:
            hit = evaluate_condition(frame, criterion.when)
            held[criterion.key] = hit
            group |= hit
        ok &= group
    days = pd.to_numeric(frame[intervention.served_column], errors="coerce").to_numpy()
    served = ~np.isnan(days)
    if intervention.lookback_days is not None:
        served &= days <= intervention.lookback_days
    keep = ok & ~served
    members: pd.DataFrame = frame.loc[
        keep, ["nhs_number", "practice_code", "pcn_code", "risk"]
    ].copy()
    keys = list(held)
    hits = np.column_stack([held[k][keep] for k in keys]) if keys else np.zeros((0, 0), bool)
    members["criteria"] = [[k for k, h in zip(keys, row, strict=True) if h] for row in hits]
    effect = intervention.effect
    members["expected_benefit"] = members["risk"] * effect if effect is not None else np.nan
    other = (
        None
        if intervention.rank_by is None or ranking is None
        else ranking.get(intervention.rank_by.model)
    )
    members["ranking_risk"] = np.nan if other is None else np.asarray(other)[keep]
    bed = intervention.bed_days
    members["expected_bed_days"] = (
        members["ranking_risk"] * bed.per_event if bed is not None else np.nan
    )
    by = "risk" if other is None else "ranking_risk"
    members = members.sort_values(
        [by, "nhs_number"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    members["rank"] = np.arange(1, len(members) + 1)
    members.insert(0, "intervention", intervention.key)
    return members


def build_cohorts(
    frame: pd.DataFrame,
    config: CohortConfig,
    ranking: Mapping[str, npt.NDArray[np.float64]] | None = None,
) -> pd.DataFrame:
    """Every intervention's cohort, stacked (see ``build_cohort``)."""
    check_columns(config, list(frame.columns))
    parts = [build_cohort(frame, i, ranking) for i in config.interventions.values()]
    return pd.concat(parts, ignore_index=True)


def served_counts(frame: pd.DataFrame, config: CohortConfig) -> dict[str, int]:
    """How many people each intervention's look-back leaves out as already served."""
    out = {}
    for key, intervention in config.interventions.items():
        days = pd.to_numeric(frame[intervention.served_column], errors="coerce").to_numpy()
        served = ~np.isnan(days)
        if intervention.lookback_days is not None:
            served &= days <= intervention.lookback_days
        out[key] = int(served.sum())
    return out


@dataclass(frozen=True)
class Tranche:
    """A slice of a ranked list and what it is expected to yield."""

    first_rank: int
    people: int
    expected_admissions: float
    expected_admissions_avoided: float | None
    #: For a list ranked by another model with its benefit in bed days: the people's ranking
    #: risks summed x the days per outcome; None otherwise.
    expected_bed_days_saved: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "first_rank": self.first_rank,
            "people": self.people,
            "expected_admissions_90d": round(self.expected_admissions, 3),
            "expected_admissions_avoided": (
                None
                if self.expected_admissions_avoided is None
                else round(self.expected_admissions_avoided, 3)
            ),
        }
        if self.expected_bed_days_saved is not None:  # only lists that claim bed days
            out["expected_bed_days_saved"] = round(self.expected_bed_days_saved, 2)
        return out


def tranche(
    risks: Sequence[float],
    *,
    start: int,
    size: int,
    effect: float | None,
    ranking_risks: Sequence[float | None] | None = None,
    bed_days_per_event: float | None = None,
) -> Tranche:
    """People ``start..start+size-1`` (0-based) of a ranked list of risks; with the list's
    ``ranking_risks`` (another model's, in the same order) and ``bed_days_per_event``, the
    bed days they are expected to save (none when any of them has no ranking risk)."""
    part = np.asarray(risks[start : start + size], dtype=np.float64)
    expected = float(part.sum())
    days = None
    if ranking_risks is not None and bed_days_per_event is not None:
        ranked = list(ranking_risks[start : start + size])
        if len(ranked) == len(part) and all(r is not None for r in ranked):
            days = float(np.clip(np.asarray(ranked, dtype=np.float64), 0.0, 1.0).sum())
            days *= bed_days_per_event
    return Tranche(
        first_rank=start + 1,
        people=len(part),
        expected_admissions=expected,
        expected_admissions_avoided=None if effect is None else expected * effect,
        expected_bed_days_saved=days,
    )


def tranche_in_words(
    part: Tranche,
    *,
    effect: float | None,
    intervention_label: str,
    served_by: str | None = None,
    bed_days_per_event: float | None = None,
    ranking_label: str = "ranking risk",
) -> str:
    """A tranche's expected benefit in words: admissions avoided (``words.benefit_in_words``),
    bed days saved for a list ranked by another model that claims them
    (``words.bed_days_in_words``), or, with neither, why not and what its people are expected
    to need instead."""
    if part.expected_bed_days_saved is not None and bed_days_per_event is not None:
        return bed_days_in_words(
            part.expected_bed_days_saved,
            part.people,
            intervention_label=intervention_label,
            per_event=bed_days_per_event,
            ranking_label=ranking_label,
            served_by=served_by,
        )
    if effect is None or part.expected_admissions_avoided is None:
        return no_effect_in_words(
            part.expected_admissions,
            part.people,
            intervention_label=intervention_label,
            served_by=served_by,
        )
    return benefit_in_words(
        part.expected_admissions_avoided,
        part.people,
        intervention_label=intervention_label,
        effect=effect,
    )


def capacity_summary(
    risks: Sequence[float],
    *,
    capacity: int,
    effect: float | None,
    intervention_label: str = "the intervention",
    served_by: str | None = None,
    ranking_risks: Sequence[float | None] | None = None,
    bed_days_per_event: float | None = None,
    ranking_label: str = "ranking risk",
) -> dict[str, Any]:
    """What reviewing the top ``capacity`` people of a ranked list is expected to yield, and
    what the next ``capacity`` would add (the value of more capacity).

    Expected admissions are sums of 90-day risks; admissions avoided multiply them by the
    intervention's effect (none when no effect is claimed). For a list ranked by another
    model whose benefit is in bed days, ``ranking_risks`` (that model's risks, in the same
    rank order) summed x ``bed_days_per_event`` are the bed days each tranche is expected to
    save (``expected_bed_days_saved``), and its words say so, naming the ranking risk
    (``ranking_label``). ``listed_in_words`` and ``next_in_words`` say each in words, with
    the assumption they rest on; ``intervention_label`` names the intervention mid-sentence
    and ``served_by`` (its intervention code) says what an intervention that claims no
    admissions effect is about instead.
    """
    if capacity < 1:
        raise UsageError("capacity must be at least 1", hint="ask for a capacity of 1 or more")
    listed, after = (
        tranche(
            risks,
            start=start,
            size=capacity,
            effect=effect,
            ranking_risks=ranking_risks,
            bed_days_per_event=bed_days_per_event,
        )
        for start in (0, capacity)
    )
    listed_words, next_words = (
        tranche_in_words(
            part,
            effect=effect,
            intervention_label=intervention_label,
            served_by=served_by,
            bed_days_per_event=bed_days_per_event,
            ranking_label=ranking_label,
        )
        for part in (listed, after)
    )
    return {
        "eligible": len(risks),
        "capacity": capacity,
        "listed": listed.as_dict(),
        "next": after.as_dict(),
        "listed_in_words": listed_words,
        "next_in_words": next_words,
    }


def what_changed(
    *,
    risk_now: float,
    contributions_now: Mapping[str, float],
    risk_then: float,
    contributions_then: Mapping[str, float],
    top: int = 3,
    min_change_percentage_points: float = 0.05,
) -> dict[str, Any]:
    """The change in risk since an earlier run and the reason groups that moved most.

    Contributions are each reason group's size in percentage points of risk (as published
    with each run).
    """
    groups = set(contributions_now) | set(contributions_then)
    moved: list[dict[str, Any]] = []
    for g in groups:
        now, then = float(contributions_now.get(g, 0.0)), float(contributions_then.get(g, 0.0))
        # Published sizes have 3 decimals: compare at that precision, not in binary floats.
        if round(abs(now - then), 3) >= min_change_percentage_points:
            moved.append(
                {
                    "group": g,
                    "percentage_points_then": round(then, 3),
                    "percentage_points_now": round(now, 3),
                    "change_percentage_points": round(now - then, 3),
                }
            )
    moved.sort(key=lambda m: (-abs(m["change_percentage_points"]), m["group"]))
    change = round(100.0 * (risk_now - risk_then), 3)
    return {
        "risk_then": risk_then,
        "risk_now": risk_now,
        "change_percentage_points": round(change, 3),
        "direction": "up" if change > 0.05 else ("down" if change < -0.05 else "unchanged"),
        "reasons_moved": moved[:top],
    }


def poisson_ci(observed: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval for a Poisson count."""
    from scipy.stats import chi2

    alpha = 1.0 - level
    low = 0.0 if observed == 0 else float(chi2.ppf(alpha / 2, 2 * observed) / 2)
    high = float(chi2.ppf(1 - alpha / 2, 2 * (observed + 1)) / 2)
    return low, high


def oe_ratio(observed: int, expected: float) -> dict[str, float | None]:
    """Observed/expected with an exact Poisson CI on the observed count."""
    if expected <= 0 or math.isnan(expected):
        return {"oe": None, "oe_low": None, "oe_high": None}
    low, high = poisson_ci(observed)
    return {"oe": observed / expected, "oe_low": low / expected, "oe_high": high / expected}
