"""A run's intervention cohorts: pages of a cohort (with each member's score, as stored API
items, or as raw JSON text for the API's hot path), its risks (and, for a list ranked by
another model, that model's risks), sizes and members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Text, bindparam, cast, func, select

from riskstrat.store.paging import Scope, fetch_page
from riskstrat.store.records import (
    COHORT_COLUMNS,
    CohortMember,
    CohortRowRaw,
    PatientScore,
    from_json,
    member_from_row,
)
from riskstrat.store.schema import cohort_members, patient_scores

#: One person's cohort memberships in a run, without the stored API items (large), built once
#: for the patient view's hot path. No ORDER BY: it would tempt SQLite into the (run,
#: intervention, rank) index and a scan of the whole run instead of the (run, NHS number)
#: lookup.
_PATIENT_MEMBERSHIPS = select(*[c for c in cohort_members.c if c.name != "item_json"]).where(
    cohort_members.c.run_id == bindparam("run_id"),
    cohort_members.c.nhs_number == bindparam("nhs_number"),
)


class CohortRepository:
    """Reads of ``cohort_members`` (joined to ``patient_scores`` where a page shows scores)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
        hide_done: bool = False,
        identifier_kind: str = "nhs_number",
    ) -> tuple[int, list[tuple[CohortMember, PatientScore]]]:
        """One page of an intervention's cohort in rank order, with each person's score and
        reasons, and the number of people in the (filtered) cohort. ``hide_done`` leaves out
        people whose latest mark is done, in the query (so pages and the total agree), with
        marks matched as ``identifier_kind`` (the run's) identifies people."""
        s = patient_scores.c
        scope = Scope(
            run_id, intervention, pcn_code, practice_code, pcn_codes, hide_done, identifier_kind
        )
        columns = [cohort_members, s.percentile, s.reasons, s.rank.label("overall_rank")]
        total, rows = fetch_page(
            self.engine, scope, columns, offset=offset, limit=limit, with_scores=True
        )
        out = []
        for row in rows:
            r = row._mapping
            member = member_from_row(r)
            score = PatientScore(
                nhs_number=member.nhs_number,
                practice_code=member.practice_code,
                pcn_code=member.pcn_code,
                risk=member.risk,
                percentile=float(r["percentile"]),
                rank=int(r["overall_rank"]),
                reasons=list(from_json(r["reasons"])),
                contributions={},  # not read for lists; see ScoreRepository.patient
            )
            out.append((member, score))
        return total, out

    def page_items(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
        hide_done: bool = False,
        identifier_kind: str = "nhs_number",
    ) -> tuple[int, list[tuple[str, str]]] | None:
        """A page of a cohort as the API items written at publication: the number of people
        in the (filtered) cohort, and ``(nhs_number, item_json)`` in rank order. ``None``
        for a run published before items were stored (use ``page_raw``)."""
        scope = Scope(
            run_id, intervention, pcn_code, practice_code, pcn_codes, hide_done, identifier_kind
        )
        total, found = fetch_page(
            self.engine,
            scope,
            ["nhs_number", "item_json"],
            offset=offset,
            limit=limit,
            plain_sql=True,
        )
        rows = [(str(n), j) for n, j in found]
        if any(j is None for _, j in rows):
            return None
        return total, rows

    def page_raw(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
        hide_done: bool = False,
        identifier_kind: str = "nhs_number",
    ) -> tuple[int, list[CohortRowRaw]]:
        """``page`` for the API's hot path: criteria and reasons come back as the JSON text
        stored at publication, so a page can be written without decoding and re-encoding a
        hundred people's reasons."""
        m, s = cohort_members.c, patient_scores.c
        scope = Scope(
            run_id, intervention, pcn_code, practice_code, pcn_codes, hide_done, identifier_kind
        )
        columns = [
            m.rank,
            m.nhs_number,
            m.practice_code,
            m.pcn_code,
            m.risk,
            m.expected_benefit,
            cast(m.criteria, Text).label("criteria"),
            s.percentile,
            cast(s.reasons, Text).label("reasons"),
        ]
        total, rows = fetch_page(
            self.engine, scope, columns, offset=offset, limit=limit, with_scores=True
        )
        return total, [CohortRowRaw(*r) for r in rows]

    def risks(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        limit: int | None = None,
        pcn_codes: Sequence[str] | None = None,
        hide_done: bool = False,
        identifier_kind: str = "nhs_number",
    ) -> list[float]:
        """Risks of an intervention's cohort in rank order (for capacity summaries)."""
        scope = Scope(
            run_id, intervention, pcn_code, practice_code, pcn_codes, hide_done, identifier_kind
        )
        return [float(r) for r in self._in_rank_order(cohort_members.c.risk, scope, limit)]

    def ranking_risks(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        limit: int | None = None,
        pcn_codes: Sequence[str] | None = None,
        hide_done: bool = False,
        identifier_kind: str = "nhs_number",
    ) -> list[float | None]:
        """``risks``' sibling for a list ranked by another model: that model's risk of each
        member (``cohort_members.ranking``), in rank order; None for a member with none (a
        list that fell back to admission risk, or one not ranked by another model). Read in
        the database (``json_extract`` on SQLite, ``->>`` on PostgreSQL), not the members'
        reasons."""
        scope = Scope(
            run_id, intervention, pcn_code, practice_code, pcn_codes, hide_done, identifier_kind
        )
        column = cohort_members.c.ranking["risk"].as_float()
        return [None if r is None else float(r) for r in self._in_rank_order(column, scope, limit)]

    def _in_rank_order(self, column: Any, scope: Scope, limit: int | None) -> list[Any]:
        """One column of a scope's members, in rank order, the first ``limit`` of them."""
        query = select(column).where(*scope.where()).order_by(cohort_members.c.rank)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def sizes(self, run_id: int) -> dict[str, int]:
        """The number of members of each of a run's cohorts."""
        m = cohort_members.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(m.intervention, func.count())
                .where(m.run_id == run_id)
                .group_by(m.intervention)
            ).all()
        return {str(k): int(v) for k, v in rows}

    def frame(self, run_id: int, intervention: str | None = None) -> pd.DataFrame:
        """A run's cohort members as a frame (for outcomes and exports)."""
        m = cohort_members.c
        query = select(cohort_members).where(m.run_id == run_id)
        if intervention:
            query = query.where(m.intervention == intervention)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(m.intervention, m.rank)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=["run_id", *COHORT_COLUMNS])
        return frame.drop(columns=["run_id"])

    def memberships(self, run_id: int, nhs_number: str) -> list[CohortMember]:
        """One person's memberships of a run's cohorts, by intervention."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(_PATIENT_MEMBERSHIPS, {"run_id": run_id, "nhs_number": nhs_number})
                .mappings()
                .all()
            )
        return sorted((member_from_row(r) for r in rows), key=lambda member: member.intervention)
