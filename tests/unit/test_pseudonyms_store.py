"""Pseudonymous runs in the serving store: revision 0004 (SQLite and PostgreSQL), the kind a
run records, scoring a pseudonymous extract, and the pieces that label identifiers."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import inspect, update
from sqlalchemy.exc import DBAPIError

from riskstrat.cohorts.listing import (
    LISTING_COLUMNS,
    cohort_item_json,
    display_identifier,
    listing_frame,
)
from riskstrat.service.fhir import subject_identifier
from riskstrat.store import Store
from riskstrat.store.audit import access_record, pseudonymise
from riskstrat.store.schema import score_runs
from tests.support.extracts import P1, P2, P3, base_tables, write_extract
from tests.support.migrations import migrate
from tests.support.postgres import postgres_url, serving_store
from tests.support.runs import make_run

NOV, DEC = date(2026, 11, 1), date(2026, 12, 1)
KEY = "test-pseudonym-key"
LONGEST = "q" * 63 + "9"  # 64 characters, the longest pseudonym the contract allows


def _pseudonymous(scores: pd.DataFrame, cohorts: pd.DataFrame):
    """The same people, identified by pseudonyms (one of them 64 characters long)."""
    names = {n: (LONGEST if i == 0 else f"person-{i}.x") for i, n in enumerate(scores.nhs_number)}
    return (
        scores.assign(nhs_number=scores.nhs_number.map(names)),
        cohorts.assign(nhs_number=cohorts.nhs_number.map(names)),
    )


def _publish(store: Store, month: date, scores, cohorts, **kind) -> int:
    return store.runs.publish_run(
        month=month, extract_date=NOV, model_name="m", model_version="1", scores=scores,
        cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"note": "test"}, **kind,
    )  # fmt: skip


def _widths(store: Store) -> dict[str, int | None]:
    columns = {
        "patient_scores": "nhs_number", "cohort_members": "nhs_number",
        "access_patients": "patient",
    }  # fmt: skip
    found = {}
    for table, name in columns.items():
        column = next(c for c in inspect(store.engine).get_columns(table) if c["name"] == name)
        found[f"{table}.{name}"] = getattr(column["type"], "length", None)
    return found


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serving.db'}"
    else:
        yield from postgres_url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    yield from serving_store(request.param, tmp_path)


# ---- revision 0004 ---------------------------------------------------------------------------


def test_revision_0004_widens_identifiers_and_keeps_what_was_there(url):
    postgres = url.startswith("postgresql")
    old = Store(url)
    migrate(old, "upgrade", "0003")
    scores, cohorts = make_run(40, 1)
    earlier = _publish(old, NOV, scores, cohorts)
    with old.engine.begin() as conn:  # a run as published before runs recorded their kind
        conn.execute(update(score_runs).values(details={"note": "before 0004"}))
        conn.exec_driver_sql(  # a read as revision 0003 recorded it
            "INSERT INTO access_log (at, actor, route, n_patients, patients, patients_pending) "
            f"VALUES ('2026-11-30 09:00:00', 'before', 'GET /old', 1, "
            f"'{pseudonymise(scores.nhs_number[0], KEY)}', false)"
        )
    if postgres:  # before 0004, PostgreSQL refuses a 64-character pseudonym
        with pytest.raises(DBAPIError), old.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO patient_scores (run_id, nhs_number, practice_code, pcn_code, risk, "
                "percentile, rank, reasons, contributions) "
                f"VALUES ({earlier}, '{LONGEST}', 'A81001', 'U12345', 0.1, 1, 999, '[]', '{{}}')"
            )
        assert set(_widths(old).values()) == {10, 32}
    old.dispose()

    store = Store(url)
    try:
        store.create_schema()  # upgrades to head
        if postgres:
            assert set(_widths(store).values()) == {64}
        # What was there reads as it did: NHS numbers, and reads by NHS number.
        before = store.runs.get(earlier)
        assert before.identifier_kind == "nhs_number" and before.details == {"note": "before 0004"}
        assert store.scores.page(earlier, limit=1)[0] == 40
        [legacy] = store.audit.records()
        assert legacy["identifier_kind"] == "nhs_number" and legacy["actor"] == "before"
        # A pseudonymous run with a 64-character pseudonym goes in and comes out whole.
        named, members = _pseudonymous(*make_run(30, 2))
        run_id = _publish(store, DEC, named, members, identifier_kind="pseudonym")
        assert store.runs.latest().identifier_kind == "pseudonym"
        assert store.scores.patient(run_id, LONGEST).nhs_number == LONGEST
        assert LONGEST in set(store.cohorts.frame(run_id).nhs_number)
        assert [m.nhs_number for m in store.cohorts.memberships(run_id, LONGEST)] == [LONGEST]
        # A deployment that records identifiers themselves records 64 characters too.
        store.audit.record(
            access_record(
                actor="coordinator", route="GET /x", nhs_numbers=[LONGEST], key=KEY,
                identify_patients=True, identifier_kind="pseudonym",
            )
        )  # fmt: skip
        [read] = store.audit.records(patient=LONGEST)
        assert read["identifier_kind"] == "pseudonym" and read["patients"] == [LONGEST]
        assert store.audit.records(patient=LONGEST, identifier_kind="nhs_number") == []

        # Downgrading would lose what a read was by: refused, with a count and no identifier.
        with pytest.raises(RuntimeError, match="1 access records are reads by pseudonym") as e:
            migrate(store, "downgrade", "0003")
        assert LONGEST not in str(e.value)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM access_log WHERE identifier_kind = 'pseudonym'")
        if postgres:  # the pseudonyms no longer fit the old columns: refused, counts only
            too_long = r"\(patient_scores\.nhs_number: 21, cohort_members\.nhs_number: \d+\)"
            with pytest.raises(RuntimeError, match=too_long) as e:
                migrate(store, "downgrade", "0003")
            assert LONGEST not in str(e.value)
            with store.engine.begin() as conn:
                for table in ("cohort_members", "patient_scores"):
                    conn.exec_driver_sql(f"DELETE FROM {table} WHERE run_id = {run_id}")
        migrate(store, "downgrade", "0003")
        assert "identifier_kind" not in {
            c["name"] for c in inspect(store.engine).get_columns("access_log")
        }
        if postgres:
            assert set(_widths(store).values()) == {10, 32}
        migrate(store, "upgrade", "head")  # and back again
        assert [r["identifier_kind"] for r in store.audit.records()] == ["nhs_number"]
    finally:
        store.dispose()


# ---- the kind a run records ------------------------------------------------------------------


def test_a_run_records_its_identifier_kind(store):
    nhs = _publish(store, NOV, *make_run(20, 3))
    pseudo = _publish(store, DEC, *_pseudonymous(*make_run(20, 4)), identifier_kind="pseudonym")
    assert store.runs.get(nhs).identifier_kind == "nhs_number"
    assert store.runs.get(nhs).details["identifier_kind"] == "nhs_number"
    assert store.runs.get(pseudo).identifier_kind == "pseudonym"
    assert [r.identifier_kind for r in store.runs.all()] == ["nhs_number", "pseudonym"]
    assert store.runs.latest_two()[0].identifier_kind == "pseudonym"
    with pytest.raises(ValueError, match="identifier_kind must be"):
        _publish(store, DEC, *make_run(5, 5), identifier_kind="person_id")
    assert store.runs.latest().id == pseudo  # the refused run changed nothing


def test_access_records_say_what_they_read_by(store):
    store.audit.record(access_record(actor="a", route="GET /x", nhs_numbers=[P1], key=KEY))
    store.audit.record(
        access_record(
            actor="b", route="GET /x", nhs_numbers=[P1], key=KEY, identifier_kind="pseudonym"
        )
    )
    records = store.audit.records()
    assert [(r["actor"], r["identifier_kind"]) for r in records] == [
        ("a", "nhs_number"),
        ("b", "pseudonym"),
    ]
    hashed = pseudonymise(P1, KEY)
    assert [r["actor"] for r in store.audit.records(patient=hashed)] == ["a", "b"]
    assert [
        r["actor"] for r in store.audit.records(patient=hashed, identifier_kind="pseudonym")
    ] == ["b"]
    assert [r["actor"] for r in store.audit.records(identifier_kind="nhs_number")] == ["a"]
    with pytest.raises(ValueError):
        access_record(actor="c", route="GET /x", nhs_numbers=[], key=KEY, identifier_kind="x")


# ---- scoring a pseudonymous extract ----------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    """A small model over every feature (random data): scoring needs one, not a good one."""
    from riskstrat.features.build import feature_columns
    from riskstrat.modelling.model import Calibrator
    from riskstrat.modelling.registry import LoadedModel, ModelVersionInfo

    rng = np.random.default_rng(5)
    names = feature_columns()
    X = pd.DataFrame(rng.poisson(0.4, size=(2000, len(names))).astype(float), columns=names)
    X["age_years"] = rng.integers(18, 100, 2000)
    y = rng.random(2000) < 1 / (1 + np.exp(3 - 0.04 * (X.age_years - 60)))
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 7, "seed": 1},
        lgb.Dataset(X, label=y),
        num_boost_round=10,
    )
    info = ModelVersionInfo(
        name="m", version="7", aliases=("champion",), run_id=None,
        created_at=datetime.now(UTC), metrics={}, tags={},
    )  # fmt: skip
    return LoadedModel(booster=booster, calibrator=Calibrator(), info=info)


def _pseudonymous_extract(root: Path) -> tuple[Path, dict[str, str]]:
    """The base extract with every NHS number replaced by a pseudonym in every table, and
    four more people like P1 (so there is a cohort)."""
    tables = base_tables()
    names = {P1: "104233", P2: "104234", P3: "9998336376"}  # the last: digits, not an NHS no.
    for i in range(4):
        names[f"clone{i}"] = f"p{i}.omop_person-{i}"
    for name, rows in tables.items():
        clones = [
            {**row, "nhs_number": f"clone{i}"} for i in range(4) for row in rows
            if row["nhs_number"] == P1
        ]  # fmt: skip
        tables[name] = [{**row, "nhs_number": names[row["nhs_number"]]} for row in rows + clones]
    manifest = {"contract_version": 2, "extract_date": "2026-11-01", "identifier_kind": "pseudonym"}
    return write_extract(root, tables, manifest=manifest), names


@pytest.mark.parametrize("kind", ["nhs_number", "pseudonym"])
def test_scoring_records_what_the_extract_identifies_people_by(tmp_path, monkeypatch, model, kind):
    import riskstrat.pipelines.score
    from riskstrat.config import Settings

    class Registry:
        def load(self, name: str, ref: str):
            return model

    monkeypatch.setattr(riskstrat.pipelines.score, "registry_for", lambda settings: Registry())
    if kind == "pseudonym":
        extract, names = _pseudonymous_extract(tmp_path / "extract")
    else:
        extract, names = write_extract(tmp_path / "extract"), {P1: P1}
    settings = Settings(home=tmp_path / "home")
    result = riskstrat.pipelines.score.run_scoring(extract, month=NOV, settings=settings)
    assert result.identifier_kind == kind and result.n_scored >= 1
    store = Store(settings.serving_database_url)
    try:
        run = store.runs.latest()
        assert run.id == result.run_id and run.identifier_kind == kind
        assert run.details["identifier_kind"] == kind
        _, people = store.scores.page(run.id, limit=100)
        assert {p.nhs_number for p in people} <= set(names.values())
        assert store.scores.patient(run.id, names[P1]) is not None  # found by its identifier
        members = store.cohorts.page_items(run.id, "falls_review", limit=100)
        assert members is not None and members[0] >= 1
        items = [json.loads(item) for _, item in members[1]]
        assert {i["identifier_kind"] for i in items} == {kind}
        assert names[P1] in {i["nhs_number"] for i in items}
    finally:
        store.dispose()


# ---- labelling pieces ------------------------------------------------------------------------


def test_identifiers_are_shown_for_what_they_are():
    assert display_identifier("9998336376", "nhs_number") == "999 833 6376"
    assert display_identifier("9998336376", "pseudonym") == "9998336376"
    assert subject_identifier("9998336376", "nhs_number") == {
        "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9998336376",
    }  # fmt: skip
    pseudo = subject_identifier("9998336376", "pseudonym")
    assert pseudo["system"] == "urn:riskstrat:pseudonym" and pseudo["type"] == {"text": "pseudonym"}


def test_listing_and_items_name_the_identifier_column():
    from riskstrat.store.records import CohortMember, PatientScore

    member = CohortMember("falls_review", "9998336376", "A81001", "U12345", 0.2, 0.07, 1, ["x"])
    score = PatientScore("9998336376", "A81001", "U12345", 0.2, 99.0, 1, [], {})
    nhs = listing_frame([(member, score)], {"x": "why"})
    assert tuple(nhs.columns) == LISTING_COLUMNS and nhs.nhs_number[0] == "999 833 6376"
    pseudo = listing_frame([(member, score)], {"x": "why"}, identifier_kind="pseudonym")
    assert list(pseudo.columns) == ["pseudonym" if c == "nhs_number" else c for c in nhs.columns]
    assert pseudo.pseudonym[0] == "9998336376"
    item = cohort_item_json(
        rank=1, nhs_number="p.1-x", practice_code="A81001", pcn_code="U12345", risk=0.2,
        percentile=99.0, expected_benefit=None, because_json="[]", reasons_json="[]",
        identifier_kind="pseudonym",
    )  # fmt: skip
    parsed = json.loads(item)
    assert parsed["nhs_number"] == "p.1-x" and parsed["identifier_kind"] == "pseudonym"
    assert list(parsed)[:3] == ["cohort_rank", "nhs_number", "identifier_kind"]
