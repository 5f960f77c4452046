"""Marks through the API: a team marks a listed person (contacted, reviewed, declined, not
appropriate), reads their history, and sees the status on its cohort lists (JSON and CSV),
with the done ones hidden on request; every read and write is audited."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from riskstrat.cohorts.listing import cohort_items_json
from riskstrat.cohorts.select import load_cohort_config
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.store.audit import pseudonymise
from riskstrat.store.marks import DONE_STATUSES
from tests.support.auth import bearer
from tests.support.world import PCNS, key_for

TEAM = bearer(key_for("pcn_team", PCNS[0]))
COORD = bearer(key_for("care_coordinator", PCNS[0]))
OTHER_TEAM = bearer(key_for("pcn_team", PCNS[1]))
DEC = date(2026, 12, 1)
POST_ROUTE = "POST /api/v1/patients/{nhs_number}/marks"
GET_ROUTE = "GET /api/v1/patients/{nhs_number}/marks"


def _people(world, pcn: str = PCNS[0]) -> list[str]:
    """The run's people in ``pcn``, in rank order (all are in the falls review cohort)."""
    scores = world["scores"]
    return [str(n) for n in scores[scores.pcn_code == pcn].nhs_number]


def _mark(client, person: str, status: str, headers=TEAM, **body):
    return client.post(
        f"/api/v1/patients/{quote(person)}/marks",
        json={"intervention": "falls_review", "status": status, **body},
        headers=headers,
    )


def _store(world):
    return world["client"].app.state.store


def test_a_team_marks_a_person_and_reads_the_history(served):
    client, person = served["client"], _people(served)[0]
    first = _mark(client, person, "contacted", note="left a message")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["person"] == person and body["identifier_kind"] == "nhs_number"
    assert (body["intervention"], body["status"]) == ("falls_review", "contacted")
    assert body["by"].startswith("pcn_team-") and body["note"] == "left a message"
    assert body["at"]
    second = _mark(client, person, "reviewed", headers=COORD)  # a care coordinator may too
    assert second.status_code == 201, second.text

    history = client.get(f"/api/v1/patients/{person}/marks", headers=TEAM)
    assert history.status_code == 200
    got = history.json()
    assert got["person"] == person
    assert [m["status"] for m in got["marks"]] == ["reviewed", "contacted"]  # newest first
    assert got["marks"][0]["by"].startswith("care_coordinator-")
    latest = _store(served).marks.latest([person])
    assert latest[(person, "falls_review")].status == "reviewed"


@pytest.mark.parametrize("role", ["analyst", "admin"])
def test_only_teams_that_act_on_lists_can_mark(served, role):
    client, person = served["client"], _people(served)[0]
    headers = bearer(key_for(role, PCNS[0]))
    assert _mark(client, person, "reviewed", headers=headers).status_code == 403
    assert client.get(f"/api/v1/patients/{person}/marks", headers=headers).status_code == 403
    assert _mark(client, person, "reviewed", headers={}).status_code == 401
    assert _store(served).marks.history(person) == []


def test_out_of_scope_reads_exactly_like_not_there(served):
    client = served["client"]
    elsewhere = _people(served, PCNS[1])[0]
    known = set(served["scores"].nhs_number)
    unknown = next(n for n in synthetic_nhs_numbers(np.random.default_rng(7), 50) if n not in known)
    out_of_scope = _mark(client, elsewhere, "reviewed")
    not_there = _mark(client, unknown, "reviewed")
    bad_check_digit = _mark(client, "9998336377", "reviewed")
    assert out_of_scope.status_code == not_there.status_code == bad_check_digit.status_code == 404
    assert out_of_scope.json()["detail"] == not_there.json()["detail"]
    assert out_of_scope.json()["detail"] == bad_check_digit.json()["detail"]
    read = client.get(f"/api/v1/patients/{elsewhere}/marks", headers=TEAM)
    assert read.status_code == 404 and read.json()["detail"] == not_there.json()["detail"]
    # The other PCN's own team may mark them.
    assert _mark(client, elsewhere, "reviewed", headers=OTHER_TEAM).status_code == 201
    assert [m.by for m in _store(served).marks.history(elsewhere)] == [
        f"pcn_team-{key_for('pcn_team', PCNS[1])[4:16]}"
    ]
    assert [r["route"] for r in _store(served).audit.records()] == [POST_ROUTE]  # one write


def test_bad_marks_are_refused_and_nothing_is_kept(served):
    client, person = served["client"], _people(served)[0]
    assert _mark(client, person, "done").status_code == 422
    assert _mark(client, person, "reviewed", note="x" * 501).status_code == 422
    unknown = client.post(
        f"/api/v1/patients/{person}/marks",
        json={"intervention": "yoga_class", "status": "reviewed"},
        headers=TEAM,
    )
    assert unknown.status_code == 404 and "falls_review" in unknown.json()["detail"]
    assert _mark(client, person, "reviewed", note="x" * 500).status_code == 201
    assert len(_store(served).marks.history(person)) == 1


def test_marks_are_audited_and_the_note_is_never_logged(served, caplog):
    client, person = served["client"], _people(served)[0]
    caplog.set_level(logging.DEBUG)
    note = "spoke to daughter about the stairs"
    headers = {**TEAM, "X-Purpose": "falls MDT"}
    assert _mark(client, person, "contacted", headers=headers, note=note).status_code == 201
    assert client.get(f"/api/v1/patients/{person}/marks", headers=TEAM).status_code == 200
    assert _mark(client, "9998336377", "reviewed").status_code == 404  # no data, no record
    records = _store(served).audit.records()
    assert [r["route"] for r in records] == [POST_ROUTE, GET_ROUTE]
    key = served["settings"].pseudonym_key.get_secret_value()
    assert all(r["patients"] == [pseudonymise(person, key)] for r in records)
    assert records[0]["purpose"] == "falls MDT" and records[0]["role"] == "pcn_team"
    assert person not in str(records) and note not in str(records)
    ours = [r for r in caplog.records if r.name.startswith("riskstrat")]
    assert ours  # the service logged the requests (the test client logs URLs of its own)
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in ours)
    assert note not in logged and person not in logged


@pytest.mark.parametrize("written", ["{0} {1} {2}", "{0}-{1}-{2}", "{0}{1}{2}"])
def test_nhs_numbers_are_accepted_as_people_write_them(served, written):
    client, person = served["client"], _people(served)[0]
    spaced = written.format(person[:3], person[3:6], person[6:])
    response = _mark(client, spaced, "reviewed")
    assert response.status_code == 201, response.text
    assert response.json()["person"] == person  # stored as the run stores it
    history = client.get(f"/api/v1/patients/{quote(spaced)}/marks", headers=TEAM)
    assert history.status_code == 200 and history.json()["person"] == person
    assert [m.person for m in _store(served).marks.history(person)] == [person]


def test_a_pseudonymous_run_takes_pseudonyms_as_they_are(served_pseudonymous_on_each_store):
    world = served_pseudonymous_on_each_store
    client = world["client"]
    ten_digits = _people(world)[0]  # 9998336376: passes Modulus 11, and is a pseudonym here
    dashed = next(p for p in _people(world, PCNS[1]) if "-" in p)  # person.2_b-3
    assert _mark(client, ten_digits, "reviewed").status_code == 201
    assert _mark(client, dashed, "declined", headers=OTHER_TEAM).status_code == 201
    marks = _store(world).marks
    assert [(m.person, m.identifier_kind) for m in marks.history(dashed)] == [(dashed, "pseudonym")]
    assert marks.latest([ten_digits], identifier_kind="nhs_number") == {}
    for pcn, person, status, headers in (
        (PCNS[0], ten_digits, "reviewed", TEAM),
        (PCNS[1], dashed, "declined", OTHER_TEAM),
    ):
        params = {"pcn": pcn}
        page = client.get("/api/v1/cohorts/falls_review", params=params, headers=headers)
        assert {i["nhs_number"]: i["status"] for i in page.json()["items"]}[person] == status
        hidden = client.get(
            "/api/v1/cohorts/falls_review", params={**params, "hide_done": True}, headers=headers
        ).json()
        assert person not in {i["nhs_number"] for i in hidden["items"]}
        assert hidden["total"] == page.json()["total"] - 1


def test_cohort_items_show_the_latest_mark(served):
    client = served["client"]
    people = _people(served)
    assert _mark(client, people[1], "reviewed").status_code == 201
    page = client.get("/api/v1/cohorts/falls_review", params={"pcn": PCNS[0]}, headers=TEAM)
    assert page.status_code == 200
    items = {i["nhs_number"]: i for i in page.json()["items"]}
    marked, unmarked = items[people[1]], items[people[0]]
    assert marked["status"] == "reviewed" and marked["status_by"].startswith("pcn_team-")
    assert marked["status_at"].startswith("20")
    assert unmarked["status"] is None and unmarked["status_by"] is None
    assert unmarked["status_at"] is None
    assert marked["risk"] == pytest.approx(float(served["scores"].risk.iloc[2]))  # item intact


def _publish_next_month(world) -> None:
    """December's run of the same people, with each cohort item stored at publication (the
    cohort page's fast path, plain SQL), after November's (items built at request time)."""
    scores = world["scores"]
    store = _store(world)
    members = store.cohorts.frame(world["run_id"])
    config = cohort_config_record(load_cohort_config())
    texts = {k: i["criteria"] for k, i in config["interventions"].items()}
    store.runs.publish_run(
        month=DEC, extract_date=DEC, model_name="m", model_version="2", scores=scores,
        cohorts=members.assign(item_json=cohort_items_json(members, scores, texts)),
        n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"cohort_config": config},
    )  # fmt: skip
    assert store.runs.latest().month == DEC


@pytest.mark.parametrize("next_month", [False, True], ids=["november", "december"])
@pytest.mark.parametrize("page_size", [3, 7])
def test_hide_done_pages_through_the_rest(served_on_each_store, page_size, next_month):
    world = served_on_each_store
    client = world["client"]
    people = _people(world)  # 20 people, in rank order
    statuses = {
        people[0]: "reviewed", people[3]: "declined", people[4]: "not_appropriate",
        people[8]: "contacted", people[11]: "reviewed", people[19]: "reviewed",
    }  # fmt: skip
    for person, status in statuses.items():
        assert _mark(client, person, status).status_code == 201
    # Reviewed, then contacted again: the latest mark is not done, so they stay listed.
    assert _mark(client, people[2], "reviewed").status_code == 201
    assert _mark(client, people[2], "contacted").status_code == 201
    # A mark for another intervention does not hide them from this one.
    other = client.post(
        f"/api/v1/patients/{people[5]}/marks",
        json={"intervention": "medication_review", "status": "reviewed"},
        headers=TEAM,
    )
    assert other.status_code == 201
    done = {p for p, s in statuses.items() if s in DONE_STATUSES}
    expected = [p for p in people if p not in done]
    if next_month:  # marks hold across months: December's list hides the same people
        _publish_next_month(world)

    seen: list[str] = []
    page = 1
    while True:
        response = client.get(
            "/api/v1/cohorts/falls_review",
            params={"pcn": PCNS[0], "hide_done": True, "page": page, "page_size": page_size},
            headers=TEAM,
        )
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == len(expected)
        if not body["items"]:
            break
        assert len(body["items"]) <= page_size
        seen += [i["nhs_number"] for i in body["items"]]
        assert all(i["status"] in (None, "contacted") for i in body["items"])
        page += 1
    assert seen == expected  # every page full but the last, in rank order, none twice
    assert page - 1 == -(-len(expected) // page_size)
    everyone = client.get(
        "/api/v1/cohorts/falls_review", params={"pcn": PCNS[0], "page_size": 50}, headers=TEAM
    ).json()
    assert everyone["total"] == 20 and len(everyone["items"]) == 20
    capped = client.get(
        "/api/v1/cohorts/falls_review",
        params={"pcn": PCNS[0], "hide_done": True, "capacity": 5},
        headers=TEAM,
    ).json()
    assert [i["nhs_number"] for i in capped["items"]] == expected[:5]
    assert capped["capacity_summary"]["eligible"] == len(expected)


def test_the_csv_list_has_the_status(served):
    client = served["client"]
    people = _people(served)
    assert _mark(client, people[0], "declined").status_code == 201
    assert _mark(client, people[1], "contacted").status_code == 201
    response = client.get(
        "/api/v1/cohorts/falls_review",
        params={"pcn": PCNS[0], "format": "csv", "page_size": 5},
        headers=TEAM,
    )
    assert response.status_code == 200
    frame = pd.read_csv(io.StringIO(response.text), dtype=str, keep_default_na=False)
    assert list(frame.columns)[-3:] == ["status", "status_by", "status_at"]
    assert frame["status"].tolist() == ["declined", "contacted", "", "", ""]
    assert frame["status_by"].iloc[0].startswith("pcn_team-") and frame["status_by"].iloc[2] == ""
    hidden = client.get(
        "/api/v1/cohorts/falls_review",
        params={"pcn": PCNS[0], "format": "csv", "page_size": 5, "hide_done": True},
        headers=TEAM,
    )
    frame = pd.read_csv(io.StringIO(hidden.text), dtype=str, keep_default_na=False)
    assert frame["status"].tolist() == ["contacted", "", "", "", ""]
    assert people[0] not in hidden.text.replace(" ", "")  # the declined person is left out
