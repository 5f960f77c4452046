"""A run's people: the whole ranked list, one person's score, one person across runs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, bindparam, select

from riskstrat.store.paging import Scope, fetch_page
from riskstrat.store.records import PatientScore, score_from_row
from riskstrat.store.schema import patient_scores

#: One person in several runs: on the patient view's hot path, so built once (SQLAlchemy then
#: skips rebuilding it on every request).
_PATIENT_IN_RUNS = select(patient_scores).where(
    patient_scores.c.run_id.in_(bindparam("run_ids", expanding=True)),
    patient_scores.c.nhs_number == bindparam("nhs_number"),
)


class ScoreRepository:
    """Reads of ``patient_scores``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(
        self,
        run_id: int,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
    ) -> tuple[int, list[PatientScore]]:
        """One page of a run's whole ranked list, highest risk first, and the total.
        ``pcn_codes`` limits it to a caller's scope."""
        scope = Scope(run_id, pcn_code=pcn_code, practice_code=practice_code, pcn_codes=pcn_codes)
        total, rows = fetch_page(self.engine, scope, [patient_scores], offset=offset, limit=limit)
        return total, [score_from_row(r._mapping) for r in rows]

    def patient(self, run_id: int, nhs_number: str) -> PatientScore | None:
        """One person's score in a run, or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(patient_scores).where(
                        patient_scores.c.run_id == run_id, patient_scores.c.nhs_number == nhs_number
                    )
                )
                .mappings()
                .first()
            )
        return score_from_row(row) if row else None

    def by_rank(self, run_id: int, rank: int) -> PatientScore | None:
        """The person at ``rank`` in a run, or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(patient_scores).where(
                        patient_scores.c.run_id == run_id, patient_scores.c.rank == rank
                    )
                )
                .mappings()
                .first()
            )
        return score_from_row(row) if row else None

    def in_runs(self, run_ids: Sequence[int], nhs_number: str) -> dict[int, PatientScore]:
        """One person's scores in several runs, by run id, in one query."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(_PATIENT_IN_RUNS, {"run_ids": list(run_ids), "nhs_number": nhs_number})
                .mappings()
                .all()
            )
        return {int(r["run_id"]): score_from_row(r) for r in rows}

    def pcn_in_run(self, run_id: int, pcn_code: str) -> bool:
        """True if anyone in the run belongs to ``pcn_code``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(patient_scores.c.nhs_number)
                .where(patient_scores.c.run_id == run_id, patient_scores.c.pcn_code == pcn_code)
                .limit(1)
            ).first()
        return row is not None
