"""The serving store: the only module that talks to the serving database (SQLAlchemy).

A monthly run is one row in ``score_runs`` plus its people in ``patient_scores`` and its
cohorts in ``cohort_members``. It is written in two phases. Rows are staged under a run whose
status is ``staging``, which no reader ever sees; then one short transaction switches it to
``published`` and retires the month's previous run. Readers therefore see the previous
complete run or the new complete one, never a mix, and a process killed at any moment leaves
only an invisible staging run, which the next run clears away. A retired run's rows are
deleted after the switch, a chunk of people per transaction, so the switch stays short.
``access_log`` records every patient-level read, with NHS numbers pseudonymised by a keyed
hash.

A run's people are identified by NHS numbers or, when its extract says so (contract version 2's
``identifier_kind``), by pseudonyms such as an OMOP ``person_id``. The ``nhs_number`` columns
keep their name for compatibility and hold either; the run says which
(``RunInfo.identifier_kind``), and so does every access record.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from riskstrat.data.contract import IDENTIFIER_KINDS, IdentifierKind
from riskstrat.errors import ConflictError, StoreError

_log = logging.getLogger(__name__)

metadata = MetaData()

score_runs = Table(
    "score_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("month", Date, nullable=False),
    Column("extract_date", Date),  # unknown for a run that failed before reading the extract
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50), nullable=False),
    # staging -> published -> superseded (a rerun of the month replaced it); or -> failed
    Column("status", String(20), nullable=False),
    Column("n_scored", Integer, nullable=False),
    Column("n_type1_opt_outs_excluded", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("host", String(200)),  # with pid: lets a later run tell an abandoned staging run
    Column("pid", Integer),
    Column("details", JSON),  # counts only: rejects per table, cohort sizes, model metrics
    Index("ix_score_runs_status_month", "status", "month"),
)

patient_scores = Table(
    "patient_scores",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    # An NHS number, or a pseudonym of up to 64 characters in a pseudonymous run (0004).
    Column("nhs_number", String(64), primary_key=True),
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("risk", Float, nullable=False),
    Column("percentile", Float, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),
    # every reason group's size in percentage points: what "what changed" compares
    Column("contributions", JSON, nullable=False),
    Index("ix_patient_scores_run_rank", "run_id", "rank"),
    Index("ix_patient_scores_run_pcn_rank", "run_id", "pcn_code", "rank"),
    Index("ix_patient_scores_run_practice_rank", "run_id", "practice_code", "rank"),
)

cohort_members = Table(
    "cohort_members",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("intervention", String(50), primary_key=True),
    Column("nhs_number", String(64), primary_key=True),  # or a pseudonym, as in patient_scores
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("risk", Float, nullable=False),
    Column("expected_benefit", Float),  # expected admissions avoided; null with no effect
    Column("rank", Integer, nullable=False),
    Column("criteria", JSON, nullable=False),
    # The member's API item as JSON text, written at publication (migration 0002); null in
    # runs published before it, which the API then builds at request time.
    Column("item_json", Text),
    Index("ix_cohort_members_run_int_rank", "run_id", "intervention", "rank"),
    Index("ix_cohort_members_run_int_pcn_rank", "run_id", "intervention", "pcn_code", "rank"),
    Index(
        "ix_cohort_members_run_int_practice_rank", "run_id", "intervention", "practice_code", "rank"
    ),
    Index("ix_cohort_members_run_nhs", "run_id", "nhs_number"),
)

cohort_outcomes = Table(
    "cohort_outcomes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), nullable=False),
    Column("intervention", String(50), nullable=False),
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("delivered", Boolean, nullable=False),
    Column("people", Integer, nullable=False),
    Column("expected", Float, nullable=False),
    Column("observed", Integer, nullable=False),
    Column("outcome_extract_date", Date, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Index("ix_cohort_outcomes_run", "run_id"),
)

access_log = Table(
    "access_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(40)),
    Column("organisations", JSON),  # the caller's PCN codes (or ["*"])
    Column("route", String(200), nullable=False),
    Column("request_id", String(64)),
    Column("purpose", String(200)),
    Column("n_patients", Integer, nullable=False),
    # The read's patients, space-separated: keyed-hash pseudonyms by default, NHS numbers only
    # if the deployment chooses. Written with the record, in the same commit, so the record is
    # whole from the start. (Null for records made before revision 0003: theirs are only in
    # access_patients.)
    Column("patients", Text),
    # True until the patients are also in access_patients (see ``Store.index_access``).
    Column("patients_pending", Boolean, nullable=False, server_default=false()),
    # What the patients were read by: "nhs_number" or "pseudonym" (revision 0004; earlier
    # records, all of NHS numbers, read as "nhs_number").
    Column("identifier_kind", String(20), nullable=False, server_default="nhs_number"),
    Index("ix_access_log_actor_at", "actor", "at"),
    Index(
        "ix_access_log_pending",
        "id",
        sqlite_where=text("patients_pending"),
        postgresql_where=text("patients_pending"),
    ),
)

#: The patients of each access, one row each, keyed by patient first, so "who has looked at my
#: record?" is one index range. An index of ``access_log.patients``, filled in bulk after the
#: fact: a cohort page's hundred patients land at a hundred random places in this b-tree, and
#: writing them with every read cost a busy service more than the rest of the request.
access_patients = Table(
    "access_patients",
    metadata,
    # A keyed hash (32 characters), or the identifier itself where the deployment records
    # them: up to 64 characters for a pseudonym (0004).
    Column("patient", String(64), primary_key=True),
    Column("access_id", Integer, ForeignKey("access_log.id", ondelete="CASCADE"),
           primary_key=True),
    sqlite_with_rowid=False,
)  # fmt: skip

#: Browser sessions of the web pages: the cookie holds a random token, this table its hash.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("pcns", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

api_users = Table(
    "api_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(40), nullable=False),
    Column("pcns", JSON, nullable=False),  # PCN codes in scope, or ["*"] for all
    Column("key_prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),  # SHA-256 of the whole key
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


# Statements on the API's hot paths, built once: SQLAlchemy then skips rebuilding them on
# every request (a measurable share of a request's time on 2 cores).
_USER_BY_PREFIX = select(api_users).where(api_users.c.key_prefix == bindparam("prefix"))
_LATEST_TWO_RUN_IDS = (
    select(score_runs.c.id)
    .where(score_runs.c.status == "published")
    .order_by(score_runs.c.month.desc(), score_runs.c.id.desc())
    .limit(2)
)
#: One person's cohort memberships in a run, without the stored API items (large).
#: No ORDER BY: it would tempt SQLite into the (run, intervention, rank) index and a scan of
#: the whole run instead of the (run, NHS number) lookup.
_PATIENT_MEMBERSHIPS = select(*[c for c in cohort_members.c if c.name != "item_json"]).where(
    cohort_members.c.run_id == bindparam("run_id"),
    cohort_members.c.nhs_number == bindparam("nhs_number"),
)
_PATIENT_IN_RUNS = select(patient_scores).where(
    patient_scores.c.run_id.in_(bindparam("run_ids", expanding=True)),
    patient_scores.c.nhs_number == bindparam("nhs_number"),
)


class StoreSchemaError(StoreError):
    """The database holds tables from another version of riskstrat."""


class RunInProgressError(ConflictError):
    """Another live process is staging a run for the same month."""


@dataclass(frozen=True)
class RunInfo:
    id: int
    month: date
    extract_date: date | None
    model_name: str
    model_version: str
    status: str
    n_scored: int
    n_type1_opt_outs_excluded: int
    created_at: datetime
    published_at: datetime | None
    duration_seconds: float | None
    details: dict[str, Any]

    @property
    def identifier_kind(self) -> IdentifierKind:
        """What the run's ``nhs_number`` columns hold: NHS numbers or pseudonyms.

        Kept in ``details``, written with the run in the publishing transaction, rather than
        in a column of its own: like the rest of a run's metadata it is read with the run's
        row (parsed once per process, see ``Store._published``) and never filtered on in SQL,
        so a column would add a migration of ``score_runs`` and nothing else. Runs published
        before it was recorded hold NHS numbers."""
        return "pseudonym" if self.details.get("identifier_kind") == "pseudonym" else "nhs_number"


@dataclass(frozen=True)
class PatientScore:
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    percentile: float
    rank: int
    reasons: list[dict[str, Any]]
    contributions: dict[str, float]


class CohortRowRaw(NamedTuple):
    """A cohort row with its criteria and reasons as stored JSON text (see
    ``Store.intervention_page_raw``)."""

    rank: int
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    expected_benefit: float | None
    criteria_json: str
    percentile: float
    reasons_json: str


@dataclass(frozen=True)
class CohortMember:
    intervention: str
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    expected_benefit: float | None
    rank: int
    criteria: list[str]


SCORE_COLUMNS = (
    "nhs_number", "practice_code", "pcn_code", "risk", "percentile", "rank", "reasons",
    "contributions",
)  # fmt: skip
COHORT_COLUMNS = (
    "intervention", "nhs_number", "practice_code", "pcn_code", "risk", "expected_benefit",
    "rank", "criteria",
)  # fmt: skip
OUTCOME_COLUMNS = (
    "intervention", "practice_code", "pcn_code", "delivered", "people", "expected", "observed",
)  # fmt: skip


@functools.lru_cache(maxsize=4)
def _keyed_hmac(key: str) -> hmac.HMAC:
    return hmac.new(key.encode(), digestmod="sha256")


def pseudonymise(nhs_number: str, key: str) -> str:
    """HMAC-SHA256 of an NHS number, first 128 bits in hex (a plain hash is reversible by
    enumeration; 128 bits leave no collisions among a country's NHS numbers)."""
    # A copy of an HMAC already keyed: the same value as hmac.new(key, number).hexdigest(),
    # at a third of the cost (a cohort page hashes a hundred numbers per request).
    mac = _keyed_hmac(key).copy()
    mac.update(nhs_number.encode())
    return mac.hexdigest()[:32]


@dataclass(frozen=True)
class AccessRecord:
    """One patient-level read, ready to write: patients already pseudonymised."""

    at: datetime
    actor: str
    role: str | None
    organisations: list[str] | None
    route: str
    request_id: str | None
    purpose: str | None
    patients: list[str]
    #: What ``patients`` were read by: NHS numbers or pseudonyms.
    identifier_kind: IdentifierKind = "nhs_number"


def access_record(
    *,
    actor: str,
    route: str,
    nhs_numbers: Sequence[str],
    key: str,
    request_id: str | None = None,
    purpose: str | None = None,
    role: str | None = None,
    organisations: Sequence[str] | None = None,
    identify_patients: bool = False,
    identifier_kind: IdentifierKind = "nhs_number",
) -> AccessRecord:
    """An access record for ``nhs_numbers``: each patient once, as a keyed-hash pseudonym
    (or as the identifier itself when the deployment chooses ``identify_patients``).
    ``identifier_kind`` says whether they are NHS numbers or a pseudonymous run's pseudonyms."""
    _check_kind(identifier_kind)
    patients = list(
        dict.fromkeys(n if identify_patients else pseudonymise(n, key) for n in nhs_numbers)
    )
    return AccessRecord(
        at=datetime.now(UTC),
        actor=actor[:200],
        role=role,
        organisations=list(organisations) if organisations is not None else None,
        route=route,
        request_id=request_id,
        purpose=purpose[:200] if purpose else None,
        patients=patients,
        identifier_kind=identifier_kind,
    )


def _check_kind(identifier_kind: str) -> None:
    if identifier_kind not in IDENTIFIER_KINDS:
        raise ValueError("identifier_kind must be " + " or ".join(IDENTIFIER_KINDS))


def _insert_access(conn: Any, records: Sequence[AccessRecord]) -> None:
    # One row per read, its patients with it: appended at the end of the table, so a commit
    # touches a page or two whatever the number of patients. They reach the per-patient
    # index (access_patients) later, in bulk and in order (``Store.index_access``).
    # The driver's own executemany, as plain tuples: this runs once per batch on the
    # writer thread, which shares the interpreter with the requests it is holding up.
    names = (
        "at", "actor", "role", "organisations", "route", "request_id", "purpose",
        "n_patients", "patients", "patients_pending", "identifier_kind",
    )  # fmt: skip
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {access_log.name} ({', '.join(names)}) "
        f"VALUES ({', '.join([mark] * len(names))})",
        [
            (
                _db_time(r.at, conn), r.actor, r.role,
                None if r.organisations is None else json.dumps(r.organisations),
                r.route, r.request_id, r.purpose, len(r.patients), " ".join(r.patients),
                bool(r.patients), r.identifier_kind,
            )
            for r in records
        ],
    )  # fmt: skip


def _index_access_rows(conn: Any, rows: Sequence[Any]) -> None:
    """Copy pending records' patients into access_patients, in key order; a record indexed
    twice (two catch-ups at once) is harmless."""
    pairs = sorted((p, int(r.id)) for r in rows for p in (r.patients or "").split())
    if pairs:
        marks = "?, ?" if conn.dialect.paramstyle == "qmark" else "%s, %s"
        conn.exec_driver_sql(
            f"INSERT INTO {access_patients.name} (patient, access_id) VALUES ({marks}) "
            "ON CONFLICT DO NOTHING",
            pairs,
        )
    conn.execute(
        update(access_log)
        .where(access_log.c.id.in_([int(r.id) for r in rows]))
        .values(patients_pending=False)
    )


class AccessWriter:
    """One thread that commits queued access records in batches (group commit).

    Each record's future completes only after the transaction holding it has committed, so
    "committed before the response is sent" still holds for every caller. If a batch fails,
    every record in it fails with the error and nothing of the batch is kept.
    """

    #: Most records in one transaction; a cohort page carries up to a few hundred patients.
    MAX_BATCH = 64

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[tuple[AccessRecord, Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="riskstrat-audit", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, record: AccessRecord) -> Future[None]:
        future: Future[None] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the audit writer is closed"))
            return future
        self._queue.put((record, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                with self._engine.begin() as conn:
                    _insert_access(conn, [record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for _, future in batch:
                    future.set_result(None)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class Store:
    """The serving database behind the API."""

    #: A staging run from another machine is taken as abandoned after this long.
    FOREIGN_STAGING_TIMEOUT_HOURS = 24
    #: People whose rows one transaction deletes when a retired or failed run's rows are
    #: removed. Each transaction holds SQLite's single write lock, which the API's audit
    #: writes wait for (10 s at most): deleting 735,000 people's rows in one took 38 s.
    PURGE_CHUNK_PEOPLE = 20_000

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or _make_engine(url)
        self._run_cache: dict[int, RunInfo] = {}
        self._writer: AccessWriter | None = None
        self._writer_lock = threading.Lock()

    def create_schema(self) -> None:
        """Create the tables, or upgrade them, with the migrations (Alembic).

        Raises:
            StoreSchemaError: the database holds riskstrat tables made before migrations.
        """
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        existing = set(inspect(self.engine).get_table_names())
        if "score_runs" in existing and "alembic_version" not in existing:
            raise StoreSchemaError(
                "the serving store was made by an earlier riskstrat, before migrations; "
                "point RISKSTRAT_DATABASE_URL at a new database, or delete the local one "
                "(`make clean` removes the demo's)"
            )
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        head = ScriptDirectory.from_config(config).get_current_head()
        with self.engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    # ---- writing a run: begin, stage, publish (or fail) ---------------------------------

    def begin_run(
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
                    f"{live.pid}; wait for it or stop it"
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

    def stage_scores(self, run_id: int, scores: pd.DataFrame, *, chunk_rows: int = 10_000) -> None:
        """Add people to a staging run, one transaction per chunk."""
        self._stage(run_id, patient_scores, scores, SCORE_COLUMNS, chunk_rows)

    def stage_cohorts(
        self, run_id: int, members: pd.DataFrame, *, chunk_rows: int = 10_000
    ) -> None:
        """Add cohort members to a staging run, one transaction per chunk. An ``item_json``
        column (``listing.cohort_items_json``) is stored when the frame has one."""
        columns = [*COHORT_COLUMNS, *(["item_json"] if "item_json" in members.columns else [])]
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
        # The driver's own executemany with plain tuples, JSON columns encoded here (by
        # orjson, six times faster than json.dumps for a million people's reasons): SQLAlchemy's
        # per-row parameter handling cost more than SQLite's inserts.
        names = ["run_id", *columns]
        encode = [isinstance(table.c[c].type, JSON) for c in columns]
        marks = ", ".join(["?" if self.engine.dialect.paramstyle == "qmark" else "%s"] * len(names))
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})"
        for chunk in _tuples(frame, columns, chunk_rows, encode):
            with self.engine.begin() as conn:
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
        and the next ``begin_run`` finishes the job (``recover_abandoned``).

        ``identifier_kind`` (what the run's people are identified by) is recorded in the
        run's details, where ``RunInfo.identifier_kind`` reads it."""
        _check_kind(identifier_kind)
        with self.engine.begin() as conn:
            run = conn.execute(select(score_runs).where(score_runs.c.id == run_id)).mappings().one()
            if run["status"] != "staging":
                raise RuntimeError(f"run {run_id} is {run['status']}, not staging")
            n_scored = conn.execute(
                select(func.count())
                .select_from(patient_scores)
                .where(patient_scores.c.run_id == run_id)
            ).scalar_one()
            if expected_people is not None and n_scored != expected_people:
                raise RuntimeError(
                    f"run {run_id} staged {n_scored} people, expected {expected_people}"
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
            started = _utc(run["created_at"]) or now
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
        except Exception as exc:  # the run is published; leftovers go at the next begin_run
            _log.warning(
                "run %s is published; deleting the rows of the runs it replaced failed (%s)",
                run_id,
                type(exc).__name__,
            )
        info = self.run(run_id)
        assert info is not None
        return info

    def fail_run(self, run_id: int, reason: str) -> None:
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

    def purge_rows(self, run_ids: Sequence[int], *, chunk_people: int | None = None) -> int:
        """Delete the scores and cohort rows of retired or failed runs, ``chunk_people``
        people (default ``PURGE_CHUNK_PEOPLE``) per transaction. Returns the rows deleted.

        Published and staging runs are refused: their rows are read, or about to be."""
        size = int(chunk_people or self.PURGE_CHUNK_PEOPLE)
        if size < 1:
            raise ValueError("chunk_people must be at least 1")
        deleted = 0
        for run_id in run_ids:
            status = self.run_status(run_id)
            if status in ("published", "staging"):
                raise RuntimeError(f"run {run_id} is {status}; its rows are not deleted")
            for table in (cohort_members, patient_scores):
                chunk = (
                    select(table.c.nhs_number)
                    .where(table.c.run_id == run_id)
                    .order_by(table.c.nhs_number)
                    .limit(size)
                    .scalar_subquery()
                )
                while True:
                    with self.engine.begin() as conn:
                        gone = conn.execute(
                            delete(table).where(
                                table.c.run_id == run_id, table.c.nhs_number.in_(chunk)
                            )
                        ).rowcount
                    deleted += max(int(gone or 0), 0)
                    if not gone:
                        break
        return deleted

    def run_status(self, run_id: int) -> str | None:
        """A run's status, or None if there is no such run."""
        with self.engine.connect() as conn:
            status = conn.execute(
                select(score_runs.c.status).where(score_runs.c.id == run_id)
            ).scalar()
        return None if status is None else str(status)

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
                    conn.execute(
                        select(table.c.run_id).where(table.c.run_id == run_id).limit(1)
                    ).first()
                    for table in (patient_scores, cohort_members)
                )
            ]
        if left:
            self.purge_rows(left)
        return left

    def record_failed_run(
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
                age = now - (_utc(run.created_at) or now)
                dead = age.total_seconds() > self.FOREIGN_STAGING_TIMEOUT_HOURS * 3600
            if dead:
                abandoned.append(int(run.id))
        for run_id in abandoned:
            self.fail_run(run_id, "abandoned: the process stopped before the run was published")
        self.purge_leftovers()
        return abandoned

    def prune(self, *, keep_months: int) -> list[int]:
        """Delete runs (and their rows) for months more than ``keep_months`` before the newest
        published month. Returns the ids deleted; the access log is never pruned here.

        One short transaction retires the old runs, so no reader sees them; their rows then
        go a chunk per transaction (``purge_rows``), and the runs' own records last. A prune
        that stops part way is finished by the next one."""
        if keep_months < 1:
            raise ValueError("keep_months must be at least 1")
        latest = self.latest_run()
        if latest is None:
            return []
        year, month = divmod(latest.month.year * 12 + latest.month.month - 1 - keep_months + 1, 12)
        cutoff = date(year, month + 1, 1)
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

    def _require_status(self, run_id: int, expected: str) -> None:
        status = self.run_status(run_id)
        if status != expected:
            raise RuntimeError(f"run {run_id} is {status}, not {expected}")

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
        run_id = self.begin_run(
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
            self.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise
        return run_id

    def replace_outcomes(
        self, run_id: int, outcomes: pd.DataFrame, *, outcome_extract_date: date
    ) -> None:
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

    def record_access(self, record: AccessRecord) -> None:
        """Write an access record (``access_record``) in its own transaction, committed before
        returning; raises if it cannot. For one-off reads such as exports; the API queues
        its records with ``submit_access``."""
        with self.engine.begin() as conn:
            _insert_access(conn, [record])

    def submit_access(self, record: AccessRecord) -> Future[None]:
        """Queue an access record for the shared writer; the future completes once the record
        is committed, or fails with the database's error.

        Concurrent requests' records are committed together, one transaction per batch, so a
        busy service pays for one commit (and on SQLite one write lock) per batch instead of
        one per request. A caller must wait for its future before it returns any data.
        """
        with self._writer_lock:
            if self._writer is None:
                self._writer = AccessWriter(self.engine)
            writer = self._writer
        return writer.submit(record)

    # ---- API users ----------------------------------------------------------------------

    def add_user(
        self,
        *,
        name: str,
        role: str,
        pcns: Sequence[str],
        key_prefix: str,
        key_hash: str,
        expires_at: datetime,
        created_by: str,
    ) -> None:
        with self.engine.begin() as conn:
            taken = conn.execute(select(api_users.c.id).where(api_users.c.name == name)).first()
            if taken is not None:
                raise ValueError(f"a user called {name!r} already exists")
            conn.execute(
                insert(api_users).values(
                    name=name,
                    role=role,
                    pcns=list(pcns),
                    key_prefix=key_prefix,
                    key_hash=key_hash,
                    created_at=datetime.now(UTC),
                    created_by=created_by[:200],
                    expires_at=expires_at,
                )
            )

    def user_by_prefix(self, key_prefix: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(_USER_BY_PREFIX, {"prefix": key_prefix}).mappings().first()
        return _user(row) if row else None

    def users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_users).order_by(api_users.c.id)).mappings().all()
        return [_user(r) for r in rows]

    def add_session(
        self, *, token_hash: str, name: str, role: str, pcns: Sequence[str], expires_at: datetime
    ) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
            conn.execute(
                insert(web_sessions).values(
                    token_hash=token_hash, name=name, role=role, pcns=list(pcns),
                    created_at=now, expires_at=expires_at,
                )
            )  # fmt: skip

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """A live browser session, or None (unknown or expired)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(web_sessions).where(web_sessions.c.token_hash == token_hash))
                .mappings()
                .first()
            )
        if row is None:
            return None
        found = dict(row)
        found["pcns"] = list(_json(found["pcns"]) or [])
        expires = _utc(found["expires_at"])
        return found if expires is not None and expires > datetime.now(UTC) else None

    def end_session(self, token_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash))

    def revoke_user(self, name: str) -> bool:
        """Revoke a user's key now; False if there is no such active user."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_users)
                .where(api_users.c.name == name, api_users.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            conn.execute(delete(web_sessions).where(web_sessions.c.name == name))
        return bool(done.rowcount)

    # ---- reading ------------------------------------------------------------------------

    def latest_runs(self) -> tuple[RunInfo | None, RunInfo | None]:
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
        cached = self._run_cache.get(run_id)
        if cached is None:
            cached = self.run(run_id)
            if cached is not None and cached.status == "published":
                self._run_cache[run_id] = cached
        return cached

    def patient_in_runs(self, run_ids: Sequence[int], nhs_number: str) -> dict[int, PatientScore]:
        """One person's scores in several runs, by run id, in one query."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(_PATIENT_IN_RUNS, {"run_ids": list(run_ids), "nhs_number": nhs_number})
                .mappings()
                .all()
            )
        return {int(r["run_id"]): _score(r) for r in rows}

    def latest_run(self) -> RunInfo | None:
        """The published run of the latest month."""
        return self.latest_runs()[0]

    def run_for_month(self, month: date) -> RunInfo | None:
        """The published run of ``month``, if any."""
        return self._one_run(
            select(score_runs)
            .where(score_runs.c.status == "published", score_runs.c.month == month)
            .order_by(score_runs.c.id.desc())
            .limit(1)
        )

    def previous_run(self, month: date) -> RunInfo | None:
        """The published run of the latest month before ``month``."""
        return self._one_run(
            select(score_runs)
            .where(score_runs.c.status == "published", score_runs.c.month < month)
            .order_by(score_runs.c.month.desc(), score_runs.c.id.desc())
            .limit(1)
        )

    def run(self, run_id: int) -> RunInfo | None:
        return self._one_run(select(score_runs).where(score_runs.c.id == run_id))

    def _one_run(self, query: Any) -> RunInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _run(row) if row else None

    def runs(self) -> list[RunInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(score_runs).order_by(score_runs.c.id)).mappings().all()
        return [_run(r) for r in rows]

    def cohort_page(
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
        where = [patient_scores.c.run_id == run_id]
        if pcn_codes is not None:
            where.append(patient_scores.c.pcn_code.in_(list(pcn_codes)))
        if pcn_code:
            where.append(patient_scores.c.pcn_code == pcn_code)
        if practice_code:
            where.append(patient_scores.c.practice_code == practice_code)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(patient_scores).where(*where)
            ).scalar_one()
            rows = (
                conn.execute(
                    select(patient_scores)
                    .where(*where)
                    .order_by(patient_scores.c.rank)
                    .offset(offset)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return int(total), [_score(r) for r in rows]

    def intervention_page(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
    ) -> tuple[int, list[tuple[CohortMember, PatientScore]]]:
        """One page of an intervention's cohort in rank order, with each person's score and
        reasons, and the number of people in the (filtered) cohort."""
        m, s = cohort_members.c, patient_scores.c
        where = _cohort_filters(run_id, intervention, pcn_code, practice_code, pcn_codes)
        query = (
            select(
                cohort_members,
                patient_scores.c.percentile,
                patient_scores.c.reasons,
                patient_scores.c.rank.label("overall_rank"),
            )
            .join(
                patient_scores,
                (s.run_id == m.run_id) & (s.nhs_number == m.nhs_number),
            )
            .where(*where)
            .order_by(m.rank)
            .offset(offset)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(cohort_members).where(*where)
            ).scalar_one()
            rows = conn.execute(query).mappings().all()
        out = []
        for r in rows:
            member = _member(r)
            score = PatientScore(
                nhs_number=member.nhs_number,
                practice_code=member.practice_code,
                pcn_code=member.pcn_code,
                risk=member.risk,
                percentile=float(r["percentile"]),
                rank=int(r["overall_rank"]),
                reasons=list(_json(r["reasons"])),
                contributions={},  # not read for lists; see patient_score
            )
            out.append((member, score))
        return int(total), out

    def intervention_page_items(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
    ) -> tuple[int, list[tuple[str, str]]] | None:
        """A page of a cohort as the API items written at publication: the number of people
        in the (filtered) cohort, and ``(nhs_number, item_json)`` in rank order. ``None``
        for a run published before items were stored (use ``intervention_page_raw``)."""
        # Plain SQL through the driver: this is the cohort page's one query, and building and
        # compiling it with SQLAlchemy took three times as long as SQLite took to answer it.
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        where = f"run_id = {mark} AND intervention = {mark}"
        params: list[Any] = [run_id, intervention]
        if pcn_codes is not None:
            if not pcn_codes:
                return 0, []
            where += f" AND pcn_code IN ({', '.join([mark] * len(pcn_codes))})"
            params.extend(pcn_codes)
        if pcn_code:
            where += f" AND pcn_code = {mark}"
            params.append(pcn_code)
        if practice_code:
            where += f" AND practice_code = {mark}"
            params.append(practice_code)
        table = cohort_members.name
        with self.engine.connect() as conn:
            total = conn.exec_driver_sql(
                f"SELECT count(*) FROM {table} WHERE {where}", tuple(params)
            ).scalar_one()
            rows = [
                (str(n), j)
                for n, j in conn.exec_driver_sql(
                    f"SELECT nhs_number, item_json FROM {table} WHERE {where} "
                    f"ORDER BY rank LIMIT {mark} OFFSET {mark}",
                    (*params, limit, offset),
                ).all()
            ]
        if any(j is None for _, j in rows):
            return None
        return int(total), rows

    def intervention_page_raw(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        offset: int = 0,
        limit: int = 50,
        pcn_codes: Sequence[str] | None = None,
    ) -> tuple[int, list[CohortRowRaw]]:
        """``intervention_page`` for the API's hot path: criteria and reasons come back as the
        JSON text stored at publication, so a page can be written without decoding and
        re-encoding a hundred people's reasons."""
        m, s = cohort_members.c, patient_scores.c
        where = _cohort_filters(run_id, intervention, pcn_code, practice_code, pcn_codes)
        query = (
            select(
                m.rank,
                m.nhs_number,
                m.practice_code,
                m.pcn_code,
                m.risk,
                m.expected_benefit,
                cast(m.criteria, Text).label("criteria"),
                s.percentile,
                cast(s.reasons, Text).label("reasons"),
            )
            .join(patient_scores, (s.run_id == m.run_id) & (s.nhs_number == m.nhs_number))
            .where(*where)
            .order_by(m.rank)
            .offset(offset)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(cohort_members).where(*where)
            ).scalar_one()
            rows = [CohortRowRaw(*r) for r in conn.execute(query).all()]
        return int(total), rows

    def intervention_risks(
        self,
        run_id: int,
        intervention: str,
        *,
        pcn_code: str | None = None,
        practice_code: str | None = None,
        limit: int | None = None,
        pcn_codes: Sequence[str] | None = None,
    ) -> list[float]:
        """Risks of an intervention's cohort in rank order (for capacity summaries)."""
        m = cohort_members.c
        where = _cohort_filters(run_id, intervention, pcn_code, practice_code, pcn_codes)
        query = select(m.risk).where(*where).order_by(m.rank)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [float(r) for r in conn.execute(query).scalars()]

    def pcn_in_run(self, run_id: int, pcn_code: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(patient_scores.c.nhs_number)
                .where(patient_scores.c.run_id == run_id, patient_scores.c.pcn_code == pcn_code)
                .limit(1)
            ).first()
        return row is not None

    def cohort_sizes(self, run_id: int) -> dict[str, int]:
        m = cohort_members.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(m.intervention, func.count())
                .where(m.run_id == run_id)
                .group_by(m.intervention)
            ).all()
        return {str(k): int(v) for k, v in rows}

    def cohort_frame(self, run_id: int, intervention: str | None = None) -> pd.DataFrame:
        """A run's cohort members as a frame (for outcomes and exports)."""
        m = cohort_members.c
        query = select(cohort_members).where(m.run_id == run_id)
        if intervention:
            query = query.where(m.intervention == intervention)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(m.intervention, m.rank)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=["run_id", *COHORT_COLUMNS])
        return frame.drop(columns=["run_id"])

    def patient_memberships(self, run_id: int, nhs_number: str) -> list[CohortMember]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(_PATIENT_MEMBERSHIPS, {"run_id": run_id, "nhs_number": nhs_number})
                .mappings()
                .all()
            )
        return sorted((_member(r) for r in rows), key=lambda member: member.intervention)

    def patient_score(self, run_id: int, nhs_number: str) -> PatientScore | None:
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
        return _score(row) if row else None

    def patient_score_by_rank(self, run_id: int, rank: int) -> PatientScore | None:
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
        return _score(row) if row else None

    def outcomes(self, run_id: int) -> pd.DataFrame:
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

    def index_access(self, *, records_per_transaction: int = 200) -> int:
        """Copy the patients of records not yet indexed into access_patients; returns how
        many records it indexed.

        Runs before every query of the trail, so answers always cover every committed
        record. Small transactions keep the write lock short while the API is serving.
        """
        done = 0
        pending = (
            select(access_log.c.id, access_log.c.patients)
            .where(text("patients_pending"))
            .order_by(access_log.c.id)
            .limit(records_per_transaction)
        )
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(pending).all()
                if not rows:
                    return done
                _index_access_rows(conn, rows)
            done += len(rows)

    def access_records(
        self,
        *,
        actor: str | None = None,
        patient: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        identifier_kind: IdentifierKind | None = None,
    ) -> list[dict[str, Any]]:
        """Access records, oldest first, optionally for one actor, one patient (as stored:
        keyed hash or the identifier itself), reads by one kind of identifier (so a pseudonym
        is never taken for an NHS number with the same digits) and a time range. A patient
        query first brings the per-patient index up to date (``index_access``)."""
        query = select(*[c for c in access_log.c if c.name != "patients_pending"])
        if actor:
            query = query.where(access_log.c.actor == actor)
        if identifier_kind is not None:
            _check_kind(identifier_kind)
            query = query.where(access_log.c.identifier_kind == identifier_kind)
        if patient:
            self.index_access()  # the per-patient index must cover every committed record
            query = query.where(
                access_log.c.id.in_(
                    select(access_patients.c.access_id).where(access_patients.c.patient == patient)
                )
            )
        if since:
            query = query.where(access_log.c.at >= since)
        if until:
            query = query.where(access_log.c.at < until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(access_log.c.id).limit(limit)).mappings().all()
            # Records from before revision 0003 hold their patients only in access_patients.
            legacy = [r["id"] for r in rows if r["patients"] is None and r["n_patients"]]
            patients: dict[int, list[str]] = {i: [] for i in legacy}
            for start in range(0, len(legacy), 500):
                for access_id, one in conn.execute(
                    select(access_patients.c.access_id, access_patients.c.patient).where(
                        access_patients.c.access_id.in_(legacy[start : start + 500])
                    )
                ):
                    patients[access_id].append(one)
        out = []
        for r in rows:
            record = dict(r)
            record["at"] = _utc(record["at"])
            stored = record["patients"]
            record["patients"] = sorted(
                stored.split() if stored is not None else patients.get(record["id"], [])
            )
            record["organisations"] = _json(record["organisations"])
            out.append(record)
        return out

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

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True


def _cohort_filters(
    run_id: int,
    intervention: str,
    pcn_code: str | None,
    practice_code: str | None,
    pcn_codes: Sequence[str] | None,
) -> list[Any]:
    """WHERE conditions for one cohort of a run, narrowed to a PCN, a practice and a caller's
    scope (``pcn_codes``; None means every PCN)."""
    m = cohort_members.c
    where = [m.run_id == run_id, m.intervention == intervention]
    if pcn_codes is not None:
        where.append(m.pcn_code.in_(list(pcn_codes)))
    if pcn_code:
        where.append(m.pcn_code == pcn_code)
    if practice_code:
        where.append(m.practice_code == practice_code)
    return where


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers keep reading while a run publishes
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            # In WAL mode NORMAL still makes every commit atomic and durable across process
            # crashes and restarts; only a power cut can lose the last commits, and FULL costs
            # an fsync per request. The production store is PostgreSQL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _tuples(
    frame: pd.DataFrame, columns: Sequence[str], size: int, encode: Sequence[bool]
) -> Iterable[list[tuple[Any, ...]]]:
    """Plain-Python row tuples, in chunks (NaN becomes None; ``encode`` columns as JSON)."""
    part_cols = list(columns)
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size][part_cols]
        lists = []
        for c, as_json in zip(part_cols, encode, strict=True):
            if as_json:
                # orjson writes numpy numbers and NaN (as null) itself, however deep.
                values = part[c].tolist()
                lists.append([None if v is None else json_text(v) for v in values])
            else:
                lists.append(_column_values(part[c]))
        yield list(zip(*lists, strict=True))


def json_text(value: Any) -> str:
    """JSON text for a stored column: compact, UTF-8, any NaN inside written as null (valid
    JSON, which PostgreSQL's JSON type requires); read back by any JSON parser."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def _column_values(column: pd.Series) -> list[Any]:
    """A column as plain Python values: numbers by array operations (NaN as None), anything
    else value by value (``_plain``)."""
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
    if kind == "f":
        array = column.to_numpy()
        values = array.astype(object)
        values[np.isnan(array)] = None
        return list(values.tolist())
    if kind in "iub":
        return list(column.tolist())
    return _plain(column.tolist())


def _plain(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, float) and v != v:  # NaN
            out.append(None)
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(v)
    return out


def _db_time(value: datetime, conn: Any) -> Any:
    """A UTC time for the driver's own executemany: on SQLite, the text SQLAlchemy's DateTime
    writes there (so comparisons and reading back agree); elsewhere the datetime itself."""
    if conn.dialect.name == "sqlite":
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _utc(value: datetime | None) -> datetime | None:
    # SQLite keeps no time zone; everything here is written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _run(row: Any) -> RunInfo:
    details = row["details"]
    if isinstance(details, str):
        details = json.loads(details)
    return RunInfo(
        id=int(row["id"]),
        month=row["month"],
        extract_date=row["extract_date"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        status=row["status"],
        n_scored=int(row["n_scored"]),
        n_type1_opt_outs_excluded=int(row["n_type1_opt_outs_excluded"]),
        created_at=_utc(row["created_at"]) or datetime.now(UTC),
        published_at=_utc(row["published_at"]),
        duration_seconds=row["duration_seconds"],
        details=details or {},
    )


def _score(row: Any) -> PatientScore:
    reasons = row["reasons"]
    if isinstance(reasons, str):
        reasons = json.loads(reasons)
    return PatientScore(
        nhs_number=row["nhs_number"],
        practice_code=row["practice_code"],
        pcn_code=row["pcn_code"],
        risk=float(row["risk"]),
        percentile=float(row["percentile"]),
        rank=int(row["rank"]),
        reasons=list(reasons),
        contributions=dict(_json(row["contributions"]) or {}),
    )


def _user(row: Any) -> dict[str, Any]:
    user = dict(row)
    user["pcns"] = list(_json(user["pcns"]) or [])
    for k in ("created_at", "expires_at", "revoked_at"):
        user[k] = _utc(user[k])
    return user


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _member(row: Any) -> CohortMember:
    benefit = row["expected_benefit"]
    return CohortMember(
        intervention=row["intervention"],
        nhs_number=row["nhs_number"],
        practice_code=row["practice_code"],
        pcn_code=row["pcn_code"],
        risk=float(row["risk"]),
        expected_benefit=None if benefit is None else float(benefit),
        rank=int(row["rank"]),
        criteria=list(_json(row["criteria"]) or []),
    )
