"""Property-based tests of the live OpenAPI schema (schemathesis, its default checks): no
server errors and no response that breaks the schema, for every operation, called with the
role it needs and with none; on a run of NHS numbers and on a pseudonymous one."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from riskstrat.config import Settings
from riskstrat.service.app import create_app
from riskstrat.service.auth import ROLES
from tests.support.auth import bearer
from tests.support.world import PCNS, key_for, publish_world

ROLE_OF = {
    "/api/v1/risk-list": "pcn_team",
    "/api/v1/cohorts": "pcn_team",
    "/api/v1/cohorts/{intervention}": "pcn_team",
    "/api/v1/patients/{nhs_number}/risk": "care_coordinator",
    "/api/v1/patients/{nhs_number}/marks": "care_coordinator",  # and pcn_team
    "/fhir/RiskAssessment": "care_coordinator",
    "/fhir/RiskAssessment/{resource_id}": "care_coordinator",
    "/api/v1/models/current": "analyst",
    "/api/v1/monitoring": "analyst",
    "/api/v1/runs": "analyst",
    "/api/v1/runs/{run_id}/outcomes": "analyst",
    "/api/v1/audit": "admin",
}
#: Operations whose patient parameter the published run shapes. The schema admits any
#: pseudonym (ten digits are one); a run of NHS numbers then answers anything but ten digits
#: with the 422 it always has, which a schema cannot say. (The audit trail asks for ten digits
#: too when the request itself says identifier_kind=nhs_number.)
RUN_SHAPED = {
    "/api/v1/patients/{nhs_number}/risk",
    "/api/v1/patients/{nhs_number}/marks",
    "/fhir/RiskAssessment",
    "/api/v1/audit",
}

# Slow: a property-based fuzz of the whole API.
pytestmark = pytest.mark.slow


def rejected_only_as_not_an_nhs_number(nhs_numbers: bool):
    """``positive_data_acceptance`` for RUN_SHAPED operations: a schema-valid request may also
    be refused (422) for not being shaped as an NHS number where NHS numbers are asked for
    (the run holds them, or the request says so), and for nothing else."""

    def check(ctx, response, case) -> None:
        if response.status_code != 422:
            positive_data_acceptance(ctx, response, case)
            return
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return
        asked = nhs_numbers or (case.query or {}).get("identifier_kind") == "nhs_number"
        if not asked:
            positive_data_acceptance(ctx, response, case)  # fails: nothing excuses the 422
        detail = response.json()["detail"]
        assert detail and all(
            d["type"] == "string_pattern_mismatch" and "[0-9]{10}" in d["ctx"]["pattern"]
            for d in detail
        ), f"schema-valid request refused for another reason: {detail}"

    return check


@pytest.fixture(scope="module", params=["nhs_number", "pseudonym"])
def app(request, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("fuzz") / "home")
    publish_world(settings, identifier_kind=request.param)
    return create_app(settings)


def test_api_conforms_to_its_schema(app):
    """Every operation, 30 generated cases each (valid and invalid), all default checks."""
    nhs_numbers = app.state.store.runs.latest().identifier_kind == "nhs_number"
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        role = ROLE_OF.get(operation.path)
        headers = bearer(key_for(role, PCNS[0])) if role else {}
        checks = (
            {
                "excluded_checks": [positive_data_acceptance],
                "additional_checks": [rejected_only_as_not_an_nhs_number(nhs_numbers)],
            }
            if operation.path in RUN_SHAPED
            else {}
        )

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, **checks)

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
