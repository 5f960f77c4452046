"""API keys for tests: made through the store exactly as `riskstrat users add` makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from riskstrat.config import Settings
from riskstrat.service.auth import new_api_key
from riskstrat.store import Store


def add_key(
    settings: Settings,
    role: str,
    pcns: list[str] | tuple[str, ...] = ("*",),
    *,
    name: str | None = None,
    days: float = 30,
) -> dict[str, str]:
    """Create a user and return the Authorization header for their key."""
    new = new_api_key()
    store = Store(settings.serving_database_url)
    store.create_schema()
    store.users.add(
        name=name or f"{role}-{new.prefix}",
        role=role,
        pcns=list(pcns),
        key_prefix=new.prefix,
        key_hash=new.hash,
        expires_at=datetime.now(UTC) + timedelta(days=days),
        created_by="tests",
    )
    store.dispose()
    return {"Authorization": f"Bearer {new.key}"}


def fixed_key(n: int) -> str:
    """A well-formed, test-only key with a known value (so tests can name it as a constant)."""
    return f"rsk_{n:012x}_{'t' * 43}"


def add_fixed_key(
    settings: Settings, role: str, key: str, pcns=("*",), *, days: float = 30
) -> None:
    from riskstrat.service.auth import hash_key, key_prefix

    prefix = key_prefix(key)
    assert prefix is not None
    store = Store(settings.serving_database_url)
    store.create_schema()
    store.users.add(
        name=f"{role}-{prefix}", role=role, pcns=list(pcns), key_prefix=prefix,
        key_hash=hash_key(key), expires_at=datetime.now(UTC) + timedelta(days=days),
        created_by="tests",
    )  # fmt: skip
    store.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
