"""Response schemas of the API (these are what the OpenAPI docs show)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from riskstrat.data.contract import IdentifierKind


def _identifier_kind(what: str) -> Any:
    return Field(
        default="nhs_number",
        description=f"What {what} holds: an NHS number, or a pseudonym (e.g. an OMOP "
        "person_id) when the run was scored from a pseudonymous extract. A pseudonym is never "
        "an NHS number, whatever its digits.",
    )


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class Reason(BaseModel):
    group: str = Field(description="Which group of related features this reason sums.")
    text: str = Field(description="The reason in plain English, from the patient's own record.")
    direction: Literal["raises", "lowers"]
    log_odds: float = Field(description="Contribution to the model's log-odds (TreeSHAP).")
    percentage_points: float = Field(
        description="How much higher the risk is with this contribution than without it."
    )


class RunSummary(BaseModel):
    run_id: int
    month: date = Field(description="Index date: first day of the month the run scores.")
    extract_date: date | None
    model_name: str
    model_version: str
    n_scored: int
    published_at: datetime | None
    identifier_kind: IdentifierKind = _identifier_kind("the run's `nhs_number` fields")


class PatientRiskPublic(BaseModel):
    nhs_number: str = Field(description="The person's identifier (see `identifier_kind`).")
    identifier_kind: IdentifierKind = _identifier_kind("`nhs_number`")
    practice_code: str
    pcn_code: str
    risk: float = Field(ge=0, le=1, description="Probability of an emergency admission in 90 days.")
    percentile: float = Field(
        description="Share of the scored population at or below this risk (%)."
    )
    rank: int = Field(description="Position in the whole run, 1 = highest risk.")
    reasons: list[Reason]


class PatientRiskResponse(PatientRiskPublic):
    horizon_days: int = 90
    run: RunSummary
    eligible_interventions: list[EligibleIntervention]
    what_changed: WhatChanged | None = Field(
        description="Against the previous month's published run; null if the person was not "
        "in it, there is none, or it identifies people differently (NHS numbers against "
        "pseudonyms)."
    )


class RiskListPage(BaseModel):
    run: RunSummary
    pcn_code: str | None
    practice_code: str | None
    total: int = Field(description="People in the list across all pages.")
    page: int
    page_size: int
    items: list[PatientRiskPublic]


class Criterion(BaseModel):
    key: str
    text: str = Field(description="The published criterion, in words.")


class RankingModel(BaseModel):
    """The model whose risk ranks a list, where it is not the admission model."""

    model: str = Field(description="Registered model name, e.g. riskstrat-death-12m.")
    version: str | None = Field(description="The champion version that ranked this run.")
    label: str = Field(description='Its risk in words: "12-month mortality risk".')
    fell_back: bool = Field(
        description="The model had no champion: the list is ranked by admission risk instead."
    )


class BedDays(BaseModel):
    per_event: float = Field(description="Bed days saved per person with the outcome.")
    source: str = Field(description="The published source of the figure.")
    text: str


class InterventionInfo(BaseModel):
    key: str
    title: str
    source: str = Field(description="Where the eligibility criteria come from.")
    effect: float | None = Field(
        description="Assumed relative reduction in emergency admissions; null if none claimed."
    )
    ranked_by: str
    ranking: RankingModel | None = Field(
        default=None, description="The other model that ranks this list, if any."
    )
    bed_days: BedDays | None = Field(
        default=None, description="Expected benefit in bed days, where that is the claim."
    )
    lookback_days: int | None = Field(
        description="People with the intervention recorded this recently are left out; null "
        "means ever."
    )
    note: str | None
    eligible: int = Field(description="People in the cohort in this run (all PCNs).")
    served_within_lookback: int = Field(description="People left out as already served.")


class CohortIndex(BaseModel):
    run: RunSummary
    cohort_config_version: str
    interventions: list[InterventionInfo]


class Tranche(BaseModel):
    first_rank: int
    people: int
    expected_admissions_90d: float = Field(description="Sum of the people's 90-day risks.")
    expected_admissions_avoided: float | None = Field(
        description="Expected admissions x the intervention's effect, if all are reached."
    )
    expected_bed_days_saved: float | None = Field(
        default=None,
        description="For a list ranked by another model with its benefit in bed days (the "
        "intervention's `bed_days`): the people's ranking risks summed x the bed days saved "
        "per outcome, if all are reached; null for other lists.",
    )


class CapacitySummary(BaseModel):
    eligible: int = Field(description="People in the cohort for this PCN or practice.")
    capacity: int
    listed: Tranche = Field(description="The top `capacity` people.")
    next: Tranche = Field(description="The next `capacity`: what more capacity would add.")
    listed_in_words: str = Field(
        default="",
        description="What reviewing the top `capacity` people is expected to yield, in words, "
        "with the assumption it rests on (or, with no admissions effect claimed, why not).",
    )
    next_in_words: str = Field(default="", description="The same for the next `capacity`.")
    bed_days_source: str | None = Field(
        default=None,
        description="Where the bed days saved per outcome come from, when the tranches give "
        "`expected_bed_days_saved`.",
    )


class RankedBy(BaseModel):
    model: str
    version: str
    label: str = Field(description='The risk in words: "12-month mortality risk".')
    risk: float = Field(ge=0, le=1)
    expected_bed_days: float | None = Field(
        description="The risk x the bed days saved per outcome (the cohort's `bed_days`)."
    )
    reasons: list[Reason]


class CohortMemberPublic(BaseModel):
    cohort_rank: int = Field(description="Position in the cohort across all PCNs, 1 first.")
    nhs_number: str = Field(description="The person's identifier (see `identifier_kind`).")
    identifier_kind: IdentifierKind = _identifier_kind("`nhs_number`")
    practice_code: str
    pcn_code: str
    practice_rank: int | None = Field(
        default=None,
        description="Position in the cohort within the person's practice, 1 first. Null only "
        "for runs published before it was stored, when the page is not one practice's.",
    )
    risk: float = Field(ge=0, le=1)
    percentile: float
    expected_admissions_avoided: float | None
    eligible_because: list[Criterion]
    reasons: list[Reason]
    ranking: RankedBy | None = Field(
        default=None,
        description="For a list ranked by another model: its risk of this person and its "
        "reasons (the admission `risk` and `reasons` above are shown as well).",
    )


class CohortPage(BaseModel):
    run: RunSummary
    intervention: InterventionInfo
    pcn_code: str | None
    practice_code: str | None
    capacity_summary: CapacitySummary | None
    total: int = Field(description="People in the list (up to `capacity`) across all pages.")
    page: int
    page_size: int
    items: list[CohortMemberPublic]


MarkStatus = Literal["contacted", "reviewed", "declined", "not_appropriate"]


class MarkIn(BaseModel):
    """What a team did about a listed person, for one intervention."""

    intervention: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,49}$", description="e.g. falls_review (one of the run's)"
    )
    status: MarkStatus = Field(
        description="contacted (still under way), or done: reviewed, declined, not_appropriate."
    )
    note: str | None = Field(
        default=None,
        max_length=500,
        description="Optional, at most 500 characters. Kept with the mark; never logged. Not "
        "the place for clinical detail: that belongs in the patient's record.",
    )


class MarkPublic(BaseModel):
    person: str = Field(description="The person's identifier (see `identifier_kind`).")
    identifier_kind: IdentifierKind = _identifier_kind("`person`")
    intervention: str
    status: MarkStatus
    by: str = Field(description="Who made the mark (the caller's name).")
    at: datetime = Field(description="When the mark was made (UTC).")
    note: str | None


class MarkHistory(BaseModel):
    person: str = Field(description="The person's identifier (see `identifier_kind`).")
    identifier_kind: IdentifierKind = _identifier_kind("`person`")
    marks: list[MarkPublic] = Field(description="Every mark, for every intervention, newest first.")


class CohortMemberWithStatus(CohortMemberPublic):
    status: MarkStatus | None = Field(
        default=None,
        description="The latest mark for this intervention (kept across months); null if none.",
    )
    status_by: str | None = Field(default=None, description="Who made the latest mark.")
    status_at: datetime | None = Field(default=None, description="When (UTC).")


class CohortPageWithStatus(CohortPage):
    # Narrows the items to ones with a status (pydantic takes the subclass's field).
    items: list[CohortMemberWithStatus]  # type: ignore[assignment]


class EligibleIntervention(BaseModel):
    intervention: str
    title: str
    cohort_rank: int
    expected_admissions_avoided: float | None
    ranking: RankedBy | None = Field(
        default=None, description="For a list ranked by another model: its risk and reasons."
    )
    eligible_because: list[Criterion]


class ReasonChange(BaseModel):
    group: str
    label: str = Field(description="The reason group in a few words.")
    text_now: str | None = Field(
        description="This month's reason in words, when it is among the person's top reasons."
    )
    percentage_points_then: float
    percentage_points_now: float
    change_percentage_points: float


class WhatChanged(BaseModel):
    previous_month: date
    previous_model_version: str
    risk_then: float
    risk_now: float
    change_percentage_points: float
    direction: Literal["up", "down", "unchanged"]
    reasons_moved: list[ReasonChange]


class ModelInfo(BaseModel):
    name: str
    version: str
    aliases: list[str]
    created_at: datetime
    run_id: str | None
    validation_month: str | None
    metrics: dict[str, float]
    serving_version: str | None = Field(
        description="Model version behind the latest published run (may lag the champion)."
    )


class AuditRecord(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str | None
    organisations: list[str] | None
    route: str
    request_id: str | None
    purpose: str | None
    n_patients: int
    patients: list[str] = Field(
        description="Keyed-hash pseudonyms (or the identifiers themselves, if the deployment "
        "records them)."
    )
    identifier_kind: IdentifierKind = Field(
        default="nhs_number",
        description="What the patients were read by: NHS numbers, or a pseudonymous run's "
        "pseudonyms.",
    )


class AuditPage(BaseModel):
    records: list[AuditRecord]
    truncated: bool = Field(description="True when more records match than were returned.")


class RunRecord(BaseModel):
    run_id: int
    month: date
    status: str
    model_name: str
    model_version: str
    n_scored: int
    n_type1_opt_outs_excluded: int
    created_at: datetime
    published_at: datetime | None
    duration_seconds: float | None
    identifier_kind: IdentifierKind = _identifier_kind("the run's `nhs_number` fields")
    cohorts: dict[str, dict[str, object]] = Field(
        description="Per cohort: eligible, served within the look-back, expected admissions "
        "and admissions avoided, people per PCN. Aggregates only."
    )
    error: str | None


class OutcomeRow(BaseModel):
    intervention: str
    practice_code: str
    pcn_code: str
    delivered: bool
    people: int
    expected: float
    observed: int


class Problem(BaseModel):
    """An error answer under /api/: RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        default="about:blank",
        description="What kind of problem: a riskstrat problem URI, or about:blank when the "
        "HTTP status says it all.",
    )
    title: str = Field(description="The kind of problem, in a few words.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    hint: str | None = Field(default=None, description="What to do next, when there is a step.")
    instance: str | None = Field(default=None, description="The path that was asked for.")


class ValidationIssue(BaseModel):
    """One parameter that broke its declared rule, as FastAPI reports it."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="Where: the part of the request, then the name.")
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A 422 under /api/: problem details whose ``detail`` is FastAPI's list of issues."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: list[ValidationIssue]


class MonitoringRun(BaseModel):
    """The champion's monitoring of one published month, at one check date (aggregates)."""

    run_id: int
    month: date
    check_date: date
    model_name: str
    model_version: str
    status: str = Field(description="Overall: green, amber, red (or unknown).")
    checks: dict[str, str] = Field(description="Status per check: auroc, oe, slope, ...")
    computed_at: datetime
    payload: dict[str, Any] = Field(
        description="Everything computed: months (performance overall, per PCN, per fairness "
        "group, actioned and not), drift, rejects, notes. Aggregates only."
    )


class MonitoringOverview(BaseModel):
    latest: MonitoringRun | None = Field(description="The newest result, or null if none yet.")
    history: list[MonitoringRun] = Field(description="Every stored result, oldest first.")
