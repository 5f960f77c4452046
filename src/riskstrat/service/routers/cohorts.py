"""``/api/v1/risk-list`` and ``/api/v1/cohorts``: who is at risk, and who each intervention
is for, ranked, per PCN or practice."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from riskstrat.cohorts.listing import (
    cohort_item_json,
    criteria_json,
    json_rank,
    listing_frame,
    practice_ranks,
)
from riskstrat.service.auth import Caller
from riskstrat.service.common import (
    API_PREFIX,
    ERRORS,
    MonthQuery,
    PageQuery,
    PageSizeQuery,
    PcnQuery,
    PracticeQuery,
    PurposeHeader,
    audit,
    audit_async,
    capacity_yields,
    intervention_info,
    interventions_of,
    pcn_scope,
    public_risk,
    run_for,
    run_summary,
)
from riskstrat.service.deps import PcnTeam, SettingsDep, StoreDep, require
from riskstrat.service.routers.marks import status_columns, with_status
from riskstrat.service.schemas import (
    CapacitySummary,
    CohortIndex,
    CohortPageWithStatus,
    RiskListPage,
)

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)


@router.get("/risk-list", response_model=RiskListPage, tags=["cohorts"])
def risk_list(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PcnTeam,
    purpose: PurposeHeader = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    month: MonthQuery = None,
    page: PageQuery = 1,
    page_size: PageSizeQuery = 50,
) -> RiskListPage:
    """Everyone scored in a run in the caller's PCNs (or one PCN or practice), highest risk
    first, with reasons. Role: pcn_team."""
    run = run_for(store, month)
    scope = pcn_scope(store, run, caller, pcn)
    size = min(page_size, settings.max_page_size)
    total, rows = store.scores.page(
        run.id,
        pcn_code=pcn,
        practice_code=practice,
        offset=(page - 1) * size,
        limit=size,
        pcn_codes=scope,
    )
    audit(
        request, store, settings, caller, "GET /api/v1/risk-list",
        [r.nhs_number for r in rows], purpose, identifier_kind=run.identifier_kind,
    )  # fmt: skip
    return RiskListPage(
        run=run_summary(run),
        pcn_code=pcn,
        practice_code=practice,
        total=total,
        page=page,
        page_size=size,
        items=[public_risk(r, run.identifier_kind) for r in rows],
    )


@router.get("/cohorts", response_model=CohortIndex, tags=["cohorts"])
def cohort_index(
    store: StoreDep,
    caller: Annotated[Caller, Depends(require("pcn_team", "analyst"))],
    month: MonthQuery = None,
) -> CohortIndex:
    """The intervention cohorts of a run, with their criteria sources and sizes; no patients.
    Roles: pcn_team, analyst."""
    run = run_for(store, month)
    return CohortIndex(
        run=run_summary(run),
        cohort_config_version=run.cohort_config_version,
        interventions=[intervention_info(run, k) for k in interventions_of(run)],
    )


@router.get(
    "/cohorts/{intervention}",
    response_model=CohortPageWithStatus,
    tags=["cohorts"],
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
async def cohort(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PcnTeam,
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
    page: PageQuery = 1,
    page_size: PageSizeQuery = 50,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the page as CSV")] = "json",
    hide_done: Annotated[
        bool,
        Query(
            description="Leave out people whose latest mark for this intervention is reviewed, "
            "declined or not_appropriate (totals, pages and the capacity summary count the rest)."
        ),
    ] = False,
) -> Any:
    """An intervention's cohort for a PCN or practice, ranked by expected benefit, with why
    each person is eligible, their reasons, and (with `capacity`) what the top N and the next
    N are expected to yield. Role: pcn_team, for its own PCNs."""
    run = run_for(store, month)
    if intervention not in interventions_of(run):
        known = ", ".join(interventions_of(run)) or "none"
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no cohort {intervention!r} in this run; known: {known}"
        )
    info = intervention_info(run, intervention)
    scope = pcn_scope(store, run, caller, pcn)
    size = min(page_size, settings.max_page_size)
    offset = (page - 1) * size
    limit = size if capacity is None else max(0, min(size, capacity - offset))
    items: tuple[int, list[tuple[str, str]]] | None = None
    if format == "csv":
        total, rows = store.cohorts.page(
            run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
            limit=limit, pcn_codes=scope, hide_done=hide_done, identifier_kind=run.identifier_kind,
        )  # fmt: skip
        nhs_numbers = [m.nhs_number for m, _ in rows]
    else:
        items = store.cohorts.page_items(
            run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
            limit=limit, pcn_codes=scope, hide_done=hide_done, identifier_kind=run.identifier_kind,
        )  # fmt: skip
        if items is None:  # a run published before items were stored
            total, raw = store.cohorts.page_raw(
                run.id, intervention, pcn_code=pcn, practice_code=practice, offset=offset,
                limit=limit, pcn_codes=scope, hide_done=hide_done,
                identifier_kind=run.identifier_kind,
            )  # fmt: skip
            nhs_numbers = [r.nhs_number for r in raw]
        else:
            total, stored = items
            nhs_numbers = [n for n, _ in stored]
    summary = None
    if capacity is not None:
        yields = capacity_yields(
            store, run, info, capacity=capacity, pcn_code=pcn, practice_code=practice,
            pcn_codes=scope, hide_done=hide_done, identifier_kind=run.identifier_kind,
        )  # fmt: skip
        summary = CapacitySummary(**{**yields, "eligible": total})
        total = min(total, capacity)
    kind = run.identifier_kind
    await audit_async(
        request, store, settings, caller, "GET /api/v1/cohorts/{intervention}", nhs_numbers,
        purpose, identifier_kind=kind,
    )  # fmt: skip
    marks = store.marks.latest(nhs_numbers, intervention=intervention, identifier_kind=kind)
    texts = interventions_of(run)[intervention]["criteria"]
    if format == "csv":
        frame = listing_frame(
            rows, texts, identifier_kind=kind, offset=offset, one_practice=bool(practice),
            ranks_known=not hide_done,
        )  # fmt: skip
        frame = status_columns(frame, nhs_numbers, marks, intervention)
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        name = f"{run.month:%Y-%m}_{intervention}_{pcn or practice or 'all'}_p{page}.csv"
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    # Written as JSON text: each item as stored at publication (already checked then), or
    # for older runs built here from the stored criteria and reasons. Decoding, modelling
    # and re-encoding a hundred people's reasons cost more than the rest of the request. The
    # OpenAPI schema is still CohortPageWithStatus's, and schemathesis checks answers against
    # it. Each person's latest mark (status, status_by, status_at) goes on the end of the item.
    if items is not None:
        parts = [item for _, item in stored]
        if parts and '"identifier_kind":' not in parts[0]:
            # Items stored before they said what the identifier is (runs of NHS numbers, all
            # written by one version): the field goes in after the identifier.
            field = f',"identifier_kind":"{kind}","practice_code":'
            parts = [p.replace(',"practice_code":', field, 1) for p in parts]
        if parts and '"practice_rank":' not in parts[0]:
            # Items stored before they held the rank within the practice: known here for a
            # practice's list read whole (see listing.practice_ranks), null otherwise.
            rank_known = practice is not None and not hide_done
            ranks = [json_rank(offset + i + 1 if rank_known else None) for i in range(len(parts))]
            parts = [
                p.replace(',"risk":', f',"practice_rank":{r},"risk":', 1)
                for p, r in zip(parts, ranks, strict=True)
            ]
    else:
        because: dict[str, str] = {}
        parts = []
        by_practice = practice_ranks(
            [r.practice_code for r in raw], offset=offset, one_practice=practice is not None
        )
        for r, practice_rank in zip(raw, by_practice, strict=True):
            if r.criteria_json not in because:
                because[r.criteria_json] = criteria_json(json.loads(r.criteria_json), texts)
            parts.append(
                cohort_item_json(
                    rank=r.rank, practice_rank=None if hide_done else practice_rank,
                    nhs_number=r.nhs_number, practice_code=r.practice_code,
                    pcn_code=r.pcn_code, risk=r.risk, percentile=r.percentile,
                    expected_benefit=r.expected_benefit, because_json=because[r.criteria_json],
                    reasons_json=r.reasons_json, identifier_kind=kind,
                )
            )  # fmt: skip
    parts = with_status(parts, nhs_numbers, marks, intervention)
    head = json.dumps(
        {
            "run": run_summary(run).model_dump(mode="json"),
            "intervention": info.model_dump(mode="json"),
            "pcn_code": pcn,
            "practice_code": practice,
            "capacity_summary": summary.model_dump(mode="json") if summary is not None else None,
            "total": total,
            "page": page,
            "page_size": size,
        }
    )
    body = f'{head[:-1]},"items":[{",".join(parts)}]}}'
    return Response(body, media_type="application/json")
