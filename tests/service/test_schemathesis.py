"""Property-based tests of the live OpenAPI schema (schemathesis, its default checks): no
server errors and no response that breaks the schema, for every operation, called with the
role it needs and with none."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from riskstrat.auth import ROLES
from riskstrat.config import Settings
from service.app import create_app
from tests.auth_helpers import bearer
from tests.service.test_auth import PCNS, key_for, publish_world

ROLE_OF = {
    "/api/v1/risk-list": "pcn_team",
    "/api/v1/cohorts": "pcn_team",
    "/api/v1/cohorts/{intervention}": "pcn_team",
    "/api/v1/patients/{nhs_number}/risk": "care_coordinator",
    "/fhir/RiskAssessment": "care_coordinator",
    "/fhir/RiskAssessment/{resource_id}": "care_coordinator",
    "/api/v1/models/current": "analyst",
    "/api/v1/runs": "analyst",
    "/api/v1/runs/{run_id}/outcomes": "analyst",
    "/api/v1/audit": "admin",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("fuzz") / "home")
    publish_world(settings)
    return create_app(settings)


def test_api_conforms_to_its_schema(app):
    """Every operation, 30 generated cases each (valid and invalid), all default checks."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        role = ROLE_OF.get(operation.path)
        headers = bearer(key_for(role, PCNS[0])) if role else {}

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= len(ROLE_OF)
    assert not failures, "\n\n".join(failures)


def test_every_data_route_has_a_role(app):
    data_routes = {p for p in app.openapi()["paths"] if p.startswith(("/api", "/fhir"))}
    assert data_routes == set(ROLE_OF)
    assert set(ROLE_OF.values()) == set(ROLES)
