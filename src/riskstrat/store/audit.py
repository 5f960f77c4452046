"""The audit trail: every patient-level read, written before its data is returned.

``access_log`` holds one row per read with its patients (keyed-hash pseudonyms of NHS numbers
by default), committed with the record; ``access_patients`` indexes them by patient for "who
has looked at my record?", filled in bulk afterwards (``AuditRepository.index``). The API
queues its records for one writer thread that commits them in batches (:class:`AccessWriter`).
"""

from __future__ import annotations

import functools
import hmac
import json
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, text, update

from riskstrat.data.contract import IdentifierKind
from riskstrat.errors import StoreError
from riskstrat.store.engine import db_time, mark
from riskstrat.store.records import AccessRecord, check_kind, from_json, utc
from riskstrat.store.schema import access_log, access_patients


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
    check_kind(identifier_kind)
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


def _insert_access(conn: Any, records: Sequence[AccessRecord]) -> None:
    # One row per read, its patients with it: appended at the end of the table, so a commit
    # touches a page or two whatever the number of patients. They reach the per-patient
    # index (access_patients) later, in bulk and in order (``AuditRepository.index``).
    # The driver's own executemany, as plain tuples: this runs once per batch on the
    # writer thread, which shares the interpreter with the requests it is holding up.
    names = (
        "at", "actor", "role", "organisations", "route", "request_id", "purpose",
        "n_patients", "patients", "patients_pending", "identifier_kind",
    )  # fmt: skip
    conn.exec_driver_sql(
        f"INSERT INTO {access_log.name} ({', '.join(names)}) "
        f"VALUES ({', '.join([mark(conn)] * len(names))})",
        [
            (
                db_time(r.at, conn), r.actor, r.role,
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
        conn.exec_driver_sql(
            f"INSERT INTO {access_patients.name} (patient, access_id) "
            f"VALUES ({mark(conn)}, {mark(conn)}) ON CONFLICT DO NOTHING",
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
    every record in it fails with the error and nothing of the batch is kept. A caller may
    stop waiting and cancel its future: a record cancelled before its batch starts is not
    written; one already in a transaction is (the trail may then hold a refused read).
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
            future.set_exception(
                StoreError(
                    "the audit writer is closed",
                    hint="the service is shutting down; send the request again once it is up",
                )
            )
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
            # A caller that gave up waiting (its request was refused, with no data) may have
            # cancelled its record: it is not written, and its future is left alone.
            batch = [(record, future) for record, future in batch
                     if future.set_running_or_notify_cancel()]  # fmt: skip
            if not batch:
                continue
            try:
                with self._engine.begin() as conn:
                    _insert_access(conn, [record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for _, future in batch:
                    future.set_result(None)


class AuditRepository:
    """Writes and reads of the audit trail (``access_log``, ``access_patients``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer: AccessWriter | None = None
        self._writer_lock = threading.Lock()

    def record(self, record: AccessRecord) -> None:
        """Write an access record (``access_record``) in its own transaction, committed before
        returning; raises if it cannot. For one-off reads such as exports; the API queues
        its records with ``submit``."""
        with self.engine.begin() as conn:
            _insert_access(conn, [record])

    def submit(self, record: AccessRecord) -> Future[None]:
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

    def close(self) -> None:
        """Commit the queued records and stop the writer (if one was started)."""
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def index(self, *, records_per_transaction: int = 200) -> int:
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

    def records(
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
        query first brings the per-patient index up to date (``index``)."""
        query = select(*[c for c in access_log.c if c.name != "patients_pending"])
        if actor:
            query = query.where(access_log.c.actor == actor)
        if identifier_kind is not None:
            check_kind(identifier_kind)
            query = query.where(access_log.c.identifier_kind == identifier_kind)
        if patient:
            self.index()  # the per-patient index must cover every committed record
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
            record["at"] = utc(record["at"])
            stored = record["patients"]
            record["patients"] = sorted(
                stored.split() if stored is not None else patients.get(record["id"], [])
            )
            record["organisations"] = from_json(record["organisations"])
            out.append(record)
        return out
