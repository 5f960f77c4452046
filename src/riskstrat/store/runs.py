"""Monthly runs: written in two phases, read by month.

A run is one row in ``score_runs`` plus its people in ``patient_scores`` and its cohorts in
``cohort_members``. Rows are staged under a run whose status is ``staging``, which no reader
ever sees; then one short transaction switches it to ``published`` and retires the month's
previous run. Readers therefore see the previous complete run or the new complete one, never
a mix, and a process killed at any moment leaves only an invisible staging run, which the
next run clears away. A retired run's rows are deleted after the switch, a chunk of people
per transaction, so the switch stays short.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, update

from riskstrat.calendar import add_months
from riskstrat.data.contract import IdentifierKind
from riskstrat.errors import ConflictError, UsageError, failure_message
from riskstrat.store import bulk, partitions
from riskstrat.store.engine import mark
from riskstrat.store.purge import purge_run_rows
from riskstrat.store.records import (
    COHORT_COLUMNS,
    SCORE_COLUMNS,
    RunInfo,
    arrow_rows,
    check_kind,
    frame_tuples,
    run_from_row,
    utc,
)
from riskstrat.store.schema import (
    cohort_members,
    cohort_outcomes,
    holds_json,
    patient_scores,
    score_runs,
)

_log = logging.getLogger(__name__)

#: Rows one staging transaction writes. Each holds SQLite's write lock, which the API's
#: audit writes wait for (10 s at most): 50,000 people's rows take well under a second.
STAGE_CHUNK_ROWS = 50_000
#: Connections a PostgreSQL run is staged on at once (each copies its share of the chunks).
STAGE_STREAMS = 2
#: SQLite's page cache while a run is staged (KiB): the run's index pages stay in memory.
STAGE_CACHE_KIB = 262_144

#: The ids of the latest two months' published runs: on every API request, so built once.
_LATEST_TWO_RUN_IDS = (
    select(score_runs.c.id)
    .where(score_runs.c.status == "published")
    .order_by(score_runs.c.month.desc(), score_runs.c.id.desc())
    .limit(2)
)


class RunInProgressError(ConflictError):
    """Another live process is staging a run for the same month."""

    default_hint = (
        "wait for that run to finish, or stop its process; then run the command again: a run "
        "whose process has died (or, from another machine, older than 24 hours) is recovered "
        "when the next one begins"
    )


@contextmanager
def _run_page_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, ``STAGE_CACHE_KIB`` of page cache for ``conn`` while a run's rows are
    written or deleted (its index pages stay in memory), SQLite's default again after; a
    transaction left open by a failure is rolled back first. Elsewhere, nothing."""
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{STAGE_CACHE_KIB}")
        conn.commit()  # the pragma began SQLAlchemy's transaction; each chunk has its own
    try:
        yield
    finally:
        conn.rollback()  # a chunk that failed part way
        if sqlite:
            conn.exec_driver_sql("PRAGMA cache_size=-2000")  # SQLite's default
            conn.commit()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunRepository:
    """Writing runs (begin, stage, publish or fail; purge, recover, prune) and finding them."""

    #: A staging run from another machine is taken as abandoned after this long.
    FOREIGN_STAGING_TIMEOUT_HOURS = 24
    #: People (ranks) whose rows one transaction deletes when a retired or failed run's rows
    #: are removed. Each transaction holds SQLite's single write lock, which the API's audit
    #: writes wait for (10 s at most): deleting 735,000 people's rows in one took 38 s.
    PURGE_CHUNK_PEOPLE = 20_000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[int, RunInfo] = {}

    # ---- writing a run: begin, stage, publish (or fail) ---------------------------------

    def begin(
        self,
        *,
        month: date,
        extract_date: date | None,
        model_name: str,
        model_version: str,
        started_at: datetime,
    ) -> int:
        """Open a staging run for ``month``, after clearing runs abandoned by dead processes.

        Raises:
            RunInProgressError: a live process is already staging this month.
        """
        self.recover_abandoned()
        with self.engine.begin() as conn:
            live = conn.execute(
                select(score_runs.c.id, score_runs.c.pid).where(
                    score_runs.c.status == "staging", score_runs.c.month == month
                )
            ).first()
            if live is not None:
                raise RunInProgressError(
                    f"run {live.id} for {month.isoformat()} is still being written by process "
                    f"{live.pid}"
                )
            run_id = conn.execute(
                insert(score_runs).values(
                    month=month,
                    extract_date=extract_date,
                    model_name=model_name,
                    model_version=model_version,
                    status="staging",
                    n_scored=0,
                    n_type1_opt_outs_excluded=0,
                    created_at=started_at,
                    host=socket.gethostname()[:200],
                    pid=os.getpid(),
                    details={},
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        return int(run_id)

    def stage_scores(
        self, run_id: int, scores: pd.DataFrame, *, chunk_rows: int = STAGE_CHUNK_ROWS
    ) -> None:
        """Add people to a staging run, one transaction per chunk. ``reasons`` and
        ``contributions`` may be JSON text already (``score_frame``'s), kept as it is."""
        self._stage(run_id, patient_scores, scores, SCORE_COLUMNS, chunk_rows)

    def stage_cohorts(
        self, run_id: int, members: pd.DataFrame, *, chunk_rows: int = STAGE_CHUNK_ROWS
    ) -> None:
        """Add cohort members to a staging run, one transaction per chunk. ``item_json``
        (``listing.cohort_items_json``) and ``ranking`` columns are stored when the frame has
        them."""
        extra = [c for c in ("item_json", "ranking") if c in members.columns]
        columns = [*COHORT_COLUMNS, *extra]
        self._stage(run_id, cohort_members, members, columns, chunk_rows)

    def _stage(
        self,
        run_id: int,
        table: Table,
        frame: pd.DataFrame,
        columns: Sequence[str],
        chunk_rows: int,
    ) -> None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{table.name} rows lack columns: {', '.join(missing)}")
        self._require_status(run_id, "staging")
        names = ["run_id", *columns]
        encode = [holds_json(table, c) for c in columns]
        first = {"run_id": run_id}
        if self.engine.dialect.name == "postgresql":
            # PostgreSQL takes the rows by binary COPY of Arrow batches (``bulk``): no Python
            # object per value on the way, into the run's own bare table (``partitions``:
            # indexed and attached once, by ``seal``).
            into = table.name  # a store before revision 0009, on its way to be upgraded
            with self.engine.begin() as conn:
                if partitions.partitioned(conn, table):
                    partitions.create_bare(conn, table, run_id)
                    into = partitions.partition_name(table, run_id)
            bulk.copy_rows(
                self.engine,
                table,
                [
                    partial(arrow_rows, frame.iloc[s : s + chunk_rows], columns, encode, first)
                    for s in range(0, len(frame), chunk_rows)
                ],
                into=into,
                streams=STAGE_STREAMS,
            )
            return
        # SQLite: the driver's own executemany with plain tuples (SQLAlchemy's per-row
        # parameter handling cost more than SQLite's inserts), on one connection whose page
        # cache holds the run's index pages while it is written (a default cache sent the
        # random-order primary key to disk: three times slower at a million people).
        marks = ", ".join([mark(self.engine)] * len(names))
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})"
        with self.engine.connect() as conn, _run_page_cache(conn):
            for chunk in frame_tuples(frame, columns, chunk_rows, encode):
                with conn.begin():
                    conn.exec_driver_sql(sql, [(run_id, *row) for row in chunk])

    def publish(
        self,
        run_id: int,
        *,
        n_type1_opt_outs_excluded: int,
        details: dict[str, Any],
        expected_people: int | None = None,
        identifier_kind: IdentifierKind = "nhs_number",
    ) -> RunInfo:
        """Switch a staging run to published in one transaction, retiring the month's
        previous run in the same transaction; then delete the retired run's rows, a chunk
        per transaction (``purge_rows``), so the switch never holds the write lock for long.
        Nothing reads a retired run's rows; if deleting them fails, the run stays published
        and the next ``begin`` finishes the job (``recover_abandoned``).

        ``identifier_kind`` (what the run's people are identified by) is recorded in the
        run's details, where ``RunInfo.identifier_kind`` reads it."""
        check_kind(identifier_kind)
        self.seal(run_id)
        with self.engine.begin() as conn:
            run = conn.execute(select(score_runs).where(score_runs.c.id == run_id)).mappings().one()
            if run["status"] != "staging":
                raise ConflictError(f"run {run_id} is {run['status']}, not staging")
            n_scored = conn.execute(
                select(func.count())
                .select_from(patient_scores)
                .where(patient_scores.c.run_id == run_id)
            ).scalar_one()
            if expected_people is not None and n_scored != expected_people:
                raise ConflictError(
                    f"run {run_id} staged {n_scored} people, expected {expected_people}",
                    hint="the run was not published; run the command again",
                )
            previous = [
                r.id
                for r in conn.execute(
                    select(score_runs.c.id).where(
                        score_runs.c.month == run["month"], score_runs.c.status == "published"
                    )
                )
            ]
            if previous:
                conn.execute(
                    update(score_runs)
                    .where(score_runs.c.id.in_(previous))
                    .values(status="superseded")
                )
            now = datetime.now(UTC)
            started = utc(run["created_at"]) or now
            conn.execute(
                update(score_runs)
                .where(score_runs.c.id == run_id)
                .values(
                    status="published",
                    n_scored=n_scored,
                    n_type1_opt_outs_excluded=n_type1_opt_outs_excluded,
                    published_at=now,
                    duration_seconds=(now - started).total_seconds(),
                    details={
                        **details,
                        "identifier_kind": identifier_kind,
                        "replaced_runs": previous,
                    },
                )
            )
        try:
            if previous:
                self.purge_rows(previous)
        except Exception as exc:  # the run is published; leftovers go at the next begin
            _log.warning(
                "run %s is published; deleting the rows of the runs it replaced failed (%s)",
                run_id,
                type(exc).__name__,
            )
        info = self.get(run_id)
        assert info is not None
        return info

    def seal(self, run_id: int) -> None:
        """On PostgreSQL, index a staging run's own tables and attach them as its partitions
        (``partitions.seal``): the last of staging, done by ``publish`` before the switch if
        not before (the switch itself is unchanged). Elsewhere, and for a run already sealed
        or not staging (the switch refuses it), nothing."""
        if self.engine.dialect.name != "postgresql" or self.status(run_id) != "staging":
            return
        partitions.seal(self.engine, (patient_scores, cohort_members), run_id)

    def publish_run(
        self,
        *,
        month: date,
        extract_date: date,
        model_name: str,
        model_version: str,
        scores: pd.DataFrame,
        n_type1_opt_outs_excluded: int,
        started_at: datetime,
        details: dict[str, Any],
        cohorts: pd.DataFrame | None = None,
        chunk_rows: int = 10_000,
        identifier_kind: IdentifierKind = "nhs_number",
    ) -> int:
        """Stage and publish a whole run; on any error the run is failed and nothing shows."""
        run_id = self.begin(
            month=month,
            extract_date=extract_date,
            model_name=model_name,
            model_version=model_version,
            started_at=started_at,
        )
        try:
            self.stage_scores(run_id, scores, chunk_rows=chunk_rows)
            if cohorts is not None:
                self.stage_cohorts(run_id, cohorts, chunk_rows=chunk_rows)
            self.publish(
                run_id,
                n_type1_opt_outs_excluded=n_type1_opt_outs_excluded,
                details=details,
                expected_people=len(scores),
                identifier_kind=identifier_kind,
            )
        except BaseException as exc:
            self.fail(run_id, f"{type(exc).__name__}: {failure_message(exc)}")
            raise
        return run_id

    def fail(self, run_id: int, reason: str) -> None:
        """Mark a staging run failed, with why, then delete what it staged (``purge_rows``)."""
        with self.engine.begin() as conn:
            status = conn.execute(
                select(score_runs.c.status).where(score_runs.c.id == run_id)
            ).scalar()
            if status != "staging":
                return
            conn.execute(
                update(score_runs)
                .where(score_runs.c.id == run_id)
                .values(status="failed", details={"error": reason[:2000]})
            )
        self.purge_rows([run_id])

    def record_failed(
        self,
        *,
        month: date,
        extract_date: date | None,
        model_name: str,
        model_version: str,
        started_at: datetime,
        reason: str,
    ) -> int:
        """Keep a record of a run that failed before it staged anything (no patient data)."""
        with self.engine.begin() as conn:
            run_id = conn.execute(
                insert(score_runs).values(
                    month=month,
                    extract_date=extract_date,
                    model_name=model_name,
                    model_version=model_version,
                    status="failed",
                    n_scored=0,
                    n_type1_opt_outs_excluded=0,
                    created_at=started_at,
                    duration_seconds=(datetime.now(UTC) - started_at).total_seconds(),
                    host=socket.gethostname()[:200],
                    pid=os.getpid(),
                    details={"error": reason[:2000]},
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        return int(run_id)

    # ---- clearing away: retired, failed and abandoned runs, old months ------------------

    def purge_rows(self, run_ids: Sequence[int], *, chunk_people: int | None = None) -> int:
        """Delete the scores and cohort rows of retired or failed runs, ``chunk_people``
        people (default ``PURGE_CHUNK_PEOPLE``) per transaction. Returns the rows deleted.

        Published and staging runs are refused: their rows are read, or about to be."""
        size = int(chunk_people or self.PURGE_CHUNK_PEOPLE)
        if size < 1:
            raise UsageError("chunk_people must be at least 1", hint="give a positive number")
        deleted = 0
        for run_id in run_ids:
            status = self.status(run_id)
            if status in ("published", "staging"):
                raise ConflictError(f"run {run_id} is {status}; its rows are not deleted")
            # The staging's page cache on SQLite: the run's index pages stay in memory while
            # its rows go (735,000 people: 17 s with SQLite's default 2 MB, 15 s with it).
            with self.engine.connect() as conn, _run_page_cache(conn):
                deleted += purge_run_rows(conn, run_id, size)
        return deleted

    def purge_leftovers(self) -> list[int]:
        """Delete rows left behind by retired or failed runs (a process that stopped while
        deleting them). Returns the ids of the runs that had any."""
        with self.engine.connect() as conn:
            candidates = [
                int(r.id)
                for r in conn.execute(
                    select(score_runs.c.id).where(score_runs.c.status.in_(("superseded", "failed")))
                )
            ]
            left = [
                run_id
                for run_id in candidates
                if any(
                    self._holds_rows(conn, table, run_id)
                    for table in (patient_scores, cohort_members)
                )
            ]
        if left:
            self.purge_rows(left)
        return left

    @staticmethod
    def _holds_rows(conn: Connection, table: Table, run_id: int) -> bool:
        """True if run ``run_id`` still has rows of ``table`` (on PostgreSQL: its own table,
        attached or not, even empty)."""
        if partitions.partitioned(conn, table):
            return partitions.exists(conn, table, run_id)
        return (
            conn.execute(select(table.c.run_id).where(table.c.run_id == run_id).limit(1)).first()
            is not None
        )

    def recover_abandoned(self) -> list[int]:
        """Fail staging runs whose process has died (on this host) or that are stale (from
        another host), deleting their rows. Returns their ids."""
        host = socket.gethostname()[:200]
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            staging = conn.execute(
                select(
                    score_runs.c.id, score_runs.c.host, score_runs.c.pid, score_runs.c.created_at
                ).where(score_runs.c.status == "staging")
            ).all()
        abandoned = []
        for run in staging:
            if run.host == host:
                dead = run.pid is None or (run.pid != os.getpid() and not _process_alive(run.pid))
            else:
                age = now - (utc(run.created_at) or now)
                dead = age.total_seconds() > self.FOREIGN_STAGING_TIMEOUT_HOURS * 3600
            if dead:
                abandoned.append(int(run.id))
        for run_id in abandoned:
            self.fail(run_id, "abandoned: the process stopped before the run was published")
        self.purge_leftovers()
        return abandoned

    def prune(self, *, keep_months: int) -> list[int]:
        """Delete runs (and their rows) for months more than ``keep_months`` before the newest
        published month. Returns the ids deleted; the access log is never pruned here.

        One short transaction retires the old runs, so no reader sees them; their rows then
        go a chunk per transaction (``purge_rows``), and the runs' own records last. A prune
        that stops part way is finished by the next one."""
        if keep_months < 1:
            raise UsageError("keep_months must be at least 1", hint="keep at least one month")
        latest = self.latest()
        if latest is None:
            return []
        cutoff = add_months(latest.month, 1 - keep_months)
        with self.engine.begin() as conn:
            old = [
                int(r.id)
                for r in conn.execute(
                    select(score_runs.c.id).where(
                        score_runs.c.month < cutoff, score_runs.c.status != "staging"
                    )
                )
            ]
            if old:
                conn.execute(
                    update(score_runs)
                    .where(score_runs.c.id.in_(old), score_runs.c.status == "published")
                    .values(status="superseded")
                )
        if old:
            self.purge_rows(old)
            with self.engine.begin() as conn:
                conn.execute(delete(cohort_outcomes).where(cohort_outcomes.c.run_id.in_(old)))
                conn.execute(delete(score_runs).where(score_runs.c.id.in_(old)))
        return old

    # ---- finding runs -------------------------------------------------------------------

    def status(self, run_id: int) -> str | None:
        """A run's status, or None if there is no such run."""
        with self.engine.connect() as conn:
            status = conn.execute(
                select(score_runs.c.status).where(score_runs.c.id == run_id)
            ).scalar()
        return None if status is None else str(status)

    def _require_status(self, run_id: int, expected: str) -> None:
        status = self.status(run_id)
        if status != expected:
            raise ConflictError(f"run {run_id} is {status}, not {expected}")

    def latest_two(self) -> tuple[RunInfo | None, RunInfo | None]:
        """The published runs of the latest month and of the month before it, in one query
        (a month has at most one published run)."""
        with self.engine.connect() as conn:
            ids = [int(i) for i in conn.execute(_LATEST_TWO_RUN_IDS).scalars()]
        runs = [self._published(i) for i in ids]
        return (runs[0] if runs else None, runs[1] if len(runs) > 1 else None)

    def _published(self, run_id: int) -> RunInfo | None:
        """A published run's metadata, parsed once per process: a run's row does not change
        after it is published (its JSON details are large, and the API reads them on every
        request). Only the id lookup goes to the database each time."""
        cached = self._cache.get(run_id)
        if cached is None:
            cached = self.get(run_id)
            if cached is not None and cached.status == "published":
                self._cache[run_id] = cached
        return cached

    def latest(self) -> RunInfo | None:
        """The published run of the latest month."""
        return self.latest_two()[0]

    def for_month(self, month: date) -> RunInfo | None:
        """The published run of ``month``, if any."""
        return self._one(
            select(score_runs)
            .where(score_runs.c.status == "published", score_runs.c.month == month)
            .order_by(score_runs.c.id.desc())
            .limit(1)
        )

    def previous(self, month: date) -> RunInfo | None:
        """The published run of the latest month before ``month``."""
        return self._one(
            select(score_runs)
            .where(score_runs.c.status == "published", score_runs.c.month < month)
            .order_by(score_runs.c.month.desc(), score_runs.c.id.desc())
            .limit(1)
        )

    def get(self, run_id: int) -> RunInfo | None:
        """The run with this id, whatever its status, or None."""
        return self._one(select(score_runs).where(score_runs.c.id == run_id))

    def _one(self, query: Any) -> RunInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return run_from_row(row) if row else None

    def all(self) -> list[RunInfo]:
        """Every run, oldest first, whatever its status."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(score_runs).order_by(score_runs.c.id)).mappings().all()
        return [run_from_row(r) for r in rows]

    def row_counts(self, run_id: int) -> dict[str, int]:
        """Rows a run holds in each table (tests and diagnostics)."""
        with self.engine.connect() as conn:
            return {
                t.name: int(
                    conn.execute(
                        select(func.count()).select_from(t).where(t.c.run_id == run_id)
                    ).scalar_one()
                )
                for t in (patient_scores, cohort_members)
            }
