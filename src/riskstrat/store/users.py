"""The API's callers: users with hashed keys, and the web pages' browser sessions.

A browser session belongs to the user whose key started it: it never outlives that key. It
ends at the key's expiry at the latest (``add_session`` bounds it), and every read of it
(``session``) checks the user's key is still active, so revoking a key, or its expiry, ends
every session it started on the next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, insert, select, update

from riskstrat.errors import ConflictError
from riskstrat.store.records import from_json, user_from_row, utc
from riskstrat.store.schema import api_users, web_sessions

#: Every API request looks its caller up by key prefix: built once, so SQLAlchemy skips
#: rebuilding it on every request (a measurable share of a request's time on 2 cores).
_USER_BY_PREFIX = select(api_users).where(api_users.c.key_prefix == bindparam("prefix"))
#: A browser session with its user's key state: every page request runs it.
_SESSION_WITH_KEY = (
    select(
        web_sessions,
        api_users.c.role.label("user_role"),
        api_users.c.expires_at.label("key_expires_at"),
        api_users.c.revoked_at,
    )
    .select_from(web_sessions.join(api_users, api_users.c.name == web_sessions.c.name))
    .where(web_sessions.c.token_hash == bindparam("token_hash"))
)


class DuplicateUserError(ConflictError, ValueError):
    """A user of that name already exists (a ``ValueError`` too, as it was before)."""

    default_hint = "choose another name, or revoke the existing user first"


class UserRepository:
    """Reads and writes of ``api_users`` and ``web_sessions``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        *,
        name: str,
        role: str,
        pcns: Sequence[str],
        key_prefix: str,
        key_hash: str,
        expires_at: datetime,
        created_by: str,
    ) -> None:
        """Add a user with the hash of their key.

        Raises:
            DuplicateUserError: a user called ``name`` exists already.
        """
        with self.engine.begin() as conn:
            taken = conn.execute(select(api_users.c.id).where(api_users.c.name == name)).first()
            if taken is not None:
                raise DuplicateUserError(f"a user called {name!r} already exists")
            conn.execute(
                insert(api_users).values(
                    name=name,
                    role=role,
                    pcns=list(pcns),
                    key_prefix=key_prefix,
                    key_hash=key_hash,
                    created_at=datetime.now(UTC),
                    created_by=created_by[:200],
                    expires_at=expires_at,
                )
            )

    def by_prefix(self, key_prefix: str) -> dict[str, Any] | None:
        """The user whose key starts with ``key_prefix``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(_USER_BY_PREFIX, {"prefix": key_prefix}).mappings().first()
        return user_from_row(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        """Every user, oldest first (revoked and expired ones too)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_users).order_by(api_users.c.id)).mappings().all()
        return [user_from_row(r) for r in rows]

    def revoke(self, name: str) -> bool:
        """Revoke a user's key now; False if there is no such active user."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_users)
                .where(api_users.c.name == name, api_users.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            conn.execute(delete(web_sessions).where(web_sessions.c.name == name))
        return bool(done.rowcount)

    def add_session(
        self, *, token_hash: str, name: str, role: str, pcns: Sequence[str], expires_at: datetime
    ) -> datetime:
        """Start a browser session for the user ``name`` (clearing expired ones); returns when
        it ends: ``expires_at``, or the user's key's expiry if that comes first.

        Raises:
            ConflictError: ``name`` has no active key (unknown, revoked or expired).
        """
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            user = conn.execute(
                select(api_users.c.expires_at, api_users.c.revoked_at).where(
                    api_users.c.name == name
                )
            ).first()
            key_expires = utc(user.expires_at) if user is not None else None
            if user is None or user.revoked_at is not None or key_expires is None:
                raise ConflictError(f"user {name!r} has no active key to start a session with")
            if key_expires <= now:
                raise ConflictError(f"the key of user {name!r} has expired")
            ends = min(utc(expires_at) or expires_at, key_expires)
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
            conn.execute(
                insert(web_sessions).values(
                    token_hash=token_hash, name=name, role=role, pcns=list(pcns),
                    created_at=now, expires_at=ends,
                )
            )  # fmt: skip
        return ends

    def session(self, token_hash: str) -> dict[str, Any] | None:
        """A live browser session, or None: unknown, expired, or its user's key is revoked or
        expired (checked on every call, in the same query), or the user's role changed."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    _SESSION_WITH_KEY,
                    {"token_hash": token_hash},
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        found = {k: row[k] for k in ("token_hash", "name", "role", "pcns", "created_at")}
        found["pcns"] = list(from_json(found["pcns"]) or [])
        found["created_at"] = utc(found["created_at"])
        found["expires_at"] = utc(row["expires_at"])
        now = datetime.now(UTC)
        key_expires = utc(row["key_expires_at"])
        live = (
            found["expires_at"] is not None
            and found["expires_at"] > now
            and row["revoked_at"] is None
            and key_expires is not None
            and key_expires > now
            and row["user_role"] == found["role"]
        )
        return found if live else None

    def end_session(self, token_hash: str) -> None:
        """End a browser session (log out)."""
        with self.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash))
