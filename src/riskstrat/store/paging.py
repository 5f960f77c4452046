"""Pages of a run's ranked lists: the whole list (``patient_scores``) or one intervention's
cohort (``cohort_members``), narrowed to a PCN, a practice and a caller's scope, in rank order
with the total. Every paged read goes through :func:`fetch_page` (offset paging)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, func, select

from riskstrat.store.engine import mark
from riskstrat.store.marks import done_sql, not_done
from riskstrat.store.schema import cohort_members, patient_scores


@dataclass(frozen=True)
class Scope:
    """Which rows of a run a list shows: one intervention's cohort (or, with no
    ``intervention``, everyone scored), in one PCN and one practice if given, within a
    caller's PCNs (``pcn_codes``; None means every PCN). ``hide_done`` leaves out cohort
    members whose latest mark for the intervention is done (``store.marks.DONE_STATUSES``),
    matching marks of people identified as the run identifies them (``identifier_kind``)."""

    run_id: int
    intervention: str | None = None
    pcn_code: str | None = None
    practice_code: str | None = None
    pcn_codes: Sequence[str] | None = None
    hide_done: bool = False
    identifier_kind: str = "nhs_number"

    @property
    def table(self) -> Table:
        return patient_scores if self.intervention is None else cohort_members

    @property
    def empty(self) -> bool:
        """True when the caller's scope holds no PCN, so nothing can match."""
        return self.pcn_codes is not None and not self.pcn_codes

    def where(self) -> list[ColumnElement[bool]]:
        """The scope as SQLAlchemy conditions."""
        c = self.table.c
        where = [c.run_id == self.run_id]
        if self.intervention is not None:
            where.append(c.intervention == self.intervention)
        if self.pcn_codes is not None:
            where.append(c.pcn_code.in_(list(self.pcn_codes)))
        if self.pcn_code:
            where.append(c.pcn_code == self.pcn_code)
        if self.practice_code:
            where.append(c.practice_code == self.practice_code)
        if self.hide_done and self.intervention is not None:
            where.append(not_done(c.nhs_number, c.intervention, self.identifier_kind))
        return where

    def sql(self, placeholder: str) -> tuple[str, list[Any]]:
        """The scope as a plain SQL condition and its parameters, for the driver's own
        execution (``placeholder``: the driver's, see ``engine.mark``)."""
        where = f"run_id = {placeholder}"
        params: list[Any] = [self.run_id]
        if self.intervention is not None:
            where += f" AND intervention = {placeholder}"
            params.append(self.intervention)
        if self.pcn_codes is not None:
            where += f" AND pcn_code IN ({', '.join([placeholder] * len(self.pcn_codes))})"
            params.extend(self.pcn_codes)
        if self.pcn_code:
            where += f" AND pcn_code = {placeholder}"
            params.append(self.pcn_code)
        if self.practice_code:
            where += f" AND practice_code = {placeholder}"
            params.append(self.practice_code)
        if self.hide_done and self.intervention is not None:
            done, more = done_sql(self.table.name, placeholder, self.identifier_kind)
            where += f" AND {done}"
            params.extend(more)
        return where, params


def fetch_page(
    engine: Engine,
    scope: Scope,
    columns: Sequence[Any],
    *,
    offset: int,
    limit: int,
    with_scores: bool = False,
    plain_sql: bool = False,
) -> tuple[int, Sequence[Any]]:
    """The number of rows in ``scope``, and ``columns`` of one page of them in rank order
    (``offset`` rows skipped, at most ``limit``), as result rows.

    ``with_scores`` joins a cohort's members to their scores (percentile, reasons).
    ``plain_sql`` sends plain SQL through the driver (``columns`` are then column names): for
    the cohort page's hot query, which SQLAlchemy took three times as long to build and
    compile as SQLite took to answer.
    """
    if scope.empty:
        return 0, []
    table = scope.table
    with engine.connect() as conn:
        if plain_sql:
            where, params = scope.sql(mark(conn))
            total = conn.exec_driver_sql(
                f"SELECT count(*) FROM {table.name} WHERE {where}", tuple(params)
            ).scalar_one()
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join(columns)} FROM {table.name} WHERE {where} "
                f"ORDER BY rank LIMIT {mark(conn)} OFFSET {mark(conn)}",
                (*params, limit, offset),
            ).all()
            return int(total), rows
        conditions = scope.where()
        source: Any = table
        if with_scores:
            s = patient_scores.c
            source = table.join(
                patient_scores, (s.run_id == table.c.run_id) & (s.nhs_number == table.c.nhs_number)
            )
        query = (
            select(*columns)
            .select_from(source)
            .where(*conditions)
            .order_by(table.c.rank)
            .offset(offset)
            .limit(limit)
        )
        total = conn.execute(select(func.count()).select_from(table).where(*conditions))
        count = total.scalar_one()
        return int(count), conn.execute(query).all()
