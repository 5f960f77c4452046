"""API routes. Each reads the store through ``StoreDep``; query logic lives in the store."""

from __future__ import annotations

import io
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status

from riskstrat.cohorts import capacity_summary, what_changed
from riskstrat.listing import listing_frame
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.registry import CHAMPION, ModelNotFoundError
from riskstrat.store import PatientScore, RunInfo, Store
from service.deps import CurrentCaller, RegistryDep, SettingsDep, StoreDep
from service.schemas import (
    CapacitySummary,
    CohortIndex,
    CohortMemberPublic,
    CohortPage,
    Criterion,
    EligibleIntervention,
    Health,
    InterventionInfo,
    ModelInfo,
    PatientRiskPublic,
    PatientRiskResponse,
    Reason,
    RiskListPage,
    RunSummary,
    WhatChanged,
)

router = APIRouter()
api = APIRouter(prefix="/api/v1")

PurposeHeader = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=200, description="Why the data is needed (audited)."),
]
NO_RUN = "no scoring run has been published yet: run `riskstrat score`"
PcnQuery = Annotated[str | None, Query(pattern=r"^U[0-9]{5}$", description="PCN ODS code")]
PracticeQuery = Annotated[
    str | None, Query(pattern=r"^[A-Z][0-9]{5}$", description="Practice ODS code")
]
MonthQuery = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM; default the latest run"),
]


def _run_for(store: Store, month: str | None) -> RunInfo:
    if month is None:
        run = store.latest_run()
        if run is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NO_RUN)
        return run
    year, mon = month.split("-")
    run = store.run_for_month(date(int(year), int(mon), 1))
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no published run for {month}")
    return run


def _interventions(run: RunInfo) -> dict[str, dict[str, Any]]:
    record: dict[str, dict[str, Any]] = run.details.get("cohort_config", {}).get(
        "interventions", {}
    )
    return record


def _intervention_info(run: RunInfo, key: str) -> InterventionInfo:
    record = _interventions(run)[key]
    counts = run.details.get("cohorts", {}).get(key, {})
    return InterventionInfo(
        key=key,
        title=record["title"],
        source=record["source"],
        effect=record["effect"],
        ranked_by=record["ranked_by"],
        lookback_days=record["lookback_days"],
        note=record.get("note"),
        eligible=int(counts.get("eligible", 0)),
        served_within_lookback=int(counts.get("served_within_lookback", 0)),
    )


def _criteria(run: RunInfo, key: str, keys: list[str]) -> list[Criterion]:
    texts = _interventions(run).get(key, {}).get("criteria", {})
    return [Criterion(key=k, text=texts.get(k, k)) for k in keys]


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


@api.get("/risk-list", response_model=RiskListPage, tags=["cohorts"])
def risk_list(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CurrentCaller,
    purpose: PurposeHeader = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    month: MonthQuery = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RiskListPage:
    """Everyone scored in a run for a PCN or practice, highest risk first, with reasons."""
    run = _run_for(store, month)
    size = min(page_size, settings.max_page_size)
    total, rows = store.cohort_page(
        run.id, pcn_code=pcn, practice_code=practice, offset=(page - 1) * size, limit=size
    )
    store.record_access(
        actor=caller.name,
        route="GET /api/v1/risk-list",
        nhs_numbers=[r.nhs_number for r in rows],
        key=settings.pseudonym_key.get_secret_value(),
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose,
    )
    return RiskListPage(
        run=_run_summary(run),
        pcn_code=pcn,
        practice_code=practice,
        total=total,
        page=page,
        page_size=size,
        items=[_public(r) for r in rows],
    )


@api.get("/cohorts", response_model=CohortIndex, tags=["cohorts"])
def cohort_index(store: StoreDep, caller: CurrentCaller, month: MonthQuery = None) -> CohortIndex:
    """The intervention cohorts of a run, with their criteria sources and sizes; no patients."""
    run = _run_for(store, month)
    return CohortIndex(
        run=_run_summary(run),
        cohort_config_version=str(run.details.get("cohort_config", {}).get("version", "")),
        interventions=[_intervention_info(run, k) for k in _interventions(run)],
    )


@api.get(
    "/cohorts/{intervention}",
    response_model=CohortPage,
    tags=["cohorts"],
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
def cohort(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: CurrentCaller,
    intervention: Annotated[
        str, Path(pattern=r"^[a-z][a-z0-9_]{0,49}$", description="e.g. falls_review")
    ],
    purpose: PurposeHeader = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    month: MonthQuery = None,
    capacity: Annotated[
        int | None, Query(ge=1, le=100_000, description="List only the top N; adds a summary.")
    ] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the page as CSV")] = "json",
) -> Any:
    """An intervention's cohort for a PCN or practice, ranked by expected benefit, with why
    each person is eligible, their reasons, and (with `capacity`) what the top N and the next
    N are expected to yield."""
    run = _run_for(store, month)
    if intervention not in _interventions(run):
        known = ", ".join(_interventions(run)) or "none"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no cohort {intervention!r} in this run; known: {known}"
        )
    info = _intervention_info(run, intervention)
    size = min(page_size, settings.max_page_size)
    offset = (page - 1) * size
    limit = size if capacity is None else max(0, min(size, capacity - offset))
    total, rows = store.intervention_page(
        run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset, limit=limit
    )
    summary = None
    if capacity is not None:
        risks = store.intervention_risks(
            run.id, intervention, pcn_code=pcn, practice_code=practice, limit=2 * capacity
        )
        summary = CapacitySummary(
            **{**capacity_summary(risks, capacity=capacity, effect=info.effect), "eligible": total}
        )
        total = min(total, capacity)
    store.record_access(
        actor=caller.name,
        route="GET /api/v1/cohorts/{intervention}",
        nhs_numbers=[m.nhs_number for m, _ in rows],
        key=settings.pseudonym_key.get_secret_value(),
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose,
    )
    if format == "csv":
        frame = listing_frame(rows, _interventions(run)[intervention]["criteria"])
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        name = f"{run.month:%Y-%m}_{intervention}_{pcn or practice or 'all'}_p{page}.csv"
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    items = [
        CohortMemberPublic(
            cohort_rank=m.rank,
            nhs_number=m.nhs_number,
            practice_code=m.practice_code,
            pcn_code=m.pcn_code,
            risk=m.risk,
            percentile=s.percentile,
            expected_admissions_avoided=m.expected_benefit,
            eligible_because=_criteria(run, intervention, m.criteria),
            reasons=[Reason(**r) for r in s.reasons],
        )
        for m, s in rows
    ]
    return CohortPage(
        run=_run_summary(run),
        intervention=info,
        pcn_code=pcn,
        practice_code=practice,
        capacity_summary=summary,
        total=total,
        page=page,
        page_size=size,
        items=items,
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
    """One person's risk, percentile and reasons from the latest run, the interventions they
    are eligible for, and what changed since the previous month."""
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
    memberships = [
        EligibleIntervention(
            intervention=m.intervention,
            title=_interventions(run).get(m.intervention, {}).get("title", m.intervention),
            cohort_rank=m.rank,
            expected_admissions_avoided=m.expected_benefit,
            eligible_because=_criteria(run, m.intervention, m.criteria),
        )
        for m in store.patient_memberships(run.id, nhs_number)
    ]
    changed = None
    previous = store.previous_run(run.month)
    before = store.patient_score(previous.id, nhs_number) if previous else None
    if previous is not None and before is not None:
        changed = WhatChanged(
            previous_month=previous.month,
            previous_model_version=previous.model_version,
            **what_changed(
                risk_now=score.risk,
                contributions_now=score.contributions,
                risk_then=before.risk,
                contributions_then=before.contributions,
            ),
        )
    return PatientRiskResponse(
        **_public(score).model_dump(),
        run=_run_summary(run),
        eligible_interventions=memberships,
        what_changed=changed,
    )


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
