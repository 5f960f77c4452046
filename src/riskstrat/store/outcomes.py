"""A run's outcome summary: aggregates per cohort, practice and delivered or not."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from riskstrat.store.records import OUTCOME_COLUMNS
from riskstrat.store.schema import cohort_outcomes


class OutcomeRepository:
    """Reads and writes of ``cohort_outcomes`` (aggregates only: no patient identifiers)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def replace(self, run_id: int, outcomes: pd.DataFrame, *, outcome_extract_date: date) -> None:
        """Store a run's outcome summary (aggregates only), replacing any earlier one."""
        now = datetime.now(UTC)
        rows = [
            {
                "run_id": run_id,
                "intervention": str(r["intervention"]),
                "practice_code": str(r["practice_code"]),
                "pcn_code": str(r["pcn_code"]),
                "delivered": bool(r["delivered"]),
                "people": int(r["people"]),
                "expected": float(r["expected"]),
                "observed": int(r["observed"]),
                "outcome_extract_date": outcome_extract_date,
                "computed_at": now,
            }
            for r in outcomes[list(OUTCOME_COLUMNS)].to_dict(orient="records")
        ]
        with self.engine.begin() as conn:
            conn.execute(delete(cohort_outcomes).where(cohort_outcomes.c.run_id == run_id))
            if rows:
                conn.execute(insert(cohort_outcomes), rows)

    def get(self, run_id: int) -> pd.DataFrame:
        """A run's stored outcome summary (aggregates only)."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(cohort_outcomes)
                    .where(cohort_outcomes.c.run_id == run_id)
                    .order_by(cohort_outcomes.c.id)
                )
                .mappings()
                .all()
            )
        return pd.DataFrame([dict(r) for r in rows])
