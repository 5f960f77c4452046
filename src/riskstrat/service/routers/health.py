"""``/health``: liveness and database reachability, for load balancers; no credential."""

from __future__ import annotations

from fastapi import APIRouter

from riskstrat.service.deps import StoreDep
from riskstrat.service.schemas import Health

router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"])
def health(store: StoreDep) -> Health:
    """Liveness and database reachability; no data."""
    store.ping()
    return Health(status="ok", database="ok")
