"""A read whose audit record cannot be committed is refused fast (503 problem+json, no data),
and no log line carries the database's statement, its values or an NHS number."""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from riskstrat.config import Settings
from riskstrat.service.app import create_app
from riskstrat.store import Store
from riskstrat.store import audit as store_module
from riskstrat.store.engine import make_engine
from tests.support.auth import bearer
from tests.support.postgres import postgres_url
from tests.support.world import PCNS, key_for, publish_world

HINT = "try again shortly; if it persists, check the serving database"


@pytest.fixture
def logs(caplog):
    """Every record of every logger, riskstrat's too (which may not propagate)."""
    ours = logging.getLogger("riskstrat")
    ours.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    yield caplog
    ours.removeHandler(caplog.handler)


def _database_error(nhs_number: str) -> OperationalError:
    """An error like SQLAlchemy's own, its statement and parameters in its text."""
    error = OperationalError(
        "INSERT INTO access_log (actor, patients) VALUES (?, ?)",
        ("someone", nhs_number),
        sqlite3.OperationalError("database is locked"),
    )
    assert nhs_number in str(error)  # what a traceback would print
    return error


def _person(served) -> str:
    scores = served["scores"]
    return str(scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number)


def test_an_audit_error_is_a_503_problem_with_no_data_and_logs_without_identifiers(
    served, monkeypatch, logs
):
    client, person = served["client"], _person(served)

    def broken(conn, records):
        raise _database_error(person)

    monkeypatch.setattr(store_module, "_insert_access", broken)
    reads = [
        # async (patient risk), then sync (FHIR, cohort page) waits on the writer
        (f"/api/v1/patients/{person}/risk", "care_coordinator",
         "GET /api/v1/patients/{nhs_number}/risk"),
        (f"/fhir/RiskAssessment?patient={person}", "care_coordinator", "GET /fhir/RiskAssessment"),
        (f"/api/v1/cohorts/falls_review?pcn={PCNS[0]}&format=csv", "pcn_team", None),
    ]  # fmt: skip
    for path, role, route in reads:
        started = time.monotonic()
        response = client.get(path, headers=bearer(key_for(role, PCNS[0])))
        assert time.monotonic() - started < 2
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 503 and problem["hint"] == HINT
        assert "audit" in problem["detail"]
        assert person not in response.text and "999" not in response.text
        failed = [r for r in logs.records if r.getMessage() == "audit write failed"]
        assert failed and failed[-1].error == "OperationalError"  # type: ignore[attr-defined]
        if route is not None:
            assert failed[-1].route == route  # type: ignore[attr-defined]
        assert all(r.exc_info is None for r in failed)
    # What the service logged (the test's HTTP client logs the URLs it asked for).
    text = "".join(
        logging.Formatter().format(r) + str(r.__dict__)
        for r in logs.records
        if not r.name.startswith("httpx")
    )
    assert person not in text
    assert "INSERT" not in text and "parameters" not in text.lower()


@contextmanager
def _audit_locked(settings: Settings):
    """Another connection holds the write lock of the audit table until the block ends."""
    url = settings.serving_database_url
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE access_log IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def quick(request, tmp_path):
    """A served world whose reads wait at most half a second for their audit record."""
    urls = postgres_url() if request.param == "postgresql" else None
    settings = Settings(
        home=tmp_path / "home", database_url=next(urls) if urls else None,
        audit_timeout_seconds=0.5,
    )  # fmt: skip
    made = publish_world(settings)
    with TestClient(create_app(settings)) as client:
        yield {"client": client, **made}
    if urls is not None:
        next(urls, None)


@pytest.mark.slow  # waits out the audit timeout on a real lock
def test_a_locked_store_refuses_reads_within_the_timeout_and_recovers(quick):
    client, settings, person = quick["client"], quick["settings"], _person(quick)
    coordinator = bearer(key_for("care_coordinator", PCNS[0]))
    with _audit_locked(settings):
        for n, path in enumerate(
            [f"/api/v1/patients/{person}/risk", f"/fhir/RiskAssessment?patient={person}"]
        ):
            started = time.monotonic()
            response = client.get(path, headers={**coordinator, "X-Request-ID": f"refused-{n}"})
            assert time.monotonic() - started < 3  # not the database's 10 s busy wait
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert person not in response.text and response.json()["hint"] == HINT
    # The writer survived its callers giving up: the next read is served and recorded.
    served = client.get(f"/api/v1/patients/{person}/risk",
                        headers={**coordinator, "X-Request-ID": "served-0001"})  # fmt: skip
    assert served.status_code == 200 and served.json()["nhs_number"] == person
    store = Store(settings.serving_database_url)
    ids = [r["request_id"] for r in store.audit.records()]
    store.dispose()
    assert ids[-1] == "served-0001"
    # A read refused while its record still waited in the queue is not recorded (the first
    # refused read's record may be: it was already in the transaction the lock held up).
    assert "refused-1" not in ids


def test_the_engine_never_puts_values_into_error_text(settings, tmp_path):
    engine = make_engine(settings.serving_database_url)
    with pytest.raises(OperationalError) as raised, engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (?)", ("9990000018",))
    engine.dispose()
    assert "9990000018" not in str(raised.value)
    assert "hidden" in str(raised.value)


def test_an_unhandled_database_error_is_logged_by_the_server_as_its_type_only(served, monkeypatch):
    """Through the real server (uvicorn, its own logging set up as `riskstrat serve` has it):
    a database error no route handles is a 500, and uvicorn's "Exception in ASGI application"
    line names the error's type with no traceback, statement or values."""
    settings, person = served["settings"], _person(served)
    app = create_app(settings)

    def broken(*_args, **_kwargs):
        raise _database_error(person)

    monkeypatch.setattr(app.state.store.runs, "all", broken)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    seen: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(catcher)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/runs", headers=bearer(key_for("analyst", PCNS[0]))
        )
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=10)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(catcher)
        server.should_exit = True
        thread.join(timeout=10)
    assert answered.value.code == 500 and person not in answered.value.read().decode()
    [line] = [r for r in seen if "Exception in ASGI application" in r.getMessage()]
    printed = logging.Formatter().format(line)
    assert "(OperationalError)" in printed
    assert person not in printed and "INSERT" not in printed and "Traceback" not in printed
