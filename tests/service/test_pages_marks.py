"""Marking a listed person on the pages: the form on the list and on the patient page records
the mark through ``store.marks``, audited, CSRF-checked and scope-checked; lists show each
person's status and can hide the done."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from riskstrat.cohorts.listing import format_nhs_number
from riskstrat.config import Settings
from riskstrat.service.app import create_app
from riskstrat.store import Store
from tests.support.world import PCNS, key_for, publish_world, sign_in

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def site(served):
    return served["client"], served["settings"], served["scores"]


def _mine(scores, pcn: str = PCNS[0]):
    return scores[scores.pcn_code == pcn].sort_values("rank")


def _csrf(page_text: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page_text).group(1)


def _mark(client, person: str, csrf: str, *, status: str = "reviewed", note: str = "",
          intervention: str = "falls_review", back: str = "", follow: bool = False):  # fmt: skip
    from urllib.parse import urlencode

    body = urlencode({"csrf": csrf, "intervention": intervention, "status": status,
                      "note": note, "next": back})  # fmt: skip
    return client.post(f"/patients/{person}/marks", content=body, headers=FORM,
                       follow_redirects=follow)  # fmt: skip


def _store(settings: Settings) -> Store:
    return Store(settings.serving_database_url)


def test_marking_from_the_patient_page_records_audits_and_shows_it(site):
    client, settings, scores = site
    person = _mine(scores).nhs_number.iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    page = client.get(f"/patients/{person}")
    assert 'id="marks-none"' in page.text
    response = _mark(client, person, _csrf(page.text), note="rang, booked for Tuesday",
                     back=f"/patients/{person}")  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == f"/patients/{person}"
    store = _store(settings)
    (mark,) = store.marks.history(person)
    routes = [r["route"] for r in store.audit.records()]
    store.dispose()
    assert (mark.status, mark.intervention, mark.note) == (
        "reviewed",
        "falls_review",
        "rang, booked for Tuesday",
    )
    assert mark.by == f"care_coordinator-{key_for('care_coordinator', PCNS[0])[4:16]}"
    assert routes[-1] == "POST /patients/{nhs_number}/marks (page)"
    again = client.get(f"/patients/{person}")
    history = again.text[again.text.index('id="marks"') :]
    assert "Reviewed" in history and "rang, booked for Tuesday" in history and mark.by in history
    cohorts = again.text[again.text.index('id="cohorts"') :]
    assert '<span class="status done">Reviewed</span>' in cohorts


def test_the_list_shows_statuses_and_hides_the_done(site):
    client, _, scores = site
    mine = _mine(scores).nhs_number.tolist()
    sign_in(client, key_for("pcn_team", PCNS[0]))
    page = client.get("/cohorts", params={"capacity": 3})
    csrf = _csrf(page.text)
    back = "/cohorts?intervention=falls_review&pcn=&practice=&capacity=3"
    done = _mark(client, mine[0], csrf, status="reviewed", back=back)
    assert done.headers["location"] == back
    _mark(client, mine[1], csrf, status="contacted", back=back)  # under way: not done
    _mark(client, mine[2], csrf, status="not_appropriate", back=back)
    page = client.get(back)
    assert page.text.count('<span class="status done">') == 2
    assert '<span class="status">Contacted</span>' in page.text
    hidden = client.get("/cohorts", params={"capacity": 3, "hide_done": "true"})
    assert hidden.status_code == 200
    shown = re.findall(r'<a href="/patients/(\d+)">', hidden.text)
    assert shown == [mine[1], mine[3], mine[4]]  # the done left out, the list goes on
    assert "2 people marked done are hidden" in hidden.text
    assert 'id="hide_done" name="hide_done" type="checkbox" value="true" checked' in hidden.text


def test_a_mark_needs_the_sessions_csrf_token(site):
    client, settings, scores = site
    person = _mine(scores).nhs_number.iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    for token in ("", "0" * 64):
        response = _mark(client, person, token)
        assert response.status_code == 403 and "<header>" in response.text
    # A token from another session is not this one's.
    other = TestClient(client.app)
    sign_in(other, key_for("care_coordinator", PCNS[0]))
    foreign = _csrf(other.get(f"/patients/{person}").text)
    assert _mark(client, person, foreign).status_code == 403
    store = _store(settings)
    assert store.marks.history(person) == []
    store.dispose()


def test_a_person_outside_my_pcns_cannot_be_marked_and_looks_absent(site):
    client, settings, scores = site
    theirs = _mine(scores, PCNS[1]).nhs_number.iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    csrf = _csrf(client.get("/patients/" + _mine(scores).nhs_number.iloc[0]).text)
    response = _mark(client, theirs, csrf)
    absent = _mark(client, "9990000018", csrf)
    assert response.status_code == absent.status_code == 404
    assert response.text.replace(theirs, "X") == absent.text.replace("9990000018", "X").replace(
        re.search(r'request id <code id="request-id">([^<]+)', absent.text).group(1),
        re.search(r'request id <code id="request-id">([^<]+)', response.text).group(1),
    )
    store = _store(settings)
    assert store.marks.history(theirs) == []
    store.dispose()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("status", "done", "Choose what was done"),
        ("intervention", "knitting", "intervention this month"),
        ("note", "x" * 501, "at most 500"),
    ],
)
def test_a_bad_mark_is_refused_in_words(site, field, value, words):
    client, settings, scores = site
    person = _mine(scores).nhs_number.iloc[0]
    sign_in(client, key_for("pcn_team", PCNS[0]))
    csrf = _csrf(client.get(f"/patients/{person}").text)
    response = _mark(client, person, csrf, **{"status": "reviewed", field: value})
    assert response.status_code == 422 and words in response.text and "<header>" in response.text
    store = _store(settings)
    assert store.marks.history(person) == []
    store.dispose()


@pytest.mark.parametrize("back", ["https://elsewhere.example/", "//elsewhere.example/x", "/admin"])
def test_a_mark_only_goes_back_to_this_sites_lists_and_patients(site, back):
    client, _, scores = site
    person = _mine(scores).nhs_number.iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    csrf = _csrf(client.get(f"/patients/{person}").text)
    response = _mark(client, person, csrf, back=back)
    assert response.status_code == 303 and response.headers["location"] == f"/patients/{person}"


def test_other_roles_cannot_mark(site):
    client, _, scores = site
    person = _mine(scores).nhs_number.iloc[0]
    sign_in(client, key_for("analyst", PCNS[0]))
    assert _mark(client, person, "0" * 64).status_code == 403


def test_marks_in_a_pseudonymous_run(tmp_path):
    settings = Settings(home=tmp_path / "home")
    publish_world(settings, identifier_kind="pseudonym")
    with TestClient(create_app(settings)) as client:
        sign_in(client, key_for("care_coordinator", PCNS[1]))
        person = "person.2_b-3"
        csrf = _csrf(client.get(f"/patients/{person}").text)
        assert _mark(client, person, csrf, status="declined").status_code == 303
        page = client.get(f"/patients/{person}")
        assert "Declined" in page.text[page.text.index('id="marks"') :]
        # The ten-digit pseudonym that passes Modulus 11 is not re-written as an NHS number.
        sign_in(client, key_for("care_coordinator", PCNS[0]))
        assert client.get(f"/patients/{format_nhs_number('9998336376')}").status_code == 404
        client.app.state.store.dispose()  # type: ignore[attr-defined]
