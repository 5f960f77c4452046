"""Screenshots of the pages for the guides, taken in headless Chromium (Playwright).

    .venv/bin/python tools/screenshots.py [--out docs/images] [--patients 3000] [--quick]

It builds a riskstrat home of its own in a temporary folder: a synthetic population (999 NHS
numbers only), validated, trained, promoted and scored for two months through the
``riskstrat`` command, so every number on the pages is the product's own. With ``--quick`` it
publishes the 40-person test world instead (tests/support/world.py; no model, so the analyst
page says so). It then serves the app with uvicorn on a free port, signs in as each role and
saves care-coordinator-search.png, patient.png, pcn-team-lists.png, analyst-model.png and
error-404.png under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("RISKSTRAT_CHROMIUM", "/usr/bin/chromium")
EXTRACT_DATE = date(2026, 11, 20)


def _riskstrat(home: Path, *args: str) -> None:
    env = {**os.environ, "RISKSTRAT_HOME": str(home)}
    command = [str(ROOT / ".venv" / "bin" / "riskstrat"), *args]
    subprocess.run(command, env=env, check=True)  # noqa: S603 - our own command, fixed arguments


def _real_world(home: Path, patients: int) -> None:
    """A synthetic population through the whole product: two scored months."""
    extract = home.parent / "extract"
    _riskstrat(
        home, "generate", "--out", str(extract), "--patients", str(patients), "--seed", "7",
        "--months", "36", "--extract-date", EXTRACT_DATE.isoformat(),
    )  # fmt: skip
    _riskstrat(home, "validate", str(extract))
    _riskstrat(home, "train", "--data", str(extract))
    _riskstrat(home, "promote")
    _riskstrat(home, "score", "--data", str(extract), "--month", "2026-10")
    _riskstrat(home, "score", "--data", str(extract), "--month", "latest")


def _keys(settings, pcn: str) -> dict[str, str]:
    """A key per role, scoped to ``pcn`` (an admin's to every PCN)."""
    from riskstrat.service.auth import ROLES, new_api_key
    from riskstrat.store import Store

    store = Store(settings.serving_database_url)
    keys = {}
    for role in ROLES:
        new = new_api_key()
        store.users.add(
            name=f"screenshots-{role.replace('_', '-')}", role=role,
            pcns=["*"] if role == "admin" else [pcn], key_prefix=new.prefix, key_hash=new.hash,
            expires_at=datetime.now(UTC) + timedelta(days=1), created_by="tools/screenshots.py",
        )  # fmt: skip
        keys[role] = new.key
    store.dispose()
    return keys


def _serve(settings):
    import uvicorn

    from riskstrat.service.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _shoot(base: str, keys: dict[str, str], people: list[str], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from riskstrat.cohorts.listing import format_nhs_number

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"],
        )  # fmt: skip

        def signed_in(role: str):
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{base}/login")
            page.get_by_label("API key").fill(keys[role])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_load_state()
            return page

        page = signed_in("care_coordinator")
        for person in people[1:3]:  # something in "recently viewed by you"
            page.goto(f"{base}/patients/{person}")
        page.goto(f"{base}/patients/{people[0]}")
        if page.locator("form.mark select").count():
            page.locator("form.mark select").first.select_option("contacted")
            page.locator("form.mark input[name=note]").first.fill("left a message")
            page.locator("form.mark button").first.click()
            page.wait_for_load_state()
        page.screenshot(path=str(out / "patient.png"), full_page=True)
        page.goto(f"{base}/patients")
        page.get_by_label("NHS number").fill(format_nhs_number(people[3]))
        page.screenshot(path=str(out / "care-coordinator-search.png"), full_page=True)
        page.goto(f"{base}/no-such-page")
        page.screenshot(path=str(out / "error-404.png"), full_page=True)
        page.close()
        page = signed_in("pcn_team")
        page.goto(f"{base}/cohorts?capacity=5")
        page.screenshot(path=str(out / "pcn-team-lists.png"), full_page=True)
        page.close()
        page = signed_in("analyst")
        page.screenshot(path=str(out / "analyst-model.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="the 40-person test world")
    args = parser.parse_args()
    from riskstrat.config import Settings
    from riskstrat.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        settings = Settings(home=home)
        if args.quick:
            from tests.support.world import publish_world

            publish_world(settings)
        else:
            _real_world(home, args.patients)
        store = Store(settings.serving_database_url)
        run = store.runs.latest()
        assert run is not None
        pcn = sorted(run.pcns or [])[0]
        _, top = store.cohorts.page(run.id, next(iter(run.interventions)), pcn_codes=[pcn],
                                    limit=4)  # fmt: skip
        people = [m.nhs_number for m, _ in top]
        store.dispose()
        keys = _keys(settings, pcn)
        server, thread, base = _serve(settings)
        try:
            _shoot(base, keys, people, args.out)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    print(f"screenshots written to {args.out}")


if __name__ == "__main__":
    main()
