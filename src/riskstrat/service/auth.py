"""Who may see what: roles, PCN scope, API keys and OIDC bearer tokens.

Two ways in. API keys (``rsk_<prefix>_<secret>``) are made by ``riskstrat users add``, shown
once and stored as a SHA-256 hash: a key carries 256 random bits, so a fast hash is enough
(slow password hashes protect low-entropy secrets). OIDC bearer JWTs (as NHS CIS2 issues)
are checked against a configured issuer, audience and JWKS, and their claims are mapped to a
role and organisations.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from riskstrat.errors import RiskstratError, UsageError

Role = Literal["pcn_team", "care_coordinator", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("pcn_team", "care_coordinator", "analyst", "admin")
ALL_PCNS = "*"
_KEY = re.compile(r"^rsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_PCN = re.compile(r"^U[0-9]{5}$")


class AuthError(RiskstratError):
    """A credential that is missing, malformed, unknown, expired or revoked (401)."""

    http_status = 401
    title = "Not signed in"
    slug = "unauthenticated"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a name, one role and the PCNs in scope."""

    name: str
    role: Role
    pcns: tuple[str, ...]
    via: Literal["api_key", "oidc"]

    @property
    def all_pcns(self) -> bool:
        return ALL_PCNS in self.pcns

    def sees_pcn(self, pcn_code: str) -> bool:
        return self.all_pcns or pcn_code in self.pcns


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    prefix: str
    hash: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"rsk_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, hash=hash_key(key))


def key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def check_pcns(pcns: list[str]) -> list[str]:
    """PCN ODS codes (``U12345``) or ``*`` for every PCN."""
    if not pcns:
        raise UsageError("give at least one --pcn (or --pcn '*' for every PCN)")
    bad = [p for p in pcns if p != ALL_PCNS and not _PCN.match(p)]
    if bad:
        raise UsageError(f"not PCN codes (U followed by 5 digits): {', '.join(bad)}")
    return sorted(set(pcns))


def caller_from_user(user: dict[str, Any], key: str, *, now: datetime | None = None) -> Caller:
    """Check a presented key against its stored user record."""
    now = now or datetime.now(UTC)
    if not secrets.compare_digest(user["key_hash"], hash_key(key)):
        raise AuthError("unknown API key")
    if user["revoked_at"] is not None:
        raise AuthError("API key revoked")
    if user["expires_at"] <= now:
        raise AuthError("API key expired")
    return Caller(name=user["name"], role=user["role"], pcns=tuple(user["pcns"]), via="api_key")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks: str  # https URL, or a local JSON file (tests, air-gapped deployments)
    role_claim: str = "riskstrat_role"
    org_claim: str = "riskstrat_pcns"
    name_claim: str = "sub"
    role_map: tuple[tuple[str, str], ...] = ()
    algorithms: tuple[str, ...] = ("RS256", "ES256")


class OidcVerifier:
    """Verifies OIDC bearer JWTs and maps their claims to a ``Caller``."""

    def __init__(self, config: OidcConfig) -> None:
        import jwt

        self.config = config
        self._jwt = jwt
        if config.jwks.startswith(("https://", "http://")):
            self._client: Any = jwt.PyJWKClient(config.jwks, cache_keys=True, lifespan=300)
            self._keys: Any = None
        else:
            self._client = None
            self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks).read_text()))

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = self._jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if k.key_id == kid:
                return k.key
        raise AuthError("token signed with an unknown key")

    def verify(self, token: str) -> Caller:
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=list(self.config.algorithms),
                audience=self.config.audience,
                issuer=self.config.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        raw_role = claims.get(self.config.role_claim)
        role = dict(self.config.role_map).get(str(raw_role), raw_role)
        if role not in ROLES:
            raise AuthError("token carries no riskstrat role")
        orgs = claims.get(self.config.org_claim) or []
        if isinstance(orgs, str):
            orgs = [orgs]
        pcns = tuple(o for o in orgs if isinstance(o, str) and (_PCN.match(o) or o == ALL_PCNS))
        name = str(claims.get(self.config.name_claim) or claims["sub"])[:200]
        return Caller(name=name, role=role, pcns=pcns, via="oidc")
