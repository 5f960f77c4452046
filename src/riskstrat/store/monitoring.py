"""Monitoring results of the champion: one JSON payload (aggregates) per run and check date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from riskstrat.store.schema import model_monitoring, patient_scores


@dataclass(frozen=True)
class MonitoringRecord:
    run_id: int
    month: date
    check_date: date
    model_name: str
    model_version: str
    status: str
    payload: dict[str, Any]
    computed_at: datetime


def _record(row: Any) -> MonitoringRecord:
    computed = row["computed_at"]
    if computed.tzinfo is None:  # SQLite returns naive datetimes
        computed = computed.replace(tzinfo=UTC)
    return MonitoringRecord(
        run_id=int(row["run_id"]),
        month=row["month"],
        check_date=row["check_date"],
        model_name=str(row["model_name"]),
        model_version=str(row["model_version"]),
        status=str(row["status"]),
        payload=dict(row["payload"]),
        computed_at=computed,
    )


class MonitoringRepository:
    """Reads and writes of ``model_monitoring`` (aggregates only: no patient identifiers)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def replace(
        self,
        *,
        run_id: int,
        month: date,
        check_date: date,
        model_name: str,
        model_version: str,
        status: str,
        payload: dict[str, Any],
    ) -> None:
        """Store one run's monitoring at ``check_date``, replacing an earlier one."""
        t = model_monitoring
        with self.engine.begin() as conn:
            conn.execute(delete(t).where((t.c.run_id == run_id) & (t.c.check_date == check_date)))
            conn.execute(
                insert(t),
                {
                    "run_id": run_id,
                    "month": month,
                    "check_date": check_date,
                    "model_name": model_name,
                    "model_version": model_version,
                    "status": status,
                    "payload": payload,
                    "computed_at": datetime.now(UTC),
                },
            )

    def all(self) -> list[MonitoringRecord]:
        """Every stored result, by month then check date (oldest first)."""
        t = model_monitoring
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.month, t.c.check_date, t.c.id)).mappings()
            return [_record(r) for r in rows]

    def latest(self) -> MonitoringRecord | None:
        """The result computed last (the newest check date, then the newest month)."""
        t = model_monitoring
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(t)
                    .order_by(t.c.check_date.desc(), t.c.month.desc(), t.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return _record(row) if row is not None else None

    def published_risks(self, run_id: int) -> pd.DataFrame:
        """A run's people and the risks it published (``nhs_number, pcn_code, risk``), for
        comparing with what happened; the caller keeps only aggregates."""
        s = patient_scores.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s.nhs_number, s.pcn_code, s.risk).where(s.run_id == run_id)
            ).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=["nhs_number", "pcn_code", "risk"])
