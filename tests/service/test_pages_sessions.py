"""A page session never outlives its key: it ends at the key's expiry at the latest, and as
soon as the key is revoked or expires (checked on every request), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from riskstrat.errors import ConflictError
from riskstrat.service.auth import key_prefix
from riskstrat.service.pages.session import COOKIE, SESSION_HOURS
from riskstrat.store import Store
from riskstrat.store.schema import api_users
from tests.support.auth import add_fixed_key, fixed_key
from tests.support.world import PCNS, key_for, sign_in


def _name(role: str, key: str) -> str:
    return f"{role}-{key_prefix(key)}"


def _signed_out(client, path: str = "/cohorts") -> bool:
    response = client.get(path, follow_redirects=False)
    return response.status_code == 303 and response.headers["location"] == "/login"


def test_a_session_ends_when_its_key_is_revoked(served_on_each_store):
    client, settings = served_on_each_store["client"], served_on_each_store["settings"]
    key = key_for("pcn_team", PCNS[0])
    sign_in(client, key)
    assert client.get("/cohorts").status_code == 200
    store = Store(settings.serving_database_url)
    assert store.users.revoke(_name("pcn_team", key))
    store.dispose()
    assert _signed_out(client)


def test_a_session_ends_when_its_key_is_revoked_by_any_means(served_on_each_store):
    """Not only through ``users revoke`` (which also deletes the sessions): every request
    checks the key itself."""
    client, settings = served_on_each_store["client"], served_on_each_store["settings"]
    key = key_for("care_coordinator", PCNS[1])
    sign_in(client, key)
    assert client.get("/patients").status_code == 200
    store = Store(settings.serving_database_url)
    with store.engine.begin() as conn:
        conn.execute(
            update(api_users)
            .where(api_users.c.name == _name("care_coordinator", key))
            .values(revoked_at=datetime.now(UTC))
        )
    store.dispose()
    assert _signed_out(client, "/patients")


def test_a_session_ends_when_its_key_expires(served_on_each_store):
    client, settings = served_on_each_store["client"], served_on_each_store["settings"]
    key = key_for("care_coordinator", PCNS[0])
    sign_in(client, key)
    assert client.get("/patients").status_code == 200
    store = Store(settings.serving_database_url)
    with store.engine.begin() as conn:  # the key's expiry passes while the session is open
        conn.execute(
            update(api_users)
            .where(api_users.c.name == _name("care_coordinator", key))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    store.dispose()
    assert _signed_out(client, "/patients")
    assert client.get("/login").status_code == 200  # and the sign-in form is shown again


def test_a_session_is_bounded_by_its_keys_expiry_at_sign_in(served_on_each_store):
    client, settings = served_on_each_store["client"], served_on_each_store["settings"]
    key = fixed_key(77)
    add_fixed_key(settings, "pcn_team", key, pcns=(PCNS[0],), days=1 / 24)  # an hour left
    response = client.post("/login", content=f"key={key}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"},
                           follow_redirects=False)  # fmt: skip
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    max_age = int(re.search(r"Max-Age=(\d+)", cookie, re.I).group(1))
    assert 3500 < max_age <= 3600 < SESSION_HOURS * 3600
    token = client.cookies[COOKIE]
    store = Store(settings.serving_database_url)
    session = store.users.session(hashlib.sha256(token.encode()).hexdigest())
    user = store.users.by_prefix(key_prefix(key))
    store.dispose()
    assert session is not None and session["expires_at"] <= user["expires_at"]
    # A long-lived key still gives the usual eight hours.
    client.post("/logout")
    response = client.post("/login", content=f"key={key_for('pcn_team', PCNS[0])}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"},
                           follow_redirects=False)  # fmt: skip
    max_age = int(re.search(r"Max-Age=(\d+)", response.headers["set-cookie"], re.I).group(1))
    assert SESSION_HOURS * 3600 - 60 < max_age <= SESSION_HOURS * 3600


def test_a_session_cannot_start_for_a_revoked_user(served):
    settings = served["settings"]
    key = key_for("pcn_team", PCNS[1])
    store = Store(settings.serving_database_url)
    store.users.revoke(_name("pcn_team", key))
    with pytest.raises(ConflictError):
        store.users.add_session(
            token_hash="0" * 64, name=_name("pcn_team", key), role="pcn_team", pcns=[PCNS[1]],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )  # fmt: skip
    assert store.users.session("0" * 64) is None
    store.dispose()
