"""Response schemas of the API (these are what the OpenAPI docs show)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


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


class PatientRiskPublic(BaseModel):
    nhs_number: str
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


class CohortPage(BaseModel):
    run: RunSummary
    pcn_code: str | None
    practice_code: str | None
    total: int = Field(description="People in the list across all pages.")
    page: int
    page_size: int
    items: list[PatientRiskPublic]


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
