"""Identity, roles, PCN scope and the audit trail, through the HTTP interface.

Two PCNs (U11111 and U22222), one key per role for each. Every route that takes a patient or
a PCN is called by every role for its own PCN and the other one: every cross-scope request
must be denied, and every allowed patient-level read must leave exactly one audit record.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from riskstrat.cli import app as cli
from riskstrat.config import Settings, get_settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.service.app import create_app
from riskstrat.service.auth import ROLES
from riskstrat.store import Store
from riskstrat.store import audit as store_module
from riskstrat.store.audit import pseudonymise
from tests.support.auth import add_fixed_key, bearer, fixed_key
from tests.support.world import MONTH, PCNS, key_for


@pytest.fixture
def world(served_on_each_store):
    return served_on_each_store


def _audit_count(settings: Settings) -> int:
    store = Store(settings.serving_database_url)
    n = len(store.audit.records(limit=100_000))
    store.dispose()
    return n


def _requests(world, pcn: str) -> list[tuple[str, str, dict, str, set[str]]]:
    """(name, path, params, allowed role, patients returned) for data in ``pcn``."""
    scores = world["scores"]
    mine = scores[scores.pcn_code == pcn]
    person = mine.iloc[0]
    rid = f"{world['run_id']}-{person['rank']}"
    return [
        ("patient risk", f"/api/v1/patients/{person.nhs_number}/risk", {}, "care_coordinator",
         {person.nhs_number}),
        ("fhir search", "/fhir/RiskAssessment", {"patient": person.nhs_number},
         "care_coordinator", {person.nhs_number}),
        ("fhir read", f"/fhir/RiskAssessment/{rid}", {}, "care_coordinator",
         {person.nhs_number}),
        ("cohort for pcn", "/api/v1/cohorts/falls_review", {"pcn": pcn, "page_size": 500},
         "pcn_team", set(mine.nhs_number)),
        ("cohort csv", "/api/v1/cohorts/falls_review",
         {"pcn": pcn, "format": "csv", "page_size": 500}, "pcn_team", set(mine.nhs_number)),
        ("risk list", "/api/v1/risk-list", {"pcn": pcn, "page_size": 500}, "pcn_team",
         set(mine.nhs_number)),
    ]  # fmt: skip


def test_authorisation_matrix(world):
    client, settings, scores = world["client"], world["settings"], world["scores"]
    denied = cross = allowed = 0
    for data_pcn in PCNS:
        other_people = set(scores[scores.pcn_code != data_pcn].nhs_number)
        for name, path, params, allowed_role, patients in _requests(world, data_pcn):
            for role in ROLES:
                for caller_pcn in PCNS:
                    before = _audit_count(settings)
                    response = client.get(
                        path, params=params, headers=bearer(key_for(role, caller_pcn))
                    )
                    after = _audit_count(settings)
                    label = (name, role, caller_pcn, data_pcn)
                    body = response.text
                    assert not (other_people & {n for n in other_people if n in body}), label
                    if role == allowed_role and caller_pcn == data_pcn:
                        allowed += 1
                        assert response.status_code == 200, label
                        assert all(p in body or p[:3] + " " in body for p in patients), label
                        assert after == before + 1, label  # one record per allowed read
                    else:
                        if caller_pcn != data_pcn:
                            cross += 1
                        denied += 1
                        if name == "fhir search" and role == allowed_role:
                            # a search answers an empty Bundle: the same as no such patient
                            assert response.status_code == 200, label
                            assert json.loads(body)["total"] == 0, label
                        else:
                            assert response.status_code in (403, 404), label
                        for p in patients:
                            assert p not in body, label
                        assert after == before, label  # nothing read, nothing recorded
    assert allowed == 2 * 6 and cross == 2 * 6 * 4 and denied == 2 * 6 * 7


def test_out_of_scope_patient_reads_exactly_like_a_missing_one(world):
    client, scores = world["client"], world["scores"]
    other = scores[scores.pcn_code == PCNS[1]].iloc[0].nhs_number
    missing = next(
        n
        for n in synthetic_nhs_numbers(np.random.default_rng(99), 20)
        if n not in set(scores.nhs_number)
    )
    headers = bearer(key_for("care_coordinator", PCNS[0]))
    a = client.get(f"/api/v1/patients/{other}/risk", headers=headers)
    b = client.get(f"/api/v1/patients/{missing}/risk", headers=headers)
    assert a.status_code == b.status_code == 404 and a.json() == b.json()


def test_implicit_scope_never_crosses_pcns(world):
    client, scores = world["client"], world["scores"]
    body = client.get(
        "/api/v1/cohorts/falls_review",
        params={"page_size": 500},
        headers=bearer(key_for("pcn_team", PCNS[0])),
    ).json()
    assert {i["pcn_code"] for i in body["items"]} == {PCNS[0]}
    assert body["total"] == int((scores.pcn_code == PCNS[0]).sum())


def test_roles_without_patient_data(world):
    client = world["client"]
    assert (
        client.get("/api/v1/runs", headers=bearer(key_for("analyst", PCNS[0]))).status_code == 200
    )
    assert (
        client.get("/api/v1/runs", headers=bearer(key_for("pcn_team", PCNS[0]))).status_code == 403
    )
    assert client.get("/api/v1/audit", headers=bearer(key_for("admin", PCNS[0]))).status_code == 200
    for role in ("pcn_team", "care_coordinator", "analyst"):
        response = client.get("/api/v1/audit", headers=bearer(key_for(role, PCNS[0])))
        assert response.status_code == 403


def test_audit_trail_answers_who_looked_at_a_record(world, monkeypatch):
    client, settings, scores = world["client"], world["settings"], world["scores"]
    person = scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number
    coord = bearer(key_for("care_coordinator", PCNS[0]))
    client.get(f"/api/v1/patients/{person}/risk", headers={**coord, "X-Purpose": "MDT review"})
    client.get("/api/v1/cohorts/falls_review", headers=bearer(key_for("pcn_team", PCNS[0])))
    admin = bearer(key_for("admin", PCNS[0]))
    body = client.get("/api/v1/audit", params={"patient": person}, headers=admin).json()
    routes = [(r["actor"].split("-")[0], r["role"], r["route"]) for r in body["records"]]
    assert routes == [
        ("care_coordinator", "care_coordinator", "GET /api/v1/patients/{nhs_number}/risk"),
        ("pcn_team", "pcn_team", "GET /api/v1/cohorts/{intervention}"),
    ]
    first = body["records"][0]
    assert first["purpose"] == "MDT review" and first["organisations"] == [PCNS[0]]
    key = settings.pseudonym_key.get_secret_value()
    assert first["patients"] == [pseudonymise(person, key)] and person not in json.dumps(body)
    # the CLI answers the same question
    monkeypatch.setenv("RISKSTRAT_HOME", str(settings.home))
    if settings.database_url:
        monkeypatch.setenv("RISKSTRAT_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        client.get(f"/api/v1/patients/{person}/risk", headers=coord)  # not yet indexed
        indexed = CliRunner().invoke(cli, ["audit", "--index"])
        again = CliRunner().invoke(cli, ["audit", "--index"])
        result = CliRunner().invoke(cli, ["audit", "--patient", person])
    finally:
        get_settings.cache_clear()
    assert indexed.exit_code == 0 and "reads newly indexed by patient: 1" in indexed.output
    assert "reads newly indexed by patient: 0" in again.output
    assert result.exit_code == 0, result.output
    assert "(3 reads)" in result.output and "MDT review" in result.output


def test_audit_failure_means_no_data(world, monkeypatch):
    client, scores = world["client"], world["scores"]
    person = scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number

    def broken(conn, records):
        raise RuntimeError("audit store unavailable (injected)")

    # The failure is injected where the shared writer commits, so every route's wait on it
    # is what is tested.
    monkeypatch.setattr(store_module, "_insert_access", broken)
    safe = TestClient(client.app, raise_server_exceptions=False)
    response = safe.get(
        f"/api/v1/patients/{person}/risk", headers=bearer(key_for("care_coordinator", PCNS[0]))
    )
    assert response.status_code == 503 and person not in response.text
    response = safe.get(
        f"/api/v1/cohorts/falls_review?pcn={PCNS[0]}&page_size=100",
        headers=bearer(key_for("pcn_team", PCNS[0])),
    )
    assert response.status_code == 503 and "999" not in response.text


def test_expired_revoked_and_malformed_keys(world, tmp_path):
    client, settings = world["client"], world["settings"]
    add_fixed_key(settings, "analyst", fixed_key(900), days=-1)
    assert client.get("/api/v1/runs", headers=bearer(fixed_key(900))).status_code == 401
    store = Store(settings.serving_database_url)
    name = next(u["name"] for u in store.users.all() if u["key_prefix"] == f"{20:012x}")
    assert store.users.revoke(name)
    store.dispose()
    assert (
        client.get("/api/v1/runs", headers=bearer(key_for("care_coordinator", PCNS[0]))).status_code
        == 401
    )
    for bad in ("rsk_nothex_x", fixed_key(901), "a.b.c", ""):
        assert (
            client.get("/api/v1/runs", headers={"Authorization": f"Bearer {bad}"}).status_code
            == 401
        )


def test_security_headers_and_limits(world):
    client = world["client"]
    response = client.get("/health")
    for header in ("x-content-type-options", "x-frame-options", "content-security-policy",
                   "referrer-policy", "cache-control"):  # fmt: skip
        assert header in response.headers
    assert (
        "access-control-allow-origin"
        not in client.get("/health", headers={"Origin": "https://evil.example"}).headers
    )
    big = client.post("/health", content=b"x" * 20_000, headers={"Content-Type": "text/plain"})
    assert big.status_code == 413
    too_big_page = client.get(
        "/api/v1/risk-list", params={"page_size": 501}, headers=bearer(key_for("pcn_team", PCNS[0]))
    )
    assert too_big_page.status_code == 422


# ---- OIDC bearer JWTs, with locally generated keys ----------------------------------------


@pytest.fixture
def oidc(tmp_path, world):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    settings = world["settings"].model_copy(
        update={
            "oidc_issuer": "https://auth.example.nhs.uk",
            "oidc_audience": "riskstrat",
            "oidc_jwks": str(jwks),
            "oidc_role_map": {"R8000": "care_coordinator"},
        }
    )

    def token(**claims):
        now = int(time.time())
        body = {"iss": "https://auth.example.nhs.uk", "aud": "riskstrat", "sub": "uid-123",
                "exp": now + 300, "iat": now, "riskstrat_role": "R8000",
                "riskstrat_pcns": [PCNS[0]]} | claims  # fmt: skip
        return jwt.encode({k: v for k, v in body.items() if v is not None}, private,
                          algorithm="RS256", headers={"kid": "k1"})  # fmt: skip

    with TestClient(create_app(settings)) as client:
        yield client, token, world["scores"]


def test_oidc_token_maps_role_and_organisations(oidc):
    client, token, scores = oidc
    mine = scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number
    theirs = scores[scores.pcn_code == PCNS[1]].iloc[0].nhs_number
    headers = {"Authorization": f"Bearer {token()}"}
    assert client.get(f"/api/v1/patients/{mine}/risk", headers=headers).status_code == 200
    assert client.get(f"/api/v1/patients/{theirs}/risk", headers=headers).status_code == 404
    assert client.get("/api/v1/risk-list", headers=headers).status_code == 403


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 3600},
        {"iss": "https://other.example"},
        {"aud": "someone-else"},
        {"riskstrat_role": "R9999"},
        {"sub": None},
    ],
)
def test_oidc_rejects_bad_tokens(oidc, claims):
    client, token, scores = oidc
    person = scores.iloc[0].nhs_number
    response = client.get(
        f"/api/v1/patients/{person}/risk", headers={"Authorization": f"Bearer {token(**claims)}"}
    )
    assert response.status_code == 401


def test_oidc_rejects_a_token_signed_by_another_key(oidc):
    client, _token, scores = oidc
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"iss": "https://auth.example.nhs.uk", "aud": "riskstrat", "sub": "x",
         "exp": int(time.time()) + 300, "riskstrat_role": "care_coordinator",
         "riskstrat_pcns": ["*"]},
        stranger, algorithm="RS256", headers={"kid": "k1"},
    )  # fmt: skip
    person = scores.iloc[0].nhs_number
    assert (
        client.get(
            f"/api/v1/patients/{person}/risk", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )


# ---- FHIR ----------------------------------------------------------------------------------


def test_fhir_risk_assessment_validates_as_r4(world):
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.riskassessment import RiskAssessment

    client, scores = world["client"], world["scores"]
    person = scores[scores.pcn_code == PCNS[0]].iloc[0]
    headers = bearer(key_for("care_coordinator", PCNS[0]))
    response = client.get(
        "/fhir/RiskAssessment",
        params={"patient": f"https://fhir.nhs.uk/Id/nhs-number|{person.nhs_number}"},
        headers=headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    assert bundle.total == 1
    resource = response.json()["entry"][0]["resource"]
    ra = RiskAssessment.model_validate(resource)
    assert ra.subject.identifier.system == "https://fhir.nhs.uk/Id/nhs-number"
    assert ra.subject.identifier.value == person.nhs_number
    prediction = ra.prediction[0]
    assert float(prediction.probabilityDecimal) == pytest.approx(person.risk)
    assert str(prediction.whenPeriod.start) == "2026-11-01"
    assert str(prediction.whenPeriod.end) == str(MONTH + timedelta(days=90))
    assert "emergency hospital admission" in prediction.outcome.text
    assert "aged 80" in prediction.rationale and "version 1" in ra.method.text
    read = client.get(f"/fhir/RiskAssessment/{resource['id']}", headers=headers)
    assert RiskAssessment.model_validate(read.json()).id == resource["id"]
    assert (
        client.get("/fhir/RiskAssessment", params={"patient": "123"}, headers=headers).status_code
        == 422
    )


def test_users_cli_adds_lists_and_revokes(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        assert runner.invoke(cli, ["init"]).exit_code == 0  # users live in an existing home
        key_file = tmp_path / "keys" / "jo.key"
        added = runner.invoke(
            cli, ["users", "add", "--name", "jo", "--role", "care_coordinator",
                  "--pcn", "U11111", "--key-file", str(key_file)],
        )  # fmt: skip
        assert added.exit_code == 0, added.output
        key = key_file.read_text().strip()
        assert key.startswith("rsk_") and key not in added.output
        assert oct(key_file.stat().st_mode)[-3:] == "600"
        assert (
            runner.invoke(cli, ["users", "add", "--name", "x", "--role", "pcn_team"]).exit_code == 2
        )
        assert runner.invoke(cli, ["users", "add", "--name", "x", "--role", "boss"]).exit_code == 2
        again = runner.invoke(cli, ["users", "add", "--name", "jo", "--role", "analyst"])
        assert again.exit_code == 1 and "already exists" in again.output
        listed = runner.invoke(cli, ["users", "list"])
        assert "jo" in listed.output and "active" in listed.output and key not in listed.output
        settings = get_settings()
        with TestClient(create_app(settings)) as client:
            assert client.get("/api/v1/runs", headers=bearer(key)).status_code == 403
            assert runner.invoke(cli, ["users", "revoke", "jo"]).exit_code == 0
            assert client.get("/api/v1/runs", headers=bearer(key)).status_code == 401
        assert "revoked" in runner.invoke(cli, ["users", "list"]).output
        assert runner.invoke(cli, ["users", "revoke", "jo"]).exit_code == 1
    finally:
        get_settings.cache_clear()


def test_fhir_read_serves_published_runs_only(world):
    """A RiskAssessment id names a run and a rank; a run still being staged (or one
    retired whose rows are being deleted) is not served, whatever its rows."""
    settings, scores, client = world["settings"], world["scores"], world["client"]
    store = Store(settings.serving_database_url)
    staging = store.runs.begin(
        month=MONTH, extract_date=MONTH, model_name="m", model_version="2",
        started_at=datetime.now(UTC),
    )  # fmt: skip
    store.runs.stage_scores(staging, scores)
    store.dispose()
    headers = bearer(key_for("care_coordinator", scores.iloc[0].pcn_code))
    published = client.get(f"/fhir/RiskAssessment/{world['run_id']}-1", headers=headers)
    assert published.status_code == 200
    assert client.get(f"/fhir/RiskAssessment/{staging}-1", headers=headers).status_code == 404
