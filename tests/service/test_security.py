"""Security of every response: headers on each kind of answer (HSTS over https only), request
ids that cannot carry an NHS number, absolute URLs from configuration (never the Host
header), strict audit dates, admin keys without PCNs, no Server header, and /docs served from
local assets under a policy that loads nothing from elsewhere."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from riskstrat.cli import app as cli
from riskstrat.config import Settings, get_settings
from riskstrat.service.app import create_app
from riskstrat.service.pages.session import PAGE_CSP
from riskstrat.service.security import API_CSP, HSTS, request_id
from riskstrat.store import Store
from tests.support.auth import bearer
from tests.support.world import PCNS, key_for, publish_world

CHROMIUM = os.environ.get("RISKSTRAT_CHROMIUM", "/usr/bin/chromium")
ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _person(served) -> str:
    scores = served["scores"]
    return str(scores[scores.pcn_code == PCNS[0]].iloc[0].nhs_number)


def _every_kind_of_answer(client: TestClient, person: str) -> dict[str, object]:
    coordinator = bearer(key_for("care_coordinator", PCNS[0]))
    return {
        "api json": client.get("/api/v1/runs", headers=bearer(key_for("analyst", PCNS[0]))),
        "problem+json": client.get("/api/v1/runs"),
        "validation problem": client.get(
            "/api/v1/risk-list?page=0", headers=bearer(key_for("pcn_team", PCNS[0]))
        ),
        "csv": client.get(
            f"/api/v1/cohorts/falls_review?pcn={PCNS[0]}&format=csv",
            headers=bearer(key_for("pcn_team", PCNS[0])),
        ),
        "fhir": client.get(f"/fhir/RiskAssessment?patient={person}", headers=coordinator),
        "health": client.get("/health"),
        "not found": client.get("/no/such/path"),
        "docs": client.get("/docs"),
        "docs asset": client.get("/docs-assets/swagger-ui.css"),
        "openapi": client.get("/openapi.json"),
        "page": client.get("/login"),
        "redirect": client.get("/cohorts", follow_redirects=False),
        "too big": client.post("/login", content=b"x" * 20_000),
    }


def test_every_kind_of_response_carries_the_security_headers(served):
    client, person = served["client"], _person(served)
    answers = _every_kind_of_answer(client, person)
    expected = {
        "api json": 200, "problem+json": 401, "validation problem": 422, "csv": 200,
        "fhir": 200, "health": 200, "not found": 404, "docs": 200, "docs asset": 200,
        "openapi": 200, "page": 200, "redirect": 303, "too big": 413,
    }  # fmt: skip
    for kind, response in answers.items():
        assert response.status_code == expected[kind], kind  # type: ignore[attr-defined]
        headers = response.headers  # type: ignore[attr-defined]
        for name, value in ALWAYS.items():
            assert headers.get(name) == value, (kind, name)
        assert "content-security-policy" in headers, kind
        assert "frame-ancestors 'none'" in headers["content-security-policy"], kind
        assert "strict-transport-security" not in headers, kind  # plain http
        assert "server" not in headers, kind
    assert answers["csv"].headers["content-type"].startswith("text/csv")  # type: ignore[attr-defined]
    assert answers["problem+json"].headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    for kind in ("api json", "problem+json", "csv", "fhir", "openapi", "redirect"):
        assert answers[kind].headers["content-security-policy"] == API_CSP, kind  # type: ignore[attr-defined]
    # A page keeps its own, stricter policy; the docs get theirs (below).
    assert answers["page"].headers["content-security-policy"] == PAGE_CSP  # type: ignore[attr-defined]
    assert answers["docs"].headers["content-security-policy"] != API_CSP  # type: ignore[attr-defined]


def test_hsts_only_over_https_or_a_trusted_proxy(served, tmp_path):
    client = served["client"]
    assert "strict-transport-security" not in client.get("/health").headers
    # A client cannot turn it on (or claim https) unless the deployment trusts its proxy.
    forwarded = client.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in forwarded.headers
    with TestClient(client.app, base_url="https://testserver") as secure:
        for path in ("/health", "/api/v1/runs", "/docs", "/login"):
            assert secure.get(path).headers["strict-transport-security"] == HSTS, path
    trusting = Settings(home=tmp_path / "other", trust_forwarded_proto=True)
    with TestClient(create_app(trusting)) as behind_proxy:
        on = behind_proxy.get("/health", headers={"X-Forwarded-Proto": "https"})
        off = behind_proxy.get("/health", headers={"X-Forwarded-Proto": "http"})
    assert on.headers["strict-transport-security"] == HSTS
    assert "strict-transport-security" not in off.headers


# --- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offered",
    ["9997257952", "req-9997257952-x", "999-725-7952", "999.725.7952", "a_9_9_9_7_2_5_7_9_5_2",
     "short", "x" * 65, "has space here", "<script>alert(1)</script>", "tab\there12"],
)  # fmt: skip
def test_an_unsafe_request_id_is_replaced(offered):
    made = request_id(offered)
    assert made != offered and re.fullmatch(r"[0-9a-f]{32}", made)


@pytest.mark.parametrize("offered", ["client-req-0001.a", "f47ac10b-58cc-4372-a567-0e02b2c3d479"])
def test_a_safe_request_id_is_kept(offered):
    assert request_id(offered) == offered


def test_generated_request_ids_never_hold_ten_digits_in_a_row():
    assert not any(re.search(r"[0-9]{10}", request_id(None)) for _ in range(2000))


def test_a_request_id_holding_an_nhs_number_reaches_neither_response_nor_logs_nor_audit(
    served, caplog
):
    client, settings, person = served["client"], served["settings"], _person(served)
    ours = logging.getLogger("riskstrat")
    ours.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        response = client.get(
            f"/api/v1/patients/{person}/risk",
            headers={**bearer(key_for("care_coordinator", PCNS[0])),
                     "X-Request-ID": f"mdt-{person}"},
        )  # fmt: skip
        kept = client.get("/health", headers={"X-Request-ID": "client-req-0001"})
    finally:
        ours.removeHandler(caplog.handler)
    assert response.status_code == 200
    given = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", given) and person not in given
    assert kept.headers["x-request-id"] == "client-req-0001"
    logged = [getattr(r, "request_id", None) for r in caplog.records if r.name == "riskstrat.api"]
    assert given in logged and "client-req-0001" in logged
    assert not any(person in str(r.__dict__) for r in caplog.records if r.name.startswith("risk"))
    store = Store(settings.serving_database_url)
    [record] = store.audit.records()
    store.dispose()
    assert record["request_id"] == given


# --- absolute URLs ----------------------------------------------------------------------------


def test_fhir_full_urls_come_from_configuration_not_the_host_header(served, tmp_path):
    client, person = served["client"], _person(served)
    headers = {**bearer(key_for("care_coordinator", PCNS[0])), "Host": "attacker.example"}
    bundle = client.get(f"/fhir/RiskAssessment?patient={person}", headers=headers).json()
    [entry] = bundle["entry"]
    assert (
        entry["fullUrl"] == f"http://127.0.0.1:8000/fhir/RiskAssessment/{entry['resource']['id']}"
    )
    assert "attacker" not in str(bundle)
    settings = Settings(home=tmp_path / "home2", public_base_url="https://risk.example.nhs.uk/rs/")
    publish_world(settings)
    with TestClient(create_app(settings)) as other:
        bundle = other.get(f"/fhir/RiskAssessment?patient={person}", headers=headers).json()
        other.app.state.store.dispose()  # type: ignore[attr-defined]
    assert bundle["entry"][0]["fullUrl"].startswith("https://risk.example.nhs.uk/rs/fhir/")


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "https://x.example/?q=1", "//x.example"])
def test_a_public_base_url_must_be_an_http_address(bad, tmp_path):
    with pytest.raises(ValueError, match="public_base_url"):
        Settings(home=tmp_path, public_base_url=bad)


# --- audit dates ------------------------------------------------------------------------------


def test_audit_dates_accept_dates_and_iso_times_only(served):
    client, person = served["client"], _person(served)
    admin = bearer(key_for("admin", PCNS[0]))
    read = client.get(f"/api/v1/patients/{person}/risk",
                      headers=bearer(key_for("care_coordinator", PCNS[0])))  # fmt: skip
    assert read.status_code == 200
    for bad in ("0.5", "1700000000", "2026-02-30", "2026-11", "yesterday", "2026-11-01T10"):
        for name in ("since", "until"):
            response = client.get("/api/v1/audit", params={name: bad}, headers=admin)
            assert response.status_code == 422, (name, bad)
            assert response.headers["content-type"] == "application/problem+json"

    def count(**params: str) -> int:
        response = client.get("/api/v1/audit", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return len(response.json()["records"])

    assert count(since="2000-01-01", until="2999-01-01") == 1
    assert count(since="2999-01-01") == 0 and count(until="2000-01-01") == 0
    assert count(since="2000-01-01T00:00:00Z") == 1
    assert count(until="2999-01-01T00:00:00.5+01:00") == 1
    assert count(since="2999-01-01 10:00") == 0


# --- admin keys -------------------------------------------------------------------------------


def _home(tmp_path, monkeypatch) -> Settings:
    """A riskstrat home with its serving store made, as the commands below need it."""
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    store = Store(get_settings().serving_database_url)
    store.create_schema()
    store.dispose()
    return get_settings()


def test_an_admin_key_refuses_a_pcn(tmp_path, monkeypatch):
    _home(tmp_path, monkeypatch)
    runner = CliRunner()
    refused = runner.invoke(cli, ["users", "add", "--name", "ig", "--role", "admin",
                                  "--pcn", "U11111"])  # fmt: skip
    assert refused.exit_code == 2, refused.output
    assert "--pcn does not apply" in refused.output and "hint:" in refused.output
    for pcns in ([], ["--pcn", "*"]):
        added = runner.invoke(cli, ["users", "add", "--name", f"ig{len(pcns)}", "--role",
                                    "admin", *pcns])  # fmt: skip
        assert added.exit_code == 0, added.output
    store = Store(get_settings().serving_database_url)
    users = store.users.all()
    store.dispose()
    assert sorted((u["name"], u["pcns"]) for u in users) == [("ig0", ["*"]), ("ig2", ["*"])]


# --- the server -------------------------------------------------------------------------------


def test_serve_sends_no_server_header(tmp_path, monkeypatch):
    _home(tmp_path, monkeypatch)
    called: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: called.update(kwargs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert called["server_header"] is False


# --- /docs ------------------------------------------------------------------------------------


def test_docs_use_local_assets_only(served):
    client = served["client"]
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(link.startswith("/docs-assets/") for link in links), links
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assets = {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon.png": "image/png",
    }
    for link in links:
        response = client.get(link)
        assert response.status_code == 200, link
        assert response.headers["content-type"].startswith(assets[link.rsplit("/", 1)[1]])
        assert len(response.content) > 100
    for missing in ("redoc.standalone.js", "core.py", "..%2F__init__.py", "x"):
        assert client.get(f"/docs-assets/{missing}").status_code == 404, missing
    assert client.get("/redoc").status_code == 404
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"].startswith("'self' 'sha256-")
    assert "unsafe" not in policy and "http" not in policy and "*" not in policy
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"


def _chromium() -> str:
    found = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if found is None:
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RISKSTRAT_CHROMIUM)"
        if os.environ.get("RISKSTRAT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and RISKSTRAT_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return found


@pytest.mark.slow  # a headless Chromium
def test_docs_render_offline_under_their_policy_in_a_browser(settings):
    """Headless Chromium opens /docs: Swagger UI draws the routes, every request stays on
    this server, and the browser reports no Content-Security-Policy violation."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    requested: list[str] = []
    console: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=executable,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update"],
            )  # fmt: skip
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(f"{base}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert any("/api/v1/runs" in p for p in paths), paths
    assert requested and all(u.startswith(base) or u.startswith("data:") for u in requested), (
        requested
    )
    violations = [m for m in console if "Content Security Policy" in m or "Refused" in m]
    assert not violations, violations
