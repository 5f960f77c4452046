"""End to end in headless Chromium (Debian's, driven by Playwright): sign in with a key, open a
cohort, open a patient, download the CSV. Screenshots go to test-artifacts/screenshots/.

Where Chromium is not installed the test says so and is skipped, unless
``RISKSTRAT_REQUIRE_BROWSER=1`` (CI sets it; ``make test`` installs Chromium when it can).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import uvicorn

from riskstrat.config import Settings
from riskstrat.service.app import create_app
from tests.support.world import PCNS, key_for, publish_world

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("RISKSTRAT_CHROMIUM", "/usr/bin/chromium")

# Slow: each test starts a server and a headless Chromium.
pytestmark = pytest.mark.slow


def _chromium() -> str:
    found = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if found is None:
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RISKSTRAT_CHROMIUM)"
        if os.environ.get("RISKSTRAT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and RISKSTRAT_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return found


@pytest.fixture
def server(tmp_path):
    settings = Settings(home=tmp_path / "home")
    world = publish_world(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", world
    srv.should_exit = True
    thread.join(timeout=10)


def test_sign_in_open_cohort_open_patient_download_csv(server, tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    base, world = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    scores = world["scores"]
    mine = scores[scores.pcn_code == PCNS[0]].sort_values("rank")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(accept_downloads=True)
        page.goto(f"{base}/cohorts")
        assert page.url.endswith("/login")
        page.get_by_label("API key").fill(key_for("pcn_team", PCNS[0]))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/cohorts")
        page.get_by_label("Intervention").select_option("falls_review")
        page.get_by_label("Capacity (people you can review)").fill("5")
        page.get_by_role("button", name="Show list").click()
        page.wait_for_load_state()
        rows = page.locator("tbody tr")
        assert rows.count() == 5
        page.screenshot(path=str(ARTIFACTS / "cohort.png"), full_page=True)
        with page.expect_download() as info:
            page.locator("#download-csv").click()
        download = info.value
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        frame = pd.read_csv(target, dtype=str, encoding="utf-8-sig")
        assert list(frame.nhs_number.str.replace(" ", "")) == list(mine.nhs_number.iloc[:5])
        first = mine.nhs_number.iloc[0]
        page.locator(f"a[href='/patients/{first}']").click()
        page.wait_for_url(f"{base}/patients/{first}")
        assert "Reasons" in page.content() and "Falls review" in page.content()
        page.screenshot(path=str(ARTIFACTS / "patient.png"), full_page=True)
        browser.close()


def test_care_coordinator_finds_a_patient_marks_them_and_hides_the_done(server):
    """Sign in as a care coordinator (landing on the search), find a patient written with
    spaces, open their page, mark their falls review as reviewed, and see the status on the
    list, then hide the done."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    from riskstrat.cohorts.listing import format_nhs_number

    base, world = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    scores = world["scores"]
    mine = scores[scores.pcn_code == PCNS[0]].sort_values("rank")
    person = mine.nhs_number.iloc[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page()
        page.goto(f"{base}/")
        assert page.url.endswith("/login")
        page.get_by_label("API key").fill(key_for("care_coordinator", PCNS[0]))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/patients")  # the care coordinator's home: the search
        page.get_by_label("NHS number").fill(f" {format_nhs_number(person)} ")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(f"{base}/patients/{person}")
        assert format_nhs_number(person) in page.locator("h1").inner_text()
        page.get_by_label("Mark falls review as").select_option("reviewed")
        page.get_by_label("Note for falls review (optional)").fill("reviewed at the practice")
        page.get_by_role("button", name="Save mark").click()
        page.wait_for_url(f"{base}/patients/{person}")
        history = page.locator("#marks").inner_text()
        assert "Reviewed" in history and "reviewed at the practice" in history
        page.screenshot(path=str(ARTIFACTS / "patient-marked.png"), full_page=True)
        page.get_by_role("link", name="Lists").click()
        page.wait_for_url(f"{base}/cohorts")
        row = page.locator("tbody tr", has=page.locator(f"a[href='/patients/{person}']"))
        assert "Reviewed" in row.inner_text()
        page.get_by_label("Hide people marked done").check()
        page.get_by_role("button", name="Show list").click()
        page.wait_for_load_state()
        assert "hide_done=true" in page.url
        assert page.locator(f"a[href='/patients/{person}']").count() == 0
        assert "marked done is hidden" in page.locator("#hidden-note").inner_text()
        page.get_by_role("link", name="Find a patient").click()
        page.wait_for_url(f"{base}/patients")
        assert format_nhs_number(person) in page.locator("#recent").inner_text()
        page.screenshot(path=str(ARTIFACTS / "care-coordinator-search.png"), full_page=True)
        browser.close()
