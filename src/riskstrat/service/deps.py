"""Dependencies the routes declare; tests replace them with ``app.dependency_overrides``.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, and
a dozen thread hops per request cost more than the work itself. The one that reads the
database (the key lookup) takes a fraction of a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from riskstrat.config import Settings
from riskstrat.modelling.registry import ModelRegistry
from riskstrat.service.auth import (
    AuthError,
    Caller,
    OidcVerifier,
    Role,
    caller_from_user,
    key_prefix,
)
from riskstrat.store import Store

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `riskstrat users add`, or an OIDC access token (JWT).",
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_oidc(request: Request) -> OidcVerifier | None:
    verifier: OidcVerifier | None = request.app.state.oidc
    return verifier


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
OidcDep = Annotated[OidcVerifier | None, Depends(get_oidc)]


def _unauthorised(detail: str = "a valid API key or access token is required") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def current_caller(
    request: Request,
    store: StoreDep,
    oidc: OidcDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The authenticated caller, from an API key or an OIDC JWT; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorised()
    token = credentials.credentials
    try:
        prefix = key_prefix(token)
        if prefix is not None:
            user = store.users.by_prefix(prefix)
            if user is None:
                raise AuthError("unknown API key")
            caller = caller_from_user(user, token)
        elif oidc is not None and token.count(".") == 2:
            caller = oidc.verify(token)
        else:
            raise AuthError("not an API key or a token from the configured issuer")
    except AuthError:
        raise _unauthorised() from None
    request.state.caller = caller
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def require(*roles: Role) -> Callable[[Caller], Coroutine[Any, Any, Caller]]:
    """A dependency that admits only ``roles`` (403 for any other role)."""

    async def check(caller: CurrentCaller) -> Caller:
        if caller.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"the {caller.role} role cannot use this route",
            )
        return caller

    return check


PcnTeam = Annotated[Caller, Depends(require("pcn_team"))]
CareCoordinator = Annotated[Caller, Depends(require("care_coordinator"))]
Analyst = Annotated[Caller, Depends(require("analyst"))]
Admin = Annotated[Caller, Depends(require("admin"))]
AnyRole = CurrentCaller
