"""Marks in the serving store (SQLite and PostgreSQL): recorded, the latest per person and
intervention, the history newest first; refused when malformed; kept across months, reruns
and retention; and revision 0005."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import inspect

from riskstrat.errors import UsageError
from riskstrat.store import Store
from riskstrat.store.marks import DONE_STATUSES, MARK_STATUSES, Mark
from tests.support.migrations import migrate
from tests.support.postgres import serving_store
from tests.support.runs import make_run

NOV, DEC, JAN = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)
T0 = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
A, B = "9990000018", "9990000026"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    yield from serving_store(request.param, tmp_path)


def _record(store: Store, person: str = A, status: str = "reviewed", **kw) -> Mark:
    args = {
        "person": person, "intervention": "falls_review", "status": status, "by": "team-a",
        "pcn_code": "U12345", "identifier_kind": "nhs_number", **kw,
    }  # fmt: skip
    return store.marks.record(**args)


def _publish(store: Store, month: date, scores, cohorts) -> int:
    return store.runs.publish_run(
        month=month, extract_date=month, model_name="m", model_version="1", scores=scores,
        cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"note": "test"},
    )  # fmt: skip


def test_the_statuses():
    assert MARK_STATUSES == ("contacted", "reviewed", "declined", "not_appropriate")
    assert {"reviewed", "declined", "not_appropriate"} == DONE_STATUSES


def test_record_latest_and_history(store):
    first = _record(store, status="contacted", at=T0, note="left a message")
    assert first == Mark(
        person=A, intervention="falls_review", status="contacted", by="team-a", at=T0,
        note="left a message", identifier_kind="nhs_number",
    )  # fmt: skip
    _record(store, status="reviewed", at=T0 + timedelta(days=2), by="team-b")
    _record(store, intervention="medication_review", status="declined", at=T0 + timedelta(days=1))
    _record(store, person=B, status="not_appropriate", at=T0)
    # Written later but dated earlier (a mark entered after the fact): not the latest.
    _record(store, status="contacted", at=T0 + timedelta(days=1))

    latest = store.marks.latest([A, B, "9990000034"])
    assert {k: (m.status, m.by) for k, m in latest.items()} == {
        (A, "falls_review"): ("reviewed", "team-b"),
        (A, "medication_review"): ("declined", "team-a"),
        (B, "falls_review"): ("not_appropriate", "team-a"),
    }
    assert latest[(A, "falls_review")].at == T0 + timedelta(days=2)
    assert set(store.marks.latest([A], intervention="medication_review")) == {
        (A, "medication_review")
    }
    assert store.marks.latest([]) == {}
    before = store.marks.latest([A], intervention="falls_review", as_of=T0 + timedelta(hours=1))
    assert before[(A, "falls_review")].status == "contacted"

    history = store.marks.history(A)
    assert [(m.intervention, m.status, m.at) for m in history] == [
        ("falls_review", "reviewed", T0 + timedelta(days=2)),
        ("falls_review", "contacted", T0 + timedelta(days=1)),
        ("medication_review", "declined", T0 + timedelta(days=1)),
        ("falls_review", "contacted", T0),
    ]
    assert history[-1].note == "left a message" and history[0].note is None
    assert store.marks.history("9990000034") == []


def test_the_same_time_twice_keeps_the_order_written(store):
    _record(store, status="reviewed", at=T0)
    _record(store, status="contacted", at=T0)
    assert store.marks.latest([A])[(A, "falls_review")].status == "contacted"
    assert [m.status for m in store.marks.history(A)] == ["contacted", "reviewed"]


def test_pseudonyms_are_kept_apart_from_nhs_numbers(store):
    longest = "q" * 63 + "9"
    _record(store, person=A, status="reviewed", identifier_kind="nhs_number")
    _record(store, person=A, status="declined", identifier_kind="pseudonym")
    _record(store, person=longest, status="contacted", identifier_kind="pseudonym")
    by_nhs = store.marks.latest([A], identifier_kind="nhs_number")
    by_pseudonym = store.marks.latest([A, longest], identifier_kind="pseudonym")
    assert by_nhs[(A, "falls_review")].status == "reviewed"
    assert by_pseudonym[(A, "falls_review")].status == "declined"
    assert by_pseudonym[(longest, "falls_review")].person == longest
    assert [m.status for m in store.marks.history(A, identifier_kind="pseudonym")] == ["declined"]


def test_latest_of_many_people(store):
    people = [f"p{i:04d}" for i in range(1203)]  # more than one query's worth
    for i in (0, 499, 500, 1202):
        _record(store, person=people[i], identifier_kind="pseudonym", status="contacted")
    found = store.marks.latest(people, intervention="falls_review")
    assert sorted(p for p, _ in found) == sorted(people[i] for i in (0, 499, 500, 1202))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "done"}, "status must be one of contacted, reviewed"),
        ({"status": "Reviewed"}, "status must be one of"),
        ({"intervention": "Falls Review"}, "an intervention is a key"),
        ({"intervention": ""}, "an intervention is a key"),
        ({"note": "x" * 501}, "at most 500 characters"),
        ({"person": ""}, "1 to 64 characters"),
        ({"person": "p" * 65}, "1 to 64 characters"),
        ({"by": ""}, "1 to 200 characters"),
        ({"pcn_code": "12345"}, "a PCN code is U and five digits"),
        ({"identifier_kind": "person_id"}, "identifier_kind must be"),
    ],
)
def test_bad_marks_are_refused_and_say_nothing_of_the_note(store, change, message):
    with pytest.raises(UsageError, match=message) as refused:
        _record(store, **change)
    assert "x" * 20 not in str(refused.value) and A not in str(refused.value)
    assert store.marks.history(A) == []


def test_a_note_of_500_characters_is_kept_whole(store):
    _record(store, note="n" * 500)
    assert store.marks.history(A)[0].note == "n" * 500


def test_marks_outlive_new_months_reruns_and_retention(store):
    scores, cohorts = make_run(40, 1)
    person = str(cohorts.nhs_number.iloc[0])
    november = _publish(store, NOV, scores, cohorts)
    _record(store, person=person, status="reviewed", pcn_code="U12345", at=T0)
    _publish(store, DEC, scores, cohorts)
    _publish(store, DEC, scores, cohorts)  # a rerun retires December's first run
    assert store.marks.latest([person])[(person, "falls_review")].status == "reviewed"
    _publish(store, JAN, scores, cohorts)
    pruned = store.runs.prune(keep_months=1)  # November and both of December's runs go
    assert november in pruned and len(pruned) == 3
    assert [r.month for r in store.runs.all()] == [JAN]
    assert [(m.person, m.status) for m in store.marks.history(person)] == [(person, "reviewed")]


def test_revision_0005_adds_the_table_and_keeps_marks_on_downgrade(store):
    columns = {c["name"]: c for c in inspect(store.engine).get_columns("patient_marks")}
    assert set(columns) == {
        "id", "person", "identifier_kind", "intervention", "status", "pcn_code",
        "marked_by", "marked_at", "note",
    }  # fmt: skip
    if store.engine.dialect.name == "postgresql":
        assert columns["person"]["type"].length == 64  # as wide as the identifiers (0004)
    _record(store)
    with pytest.raises(RuntimeError, match="1 marks are kept"):
        migrate(store, "downgrade", "0004")
    assert len(store.marks.history(A)) == 1
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM patient_marks")
    migrate(store, "downgrade", "0004")
    assert "patient_marks" not in inspect(store.engine).get_table_names()
    migrate(store, "upgrade", "head")
    assert _record(store).status == "reviewed"


def test_outcomes_read_the_latest_marks_before_the_window_closed(store):
    from riskstrat.pipelines.outcomes import latest_marks

    scores, cohorts = make_run(40, 1)
    run = store.runs.get(_publish(store, NOV, scores, cohorts))
    a, b, c = (str(n) for n in cohorts.nhs_number.iloc[:3])
    _record(store, person=a, status="reviewed", at=datetime(2026, 10, 2, tzinfo=UTC))  # before
    _record(store, person=b, status="contacted", at=datetime(2026, 11, 20, tzinfo=UTC))
    _record(store, person=b, status="declined", at=datetime(2026, 12, 1, tzinfo=UTC))
    _record(store, person=b, status="reviewed", at=datetime(2027, 3, 1, tzinfo=UTC))  # after
    _record(store, person=c, status="reviewed", identifier_kind="pseudonym")  # someone else
    found = latest_marks(store, run, cohorts, until=date(2027, 1, 30))
    got = {(r.intervention, r.nhs_number): r.status for r in found.itertuples()}
    assert got == {("falls_review", a): "reviewed", ("falls_review", b): "declined"}
    assert list(found.columns) == ["intervention", "nhs_number", "status"]


def test_riskstrat_outcomes_prints_the_marks_only_when_there_are_some(monkeypatch):
    from rich.console import Console

    from riskstrat.cli import monthly

    console = Console(record=True, width=200)
    monkeypatch.setattr(monthly, "out", console)
    row = {
        "intervention": "falls_review", "reviewed_people": 2, "declined_people": 1,
        "not_appropriate_people": 0, "contacted_people": 1, "unmarked_people": 3,
        "reviewed_expected": 0.7, "reviewed_observed": 1, "reviewed_oe": 1 / 0.7,
        "reviewed_oe_low": 0.04, "reviewed_oe_high": 7.96, "rest_people": 5,
        "rest_expected": 1.45, "rest_observed": 2, "rest_oe": 2 / 1.45, "rest_oe_low": 0.17,
        "rest_oe_high": 4.98,
    }  # fmt: skip
    unmarked = {**row, "reviewed_people": 0, "declined_people": 0, "contacted_people": 0}
    monthly._print_marks(pd.DataFrame([unmarked]), title="Marks")
    assert console.export_text() == ""  # nobody marked: the output is as before
    monthly._print_marks(pd.DataFrame([row]), title="Marks")
    text = console.export_text()
    assert "falls_review" in text and "not appropriate" in text
    assert "1 / 0.7 = 1.43 (0.04-7.96)" in text and "2 / 1.4 = 1.38 (0.17-4.98)" in text
