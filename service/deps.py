"""Dependencies the routes declare; tests replace them with ``app.dependency_overrides``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from riskstrat.config import Settings
from riskstrat.registry import ModelRegistry
from riskstrat.store import Store

_bearer = HTTPBearer(auto_error=False, description="The API token `riskstrat serve` prints.")


@dataclass(frozen=True)
class Caller:
    """Who is calling. One shared token for now; named users and roles come later."""

    name: str


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def current_caller(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if (
        credentials is None
        or expected is None
        or not secrets.compare_digest(credentials.credentials.encode(), expected.encode())
    ):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Caller(name="api-token")


CurrentCaller = Annotated[Caller, Depends(current_caller)]
