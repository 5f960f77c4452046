"""``/api/v1/monitoring``: how the champion is doing on matured outcomes, its input drift
and data quality, as stored by ``riskstrat monitor`` (aggregates only)."""

from __future__ import annotations

from fastapi import APIRouter

from riskstrat.service.common import API_PREFIX, ERRORS
from riskstrat.service.deps import Analyst, StoreDep
from riskstrat.service.schemas import MonitoringOverview, MonitoringRun
from riskstrat.store.monitoring import MonitoringRecord

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)


def monitoring_run(record: MonitoringRecord) -> MonitoringRun:
    status = record.payload.get("status", {})
    return MonitoringRun(
        run_id=record.run_id,
        month=record.month,
        check_date=record.check_date,
        model_name=record.model_name,
        model_version=record.model_version,
        status=record.status,
        checks={str(k): str(v) for k, v in status.items() if k != "overall"},
        computed_at=record.computed_at,
        payload=record.payload,
    )


@router.get("/monitoring", response_model=MonitoringOverview, tags=["models"])
def monitoring(store: StoreDep, caller: Analyst) -> MonitoringOverview:
    """The champion's monitoring results: the latest and every stored one. Role: analyst."""
    records = store.monitoring.all()
    latest = store.monitoring.latest()
    return MonitoringOverview(
        latest=monitoring_run(latest) if latest else None,
        history=[monitoring_run(r) for r in records],
    )
