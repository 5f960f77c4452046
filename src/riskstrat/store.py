"""The serving store: the only module that talks to the serving database (SQLAlchemy).

A published run is one row in ``score_runs`` plus one row per person in ``patient_scores``,
written in a single transaction: readers see the previous run or the whole new one, never
part of it. ``access_log`` records every patient-level read, with NHS numbers pseudonymised
by a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
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
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url

metadata = MetaData()

score_runs = Table(
    "score_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("month", Date, nullable=False),
    Column("extract_date", Date),  # unknown for a run that failed before reading the extract
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50), nullable=False),
    Column("status", String(20), nullable=False),  # published | failed
    Column("n_scored", Integer, nullable=False),
    Column("n_type1_opt_outs_excluded", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("details", JSON),  # counts only: rejects per table, model metrics
)

patient_scores = Table(
    "patient_scores",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("nhs_number", String(10), primary_key=True),
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("risk", Float, nullable=False),
    Column("percentile", Float, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),
    Index("ix_patient_scores_run_rank", "run_id", "rank"),
    Index("ix_patient_scores_run_pcn_rank", "run_id", "pcn_code", "rank"),
    Index("ix_patient_scores_run_practice_rank", "run_id", "practice_code", "rank"),
)

access_log = Table(
    "access_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("route", String(200), nullable=False),
    Column("request_id", String(64)),
    Column("purpose", String(200)),
    Column("n_patients", Integer, nullable=False),
    Column("patients", JSON, nullable=False),  # keyed-hash pseudonyms, never NHS numbers
)


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


@dataclass(frozen=True)
class PatientScore:
    nhs_number: str
    practice_code: str
    pcn_code: str
    risk: float
    percentile: float
    rank: int
    reasons: list[dict[str, Any]]


SCORE_COLUMNS = ("nhs_number", "practice_code", "pcn_code", "risk", "percentile", "rank", "reasons")


def pseudonymise(nhs_number: str, key: str) -> str:
    """HMAC-SHA256 of an NHS number (a plain hash is reversible by enumeration)."""
    return hmac.new(key.encode(), nhs_number.encode(), hashlib.sha256).hexdigest()


class Store:
    """The serving database behind the API."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or _make_engine(url)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- writing ------------------------------------------------------------------------

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
        chunk_rows: int = 10_000,
    ) -> int:
        """Write a run and all its scores in one transaction; returns the run id.

        ``scores`` has ``SCORE_COLUMNS`` (``reasons`` as lists of dicts).
        """
        missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
        if missing:
            raise ValueError(f"scores lack columns: {', '.join(missing)}")
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            run_id = conn.execute(
                insert(score_runs).values(
                    month=month,
                    extract_date=extract_date,
                    model_name=model_name,
                    model_version=model_version,
                    status="published",
                    n_scored=len(scores),
                    n_type1_opt_outs_excluded=n_type1_opt_outs_excluded,
                    created_at=started_at,
                    published_at=now,
                    duration_seconds=(now - started_at).total_seconds(),
                    details=details,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            for chunk in _chunks(scores, chunk_rows):
                conn.execute(insert(patient_scores), [{**r, "run_id": run_id} for r in chunk])
        return int(run_id)

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
        """Keep a record of a run that did not publish, with why (no patient data)."""
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
                    details={"error": reason[:2000]},
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        return int(run_id)

    def record_access(
        self,
        *,
        actor: str,
        route: str,
        nhs_numbers: Sequence[str],
        key: str,
        request_id: str | None = None,
        purpose: str | None = None,
    ) -> None:
        """Write an access record and commit it before returning."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(access_log).values(
                    at=datetime.now(UTC),
                    actor=actor,
                    route=route,
                    request_id=request_id,
                    purpose=purpose[:200] if purpose else None,
                    n_patients=len(nhs_numbers),
                    patients=[pseudonymise(n, key) for n in nhs_numbers],
                )
            )

    # ---- reading ------------------------------------------------------------------------

    def latest_run(self) -> RunInfo | None:
        """The most recently published run (by month, then publication)."""
        query = (
            select(score_runs)
            .where(score_runs.c.status == "published")
            .order_by(score_runs.c.month.desc(), score_runs.c.id.desc())
            .limit(1)
        )
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
    ) -> tuple[int, list[PatientScore]]:
        """One page of a run's people, highest risk first, and the total that match."""
        where = [patient_scores.c.run_id == run_id]
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

    def access_records(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(access_log).order_by(access_log.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True


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
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _chunks(frame: pd.DataFrame, size: int) -> Iterable[list[dict[str, Any]]]:
    records = frame[list(SCORE_COLUMNS)]
    for start in range(0, len(records), size):
        part = records.iloc[start : start + size]
        yield [
            {
                "nhs_number": str(nhs),
                "practice_code": str(practice),
                "pcn_code": str(pcn),
                "risk": float(risk),
                "percentile": float(percentile),
                "rank": int(rank),
                "reasons": reasons,
            }
            for nhs, practice, pcn, risk, percentile, rank, reasons in zip(
                part["nhs_number"].tolist(),
                part["practice_code"].tolist(),
                part["pcn_code"].tolist(),
                part["risk"].tolist(),
                part["percentile"].tolist(),
                part["rank"].tolist(),
                part["reasons"].tolist(),
                strict=True,
            )
        ]


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
    )
