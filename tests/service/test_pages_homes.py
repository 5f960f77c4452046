"""Each role's home, the care coordinator's patient search and "recently viewed", the patient
page, the PCN filter on lists, and error pages in the site's layout (through HTTP)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from riskstrat.cohorts.listing import format_nhs_number
from riskstrat.config import Settings
from riskstrat.service.app import create_app
from riskstrat.service.pages.session import HOMES
from riskstrat.store import Store
from riskstrat.store.audit import access_record
from tests.support.auth import add_fixed_key, fixed_key
from tests.support.world import PCNS, key_for, publish_world, sign_in

LOGIN_FORM = '<label for="key">'


@pytest.fixture
def site(served):
    return served["client"], served["settings"], served["scores"]


def _routes(settings: Settings) -> list[str]:
    store = Store(settings.serving_database_url)
    try:
        return [r["route"] for r in store.audit.records()]
    finally:
        store.dispose()


def _mine_and_theirs(scores):
    return (
        scores[scores.pcn_code == PCNS[0]].sort_values("rank"),
        scores[scores.pcn_code == PCNS[1]].sort_values("rank"),
    )


@pytest.mark.parametrize("role", sorted(HOMES))
def test_each_role_lands_on_its_home(site, role):
    client, *_ = site
    response = client.post(
        "/login", content=f"key={key_for(role, PCNS[0])}",
        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == HOMES[role]
    for path in ("/", "/login"):  # signed in: never the sign-in form
        again = client.get(path, follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == HOMES[role]
    home = client.get(HOMES[role])
    assert LOGIN_FORM not in home.text and f"({role.replace('_', ' ')})" in home.text
    if role == "analyst":  # no model is registered in this world: said in the layout
        assert home.status_code == 404 and "No champion model yet" in home.text
    else:
        assert home.status_code == 200


def test_admin_home_counts_who_can_sign_in(site):
    client, settings, _ = site
    sign_in(client, key_for("admin", PCNS[0]))
    store = Store(settings.serving_database_url)
    store.users.revoke(f"pcn_team-{key_for('pcn_team', PCNS[1])[4:16]}")
    store.dispose()
    page = client.get("/admin")
    assert page.status_code == 200
    rows = dict(re.findall(r"<tr><td>([a-z ]+)</td>((?:<td class=\"num\">\d+</td>){3})", page.text))
    assert re.findall(r"\d+", rows["pcn team"]) == ["1", "0", "1"]
    assert re.findall(r"\d+", rows["care coordinator"]) == ["2", "0", "0"]
    assert _routes(settings) == []  # no patient on it


@pytest.mark.parametrize("written", ["{n}", "{spaced}", "{dashed}", "  {spaced}  "])
def test_search_finds_an_nhs_number_written_any_way(site, written):
    client, settings, scores = site
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    n = _mine_and_theirs(scores)[0].nhs_number.iloc[3]
    typed = written.format(
        n=n, spaced=format_nhs_number(n), dashed=format_nhs_number(n).replace(" ", "-")
    )
    found = client.get("/patients", params={"q": typed}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/patients/{n}"
    page = client.get(found.headers["location"])
    assert page.status_code == 200 and format_nhs_number(n) in page.text
    assert _routes(settings) == ["GET /patients/{nhs_number} (page)"]


def test_search_out_of_scope_reads_exactly_like_not_there(site):
    client, settings, scores = site
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    theirs = _mine_and_theirs(scores)[1].nhs_number.iloc[0]
    absent = "9990000018"  # a valid synthetic NHS number nobody in the world has
    assert absent not in set(scores.nhs_number)
    pages = {}
    for n in (theirs, absent):
        page = client.get("/patients", params={"q": format_nhs_number(n)})
        assert page.status_code == 404
        assert "No published risk was found for that NHS number in your PCNs." in page.text
        pages[n] = page.text.replace(format_nhs_number(n), "TYPED")
    assert pages[theirs] == pages[absent]
    assert _routes(settings) == []


@pytest.mark.parametrize(
    ("typed", "words"),
    [("12345", "An NHS number is ten digits"), ("999 000 0019", "check digit")],
)
def test_search_says_what_is_wrong_with_a_number(site, typed, words):
    client, *_ = site
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    page = client.get("/patients", params={"q": typed})
    assert (
        page.status_code == 422
        and words in page.text
        and "text/html" in page.headers["content-type"]
    )


def test_search_in_a_pseudonymous_run_takes_the_pseudonym_as_it_is(tmp_path):
    settings = Settings(home=tmp_path / "home")
    world = publish_world(settings, identifier_kind="pseudonym")
    scores = world["scores"]
    with TestClient(create_app(settings)) as client:
        sign_in(client, key_for("care_coordinator", PCNS[1]))
        dashed = scores[scores.nhs_number == "person.2_b-3"].iloc[0]
        assert dashed.pcn_code == PCNS[1]
        found = client.get("/patients", params={"q": "person.2_b-3"}, follow_redirects=False)
        assert found.headers["location"] == "/patients/person.2_b-3"
        # ten digits that pass Modulus 11 are a pseudonym here, never an NHS number re-written
        page = client.get("/patients", params={"q": "999 833 6376"})
        assert page.status_code == 422 and "pseudonym" in page.text.lower()
        client.app.state.store.dispose()  # type: ignore[attr-defined]


def test_recently_viewed_by_you_newest_first_scoped_and_audited(site):
    client, settings, scores = site
    mine, _ = _mine_and_theirs(scores)
    first, second, never = mine.nhs_number.iloc[0], mine.nhs_number.iloc[1], mine.nhs_number.iloc[2]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    empty = client.get("/patients")
    assert empty.status_code == 200 and 'id="recent-none"' in empty.text
    client.get(f"/patients/{first}")
    client.get(f"/patients/{second}")
    # A read 31 days ago is not "recent"; another user's reads are not yours.
    store = Store(settings.serving_database_url)
    old = access_record(actor="care_coordinator-old", route="GET /patients/{nhs_number} (page)",
                        nhs_numbers=[never], key=settings.pseudonym_key.get_secret_value())  # fmt: skip
    name = f"care_coordinator-{key_for('care_coordinator', PCNS[0])[4:16]}"
    store.audit.record(dataclasses.replace(old, actor=name, at=old.at - timedelta(days=31)))
    store.audit.record(dataclasses.replace(old, actor="someone-else"))
    store.dispose()
    page = client.get("/patients")
    table = page.text[page.text.index('id="recent"') :]
    assert table.index(format_nhs_number(second)) < table.index(format_nhs_number(first))
    assert format_nhs_number(never) not in page.text
    assert _routes(settings)[-1] == "GET /patients (page)"


def test_recently_viewed_where_the_trail_holds_nhs_numbers(tmp_path):
    settings = Settings(home=tmp_path / "home", audit_identify_patients=True)
    world = publish_world(settings)
    mine, _ = _mine_and_theirs(world["scores"])
    with TestClient(create_app(settings)) as client:
        sign_in(client, key_for("care_coordinator", PCNS[0]))
        client.get(f"/patients/{mine.nhs_number.iloc[5]}")
        page = client.get("/patients")
        assert format_nhs_number(mine.nhs_number.iloc[5]) in page.text
        client.app.state.store.dispose()  # type: ignore[attr-defined]


def _publish_previous_month(settings: Settings, scores) -> None:
    """The month before the world's, with every risk lower and 'age' smaller."""
    from riskstrat.cohorts.select import load_cohort_config
    from riskstrat.pipelines.score import cohort_config_record

    earlier = scores.copy()
    earlier["risk"] = earlier["risk"] / 2
    earlier["contributions"] = [{"age": 0.4}] * len(earlier)
    store = Store(settings.serving_database_url)
    store.runs.publish_run(
        month=date(2026, 10, 1), extract_date=date(2026, 10, 1), model_name="m",
        model_version="1", scores=earlier, cohorts=earlier.iloc[:0].assign(
            intervention=[], expected_benefit=[], criteria=[])[
            ["intervention", "nhs_number", "practice_code", "pcn_code", "risk",
             "expected_benefit", "rank", "criteria"]],
        n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"cohort_config": cohort_config_record(load_cohort_config())},
    )  # fmt: skip
    store.dispose()


def test_patient_page_shows_risk_then_and_now_reasons_and_cohorts(site):
    client, settings, scores = site
    _publish_previous_month(settings, scores)
    person = _mine_and_theirs(scores)[0].iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    page = client.get(f"/patients/{person.nhs_number}")
    assert page.status_code == 200
    text = page.text
    assert f"{100 * person.risk:.1f}%" in text  # now
    then = text[text.index('id="risk-then"') :]
    assert f"{100 * person.risk / 2:.1f}%" in then and "October 2026" in then
    change = text[text.index('id="risk-change"') :]
    assert f"{100 * person.risk / 2:+.1f}" in change
    assert "aged 80" in text  # the stored reasons
    cohorts = text[text.index('id="cohorts"') :]
    assert "Falls review" in cohorts and "65" in cohorts  # the criteria in words
    assert f'<td class="num">{person["rank"]}</td>' in cohorts
    assert 'id="marks-none"' in text


def test_patient_address_written_with_spaces_goes_to_the_number(site):
    client, _, scores = site
    n = _mine_and_theirs(scores)[0].nhs_number.iloc[0]
    sign_in(client, key_for("care_coordinator", PCNS[0]))
    response = client.get(f"/patients/{format_nhs_number(n)}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/patients/{n}"


def test_lists_have_a_pcn_filter_where_the_scope_covers_several(site):
    client, settings, scores = site
    both = fixed_key(99)
    add_fixed_key(settings, "pcn_team", both, pcns=PCNS)
    mine, theirs = _mine_and_theirs(scores)
    sign_in(client, both)
    page = client.get("/cohorts", params={"capacity": 40})
    assert '<select id="pcn" name="pcn">' in page.text
    assert all(f"/patients/{n}" in page.text for n in scores.nhs_number)
    one = client.get("/cohorts", params={"capacity": 40, "pcn": PCNS[1]})
    assert all(f"/patients/{n}" in one.text for n in theirs.nhs_number)
    assert not any(f"/patients/{n}" in one.text for n in mine.nhs_number)
    assert "pcn=U22222" in one.text  # the downloads keep the filter
    csv = client.get("/cohorts/download", params={"capacity": 40, "pcn": PCNS[1]})
    assert csv.status_code == 200 and not any(n in csv.text for n in mine.nhs_number)
    outside = client.get("/cohorts", params={"pcn": "U33333"})
    assert outside.status_code == 404 and LOGIN_FORM not in outside.text


def test_a_single_pcn_has_no_filter_and_cannot_reach_another(site):
    client, *_ = site
    sign_in(client, key_for("pcn_team", PCNS[0]))
    page = client.get("/cohorts")
    assert page.status_code == 200 and 'name="pcn"' not in page.text.split("<form", 2)[1]
    other = client.get("/cohorts", params={"pcn": PCNS[1]})
    assert other.status_code == 404 and "No risk" not in other.text


# ---- error pages ---------------------------------------------------------------------------


def _in_layout(response, status_code: int) -> str:
    assert response.status_code == status_code
    assert response.headers["content-type"].startswith("text/html")
    assert "<header>" in response.text and LOGIN_FORM not in response.text
    assert "style-src 'unsafe-inline'" in response.headers["content-security-policy"]
    return response.text


def test_403_page_for_another_roles_page(site):
    client, *_ = site
    sign_in(client, key_for("analyst", PCNS[0]))
    text = _in_layout(client.get("/cohorts"), 403)
    assert "This page is not open to you" in text and "pcn team" in text and "(analyst)" in text


def test_404_page_signed_in_and_signed_out(site):
    client, *_ = site
    text = _in_layout(client.get("/no-such-page"), 404)
    assert 'href="/login"' in text  # signed out: a link to sign in
    sign_in(client, key_for("pcn_team", PCNS[0]))
    text = _in_layout(client.get("/no-such-page"), 404)
    assert "Page not found" in text and 'href="/cohorts"' in text


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"capacity": "0"}, "Capacity should be greater than or equal to 1"),
        ({"capacity": "lots"}, "Capacity should be a valid integer"),
        ({"practice": "nope"}, "Practice is not in the right form"),
        ({"pcn": "12345"}, "PCN is not in the right form"),
    ],
)
def test_422_page_says_what_was_wrong_in_words(site, params, words):
    client, *_ = site
    sign_in(client, key_for("pcn_team", PCNS[0]))
    text = _in_layout(client.get("/cohorts", params=params), 422)
    assert words in text and '"detail"' not in text and "pattern" not in text


def test_signed_out_users_are_still_sent_to_sign_in(site):
    client, *_ = site
    for path in ("/cohorts?capacity=0", "/patients", "/admin", "/patients/9990000018"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"


def test_500_page_has_no_details_and_a_request_id(served):
    settings = served["settings"]
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client, key_for("care_coordinator", PCNS[0]))

        def broken(*_args, **_kwargs):
            raise RuntimeError("secret detail 9990000018")

        app.state.store.scores.patient = broken
        app.state.store.scores.in_runs = broken
        response = client.get("/patients/9990000018")
        text = _in_layout(response, 500)
        assert "secret detail" not in text and "RuntimeError" not in text
        assert response.headers["x-request-id"] in text
        api = client.get(
            "/api/v1/patients/9990000018/risk",
            headers={"Authorization": f"Bearer {key_for('care_coordinator', PCNS[0])}"},
        )
        assert api.status_code == 500 and "<header>" not in api.text
        app.state.store.dispose()


def test_the_api_keeps_its_problem_json(site):
    client, *_ = site
    sign_in(client, key_for("pcn_team", PCNS[0]))
    headers = {"Authorization": f"Bearer {key_for('pcn_team', PCNS[0])}"}
    bad = client.get("/api/v1/cohorts/falls_review", params={"capacity": 0}, headers=headers)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    missing = client.get("/api/v1/nowhere", headers=headers)
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )
    health = client.get("/health")
    assert health.status_code == 200
