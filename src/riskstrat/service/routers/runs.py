"""``/api/v1/runs``: the monthly runs and their outcome summaries; aggregates only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from riskstrat.service.common import API_PREFIX, ERRORS
from riskstrat.service.deps import Analyst, StoreDep
from riskstrat.service.schemas import OutcomeRow, RunRecord

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)


@router.get("/runs", response_model=list[RunRecord], tags=["analysts"])
def runs(store: StoreDep, caller: Analyst) -> list[RunRecord]:
    """Every monthly run, with status, model version and cohort counts; no identifiers.
    Role: analyst."""
    out = []
    for r in store.runs.all():
        cohorts = r.cohort_counts if r.status == "published" else {}
        out.append(
            RunRecord(
                run_id=r.id,
                month=r.month,
                status=r.status,
                model_name=r.model_name,
                model_version=r.model_version,
                n_scored=r.n_scored,
                n_type1_opt_outs_excluded=r.n_type1_opt_outs_excluded,
                created_at=r.created_at,
                published_at=r.published_at,
                duration_seconds=r.duration_seconds,
                identifier_kind=r.identifier_kind,
                cohorts=cohorts,
                error=r.error,
            )
        )
    return out


@router.get("/runs/{run_id}/outcomes", response_model=list[OutcomeRow], tags=["analysts"])
def run_outcomes(
    store: StoreDep, caller: Analyst, run_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> list[OutcomeRow]:
    """A run's outcome summary per cohort, practice and delivered or not (aggregates, from
    `riskstrat outcomes`). Role: analyst."""
    if store.runs.get(run_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    frame = store.outcomes.get(run_id)
    return [
        OutcomeRow(**{k: r[k] for k in OutcomeRow.model_fields})
        for r in frame.to_dict(orient="records")
    ]
