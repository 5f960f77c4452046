"""The application factory: ``uvicorn --factory service.app:create_app``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from riskstrat.config import Settings, get_settings
from riskstrat.registry import ModelRegistry
from riskstrat.store import Store
from service.routes import api, router

_log = logging.getLogger("riskstrat.api")

DESCRIPTION = """
90-day emergency admission risk for the registered population, published monthly by
`riskstrat score`. Every route except `/health` and the docs needs the bearer token that
`riskstrat serve` prints. Patient-level reads are recorded in the access log.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the given settings (the environment's by default)."""
    settings = settings or get_settings()
    app = FastAPI(title="riskstrat", version=metadata.version("riskstrat"), description=DESCRIPTION)
    store = Store(settings.serving_database_url)
    store.create_schema()
    app.state.settings = settings
    app.state.store = store
    app.state.registry = ModelRegistry(
        tracking_uri=settings.tracking_uri, artifact_root=settings.artifact_root
    )
    app.include_router(router)
    app.include_router(api)

    @app.middleware("http")
    async def request_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Logs the route template, never the path: paths can hold NHS numbers.
        request.state.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = route.path if isinstance(route, APIRoute) else "unmatched"
        response.headers["X-Request-ID"] = request.state.request_id[:64]
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        _log.info(
            "request",
            extra={
                "request_id": request.state.request_id[:64],
                "method": request.method,
                "route": template,
                "status": response.status_code,
                "ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )
        return response

    return app
