"""API routes. Each reads the store through ``StoreDep``; query logic lives in the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, status

from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.registry import CHAMPION, ModelNotFoundError
from riskstrat.store import PatientScore, RunInfo
from service.deps import CurrentCaller, RegistryDep, SettingsDep, StoreDep
from service.schemas import (
    CohortPage,
    Health,
    ModelInfo,
    PatientRiskPublic,
    PatientRiskResponse,
    Reason,
    RunSummary,
)

router = APIRouter()
api = APIRouter(prefix="/api/v1")

PurposeHeader = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=200, description="Why the data is needed (audited)."),
]
NO_RUN = "no scoring run has been published yet: run `riskstrat score`"


@router.get("/health", response_model=Health, tags=["service"])
def health(store: StoreDep) -> Health:
    """Liveness and database reachability; no data."""
    store.ping()
    return Health(status="ok", database="ok")


def _run_summary(run: RunInfo) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        month=run.month,
        extract_date=run.extract_date,
        model_name=run.model_name,
        model_version=run.model_version,
        n_scored=run.n_scored,
        published_at=run.published_at,
    )


def _public(score: PatientScore) -> PatientRiskPublic:
    return PatientRiskPublic(
        nhs_number=score.nhs_number,
        practice_code=score.practice_code,
        pcn_code=score.pcn_code,
        risk=score.risk,
        percentile=score.percentile,
        rank=score.rank,
        reasons=[Reason(**r) for r in score.reasons],
    )


@api.get("/cohorts", response_model=CohortPage, tags=["cohorts"])
def cohort(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CurrentCaller,
    purpose: PurposeHeader = None,
    pcn: Annotated[str | None, Query(pattern=r"^U[0-9]{5}$", description="PCN ODS code")] = None,
    practice: Annotated[
        str | None, Query(pattern=r"^[A-Z][0-9]{5}$", description="Practice ODS code")
    ] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CohortPage:
    """Ranked list from the latest run for a PCN or practice, highest risk first, with reasons."""
    run = store.latest_run()
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_RUN)
    size = min(page_size, settings.max_page_size)
    total, rows = store.cohort_page(
        run.id, pcn_code=pcn, practice_code=practice, offset=(page - 1) * size, limit=size
    )
    store.record_access(
        actor=caller.name,
        route="GET /api/v1/cohorts",
        nhs_numbers=[r.nhs_number for r in rows],
        key=settings.pseudonym_key.get_secret_value(),
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose,
    )
    return CohortPage(
        run=_run_summary(run),
        pcn_code=pcn,
        practice_code=practice,
        total=total,
        page=page,
        page_size=size,
        items=[_public(r) for r in rows],
    )


@api.get("/patients/{nhs_number}/risk", response_model=PatientRiskResponse, tags=["patients"])
def patient_risk(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CurrentCaller,
    nhs_number: Annotated[str, Path(description="10-digit NHS number")],
    purpose: PurposeHeader = None,
) -> PatientRiskResponse:
    """One person's risk, percentile and reasons from the latest run."""
    if not is_valid_nhs_number(nhs_number):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "not a valid NHS number (10 digits with a Modulus 11 check digit)",
        )
    run = store.latest_run()
    score = store.patient_score(run.id, nhs_number) if run else None
    if run is None or score is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no risk published for this patient")
    store.record_access(
        actor=caller.name,
        route="GET /api/v1/patients/{nhs_number}/risk",
        nhs_numbers=[nhs_number],
        key=settings.pseudonym_key.get_secret_value(),
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose,
    )
    return PatientRiskResponse(**_public(score).model_dump(), run=_run_summary(run))


@api.get("/models/current", response_model=ModelInfo, tags=["models"])
def current_model(
    store: StoreDep, registry: RegistryDep, settings: SettingsDep, caller: CurrentCaller
) -> ModelInfo:
    """The champion model: version, when it was trained, and its held-out metrics."""
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "no champion model: run `riskstrat train`"
        ) from None
    run = store.latest_run()
    return ModelInfo(
        name=info.name,
        version=info.version,
        aliases=list(info.aliases),
        created_at=info.created_at,
        run_id=info.run_id,
        validation_month=info.tags.get("riskstrat.validation_month"),
        metrics={k: v for k, v in sorted(info.metrics.items())},
        serving_version=run.model_version if run else None,
    )
