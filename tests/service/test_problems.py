"""Errors in the API are RFC 9457 problem details (application/problem+json); pages and FHIR
keep FastAPI's own error answers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from riskstrat.errors import PROBLEM_BASE, ConflictError, NotFoundError
from riskstrat.service.app import create_app
from tests.support.auth import add_key

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def app(settings):
    app = create_app(settings)

    async def busy() -> None:
        raise ConflictError("a scoring run is in progress", hint="wait for it to finish")

    async def person(nhs_number: str) -> None:
        raise NotFoundError("no such person in this run")

    app.add_api_route("/api/v1/test-busy", busy, include_in_schema=False)
    app.add_api_route("/api/v1/test-person/{nhs_number}", person, include_in_schema=False)
    return app


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def _problem(response, status: int) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status and body["title"]
    return body


def test_a_riskstrat_error_is_its_own_problem(client):
    body = _problem(client.get("/api/v1/test-busy"), 409)
    assert body == {
        "type": PROBLEM_BASE + "conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "a scoring run is in progress",
        "hint": "wait for it to finish",
        "instance": "/api/v1/test-busy",
    }


def test_no_published_run_says_what_to_do(client, settings):
    team = add_key(settings, "pcn_team")
    body = _problem(client.get("/api/v1/risk-list", headers=team), 404)
    assert body["type"] == PROBLEM_BASE + "not-found"
    assert body["detail"] == "no scoring run has been published yet: run `riskstrat score`"
    assert "riskstrat score" in body["hint"]
    assert body["instance"] == "/api/v1/risk-list"
    month = _problem(client.get("/api/v1/cohorts", params={"month": "2020-01"}, headers=team), 404)
    assert month["detail"] == "no published run for 2020-01"
    assert "/api/v1/runs" in month["hint"]


def test_a_problem_names_the_route_never_the_patient(client):
    response = client.get("/api/v1/test-person/9990000018")
    body = _problem(response, 404)
    assert body["instance"] == "/api/v1/test-person/{nhs_number}"
    assert "9990000018" not in response.text


def test_no_champion_says_what_to_do(client, settings):
    analyst = add_key(settings, "analyst")
    body = _problem(client.get("/api/v1/models/current", headers=analyst), 404)
    assert body["detail"] == "no champion model: run `riskstrat train`"
    assert "riskstrat promote" in body["hint"]


def test_an_http_error_keeps_its_detail_and_headers(client, settings):
    analyst = add_key(settings, "analyst")
    body = _problem(client.get("/api/v1/runs/99/outcomes", headers=analyst), 404)
    assert body == {"type": "about:blank", "title": "Not Found", "status": 404,
                    "detail": "no such run"}  # fmt: skip
    unsigned = client.get("/api/v1/runs")
    assert _problem(unsigned, 401)["detail"] == "a valid API key or access token is required"
    assert unsigned.headers["www-authenticate"] == "Bearer"
    forbidden = _problem(client.get("/api/v1/audit", headers=analyst), 403)
    assert forbidden["detail"] == "the analyst role cannot use this route"
    assert _problem(client.get("/api/v1/no-such-thing"), 404)["detail"] == "Not Found"


def test_a_validation_error_keeps_fastapis_list(client, settings):
    team = add_key(settings, "pcn_team")
    response = client.get("/api/v1/risk-list", params={"page_size": 501}, headers=team)
    body = _problem(response, 422)
    assert body["type"] == "about:blank"
    assert [(d["type"], d["loc"]) for d in body["detail"]] == [
        ("less_than_equal", ["query", "page_size"])
    ]


def test_outside_the_api_errors_are_as_before(client, settings):
    coordinator = add_key(settings, "care_coordinator")
    missing = client.get("/fhir/RiskAssessment/1-1", headers=coordinator)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"detail": "no such RiskAssessment"}
    invalid = client.get("/fhir/RiskAssessment", params={"patient": "x|y"}, headers=coordinator)
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/json"
    assert invalid.json()["detail"][0]["loc"] == ["query", "patient"]
    page = client.get("/cohorts")  # a page: still a redirect to sign in
    assert page.status_code == 200 and page.url.path == "/login"


def test_the_schema_documents_problems(app):
    schema = app.openapi()
    responses = schema["paths"]["/api/v1/risk-list"]["get"]["responses"]
    assert responses["404"]["content"] == {
        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert responses["422"]["content"] == {
        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
    }
    assert {"Problem", "ValidationProblem", "ValidationIssue"} <= set(
        schema["components"]["schemas"]
    )
    fhir = schema["paths"]["/fhir/RiskAssessment"]["get"]["responses"]
    assert "content" not in fhir["404"] and "application/json" in fhir["422"]["content"]
