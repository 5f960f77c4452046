"""What a team did about a listed person: marks (contacted, reviewed, declined, not
appropriate), with who made each and when.

A mark belongs to a person and an intervention, not to a run: a person reviewed for falls in
November is still reviewed on December's list. Marks are appended, never changed; the latest
(by time, then by the order they were written) is the person's status. Nothing deletes them:
pruning old runs leaves them alone. A person is stored as runs store them (an NHS number, or a
pseudonym in a pseudonymous run), with the kind beside it, so a pseudonym that happens to look
like an NHS number never takes another person's status. A mark's note is free text and may say
something about the person: it is stored and handed back, never logged or put in an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, insert, literal, select

from riskstrat.errors import UsageError
from riskstrat.store.records import check_kind, utc
from riskstrat.store.schema import patient_marks

#: What a team can say it did about a listed person.
MARK_STATUSES = ("contacted", "reviewed", "declined", "not_appropriate")
#: Statuses after which the person needs nothing more for that intervention (lists can hide
#: them); "contacted" is still under way.
DONE_STATUSES = {"reviewed", "declined", "not_appropriate"}
#: The longest note a mark keeps.
MAX_NOTE = 500
_INTERVENTION = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_PCN = re.compile(r"^U[0-9]{5}$")
#: People per query when reading the latest marks of many (the drivers' parameter limits).
_CHUNK = 500

__all__ = ["DONE_STATUSES", "MARK_STATUSES", "MAX_NOTE", "Mark", "MarkRepository", "done_sql"]


@dataclass(frozen=True)
class Mark:
    """One mark: ``person`` is the identifier as the runs hold it (``identifier_kind`` says
    which), ``by`` who made it, ``at`` when (UTC)."""

    person: str
    intervention: str
    status: str
    by: str
    at: datetime
    note: str | None
    identifier_kind: str


def _mark_from_row(row: Any) -> Mark:
    return Mark(
        person=str(row["person"]),
        intervention=str(row["intervention"]),
        status=str(row["status"]),
        by=str(row["marked_by"]),
        at=utc(row["marked_at"]) or datetime.now(UTC),
        note=row["note"],
        identifier_kind=str(row["identifier_kind"]),
    )


def _latest_status(person: Any, intervention: Any, identifier_kind: str) -> Any:
    """The status of the latest mark of ``person`` for ``intervention`` (a scalar subquery;
    null when there is none)."""
    m = patient_marks.c
    return (
        select(m.status)
        .where(
            m.person == person,
            m.intervention == intervention,
            m.identifier_kind == identifier_kind,
        )
        .order_by(m.marked_at.desc(), m.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def not_done(person: Any, intervention: Any, identifier_kind: str) -> ColumnElement[bool]:
    """A condition: the person's latest mark for the intervention is not one of
    ``DONE_STATUSES`` (or there is none). For filtering a list in its query, before paging."""
    latest = _latest_status(person, intervention, identifier_kind)
    return func.coalesce(latest, "").not_in(sorted(DONE_STATUSES))


def done_sql(table: str, placeholder: str, identifier_kind: str) -> tuple[str, list[Any]]:
    """``not_done`` as plain SQL on ``table``'s ``nhs_number`` and ``intervention`` columns,
    and its parameters (``placeholder``: the driver's), for the cohort page's hot query."""
    done = sorted(DONE_STATUSES)
    latest = (
        f"(SELECT pm.status FROM patient_marks pm WHERE pm.person = {table}.nhs_number "
        f"AND pm.intervention = {table}.intervention AND pm.identifier_kind = {placeholder} "
        "ORDER BY pm.marked_at DESC, pm.id DESC LIMIT 1)"
    )
    sql = f"COALESCE({latest}, '') NOT IN ({', '.join([placeholder] * len(done))})"
    return sql, [identifier_kind, *done]


def check_mark(*, person: str, intervention: str, status: str, by: str, pcn_code: str,
               note: str | None) -> None:  # fmt: skip
    """Refuse a mark the store would not keep (UsageError). Messages never repeat the note
    or the person."""
    if status not in MARK_STATUSES:
        raise UsageError(
            f"a mark's status must be one of {', '.join(MARK_STATUSES)}",
            hint="say what was done: contacted, reviewed, declined or not_appropriate",
        )
    if not _INTERVENTION.fullmatch(intervention):
        raise UsageError(
            "an intervention is a key such as falls_review (lower-case letters, digits and _)",
            hint="GET /api/v1/cohorts lists the interventions",
        )
    if not person or len(person) > 64:
        raise UsageError("a person is an NHS number or a pseudonym of 1 to 64 characters")
    if not by or len(by) > 200:
        raise UsageError("who made a mark is a name of 1 to 200 characters")
    if not _PCN.fullmatch(pcn_code):
        raise UsageError("a PCN code is U and five digits, such as U12345")
    if note is not None and len(note) > MAX_NOTE:
        raise UsageError(
            f"a mark's note is at most {MAX_NOTE} characters",
            hint="shorten the note; the clinical record is the place for more",
        )


class MarkRepository:
    """Writes and reads of ``patient_marks``: appended, never updated or deleted."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        *,
        person: str,
        intervention: str,
        status: str,
        by: str,
        pcn_code: str,
        identifier_kind: str,
        note: str | None = None,
        at: datetime | None = None,
    ) -> Mark:
        """Record a mark and return it.

        Raises:
            UsageError: a status, intervention, person, name, PCN code or identifier kind the
                store would not keep, or a note over ``MAX_NOTE`` characters.
        """
        check_kind(identifier_kind)
        check_mark(
            person=person, intervention=intervention, status=status, by=by,
            pcn_code=pcn_code, note=note,
        )  # fmt: skip
        when = (at or datetime.now(UTC)).astimezone(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                insert(patient_marks).values(
                    person=person,
                    identifier_kind=identifier_kind,
                    intervention=intervention,
                    status=status,
                    pcn_code=pcn_code,
                    marked_by=by,
                    marked_at=when,
                    note=note,
                )
            )
        return Mark(
            person=person, intervention=intervention, status=status, by=by, at=when,
            note=note, identifier_kind=identifier_kind,
        )  # fmt: skip

    def latest(
        self,
        people: Sequence[str],
        *,
        intervention: str | None = None,
        identifier_kind: str | None = None,
        as_of: datetime | None = None,
    ) -> dict[tuple[str, str], Mark]:
        """The latest mark of each of ``people`` per intervention (only ``intervention``'s
        if given), by ``(person, intervention)``; people with none are left out.
        ``identifier_kind`` keeps only marks of people identified that way (what the served
        run holds); ``as_of`` ignores marks made after it."""
        m = patient_marks.c
        unique = sorted(set(people))
        out: dict[tuple[str, str], Mark] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(unique), _CHUNK):
                where: list[ColumnElement[bool]] = [m.person.in_(unique[start : start + _CHUNK])]
                if intervention is not None:
                    where.append(m.intervention == intervention)
                if identifier_kind is not None:
                    where.append(m.identifier_kind == identifier_kind)
                if as_of is not None:
                    where.append(m.marked_at <= as_of.astimezone(UTC))
                newest = (
                    func.row_number()
                    .over(
                        partition_by=(m.person, m.intervention),
                        order_by=(m.marked_at.desc(), m.id.desc()),
                    )
                    .label("newest")
                )
                ranked = select(patient_marks, newest).where(*where).subquery()
                rows = conn.execute(select(ranked).where(ranked.c.newest == literal(1)))
                for row in rows.mappings():
                    mark = _mark_from_row(row)
                    out[(mark.person, mark.intervention)] = mark
        return out

    def history(self, person: str, *, identifier_kind: str | None = None) -> list[Mark]:
        """Every mark of one person, newest first (only those of ``identifier_kind`` if
        given)."""
        m = patient_marks.c
        query = select(patient_marks).where(m.person == person)
        if identifier_kind is not None:
            query = query.where(m.identifier_kind == identifier_kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(m.marked_at.desc(), m.id.desc())).mappings()
            return [_mark_from_row(r) for r in rows]
