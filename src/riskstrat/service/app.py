"""The application factory: ``uvicorn --factory riskstrat.service.app:create_app``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskstrat.config import Settings, get_settings
from riskstrat.modelling.registry import registry_for
from riskstrat.service import problems, security
from riskstrat.service.auth import OidcConfig, OidcVerifier
from riskstrat.service.pages import SignInRequired, install_error_pages, pages
from riskstrat.service.routers import (
    audit,
    cohorts,
    fhir,
    health,
    marks,
    models,
    monitoring,
    patients,
    runs,
)
from riskstrat.store import Store

_log = logging.getLogger("riskstrat.api")

DESCRIPTION = """
90-day emergency admission risk for the registered population, published monthly by
`riskstrat score`, with intervention cohorts and reasons. Every route except `/health` and
the docs needs a bearer credential: an API key from `riskstrat users add`, or an OIDC access
token from the configured issuer. Each route says which role may use it; a patient or PCN
outside the caller's PCNs answers 404. Every patient-level read is recorded in the audit
trail before the response is sent.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the given settings (the environment's by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.store.dispose()  # commits any queued audit records, then closes

    app = FastAPI(
        title="riskstrat",
        version=metadata.version("riskstrat"),
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs is served from local assets (``security.install_docs``); no ReDoc.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    store = Store(settings.serving_database_url)
    store.create_schema()
    app.state.settings = settings
    app.state.store = store
    app.state.registry = registry_for(settings)
    app.state.oidc = (
        OidcVerifier(
            OidcConfig(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience or "",
                jwks=settings.oidc_jwks or "",
                role_claim=settings.oidc_role_claim,
                org_claim=settings.oidc_org_claim,
                name_claim=settings.oidc_name_claim,
                role_map=tuple(settings.oidc_role_map.items()),
            )
        )
        if settings.oidc_issuer
        else None
    )
    # In this order the OpenAPI schema lists /health and FHIR first, then /api/v1.
    for module in (health, fhir, cohorts, patients, marks, models, monitoring, runs, audit):
        app.include_router(module.router)
    app.include_router(pages)
    security.install_docs(app)
    problems.install(app)
    install_error_pages(app)  # pages answer errors as pages; the rest as above
    security.quiet_server_errors()

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, _exc: SignInRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    # No CORS middleware: browsers on other origins cannot call the API (the default).

    app.add_middleware(
        RequestMiddleware,
        max_bytes=settings.max_request_bytes,
        trust_forwarded_proto=settings.trust_forwarded_proto,
    )
    return app


class RequestMiddleware:
    """Request ids, security headers, the body-size limit and one JSON log line per request.

    Plain ASGI (no ``BaseHTTPMiddleware``): it adds no task or copy per request. It logs the
    route template, never the path, because paths can hold NHS numbers.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, trust_forwarded_proto: bool = False
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.trust_forwarded_proto = trust_forwarded_proto

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = Headers(scope=scope)
        # A client's id is logged and audited, so only a safe one is kept (security.py).
        request_id = security.request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        https = security.over_https(
            scope, headers, trust_forwarded_proto=self.trust_forwarded_proto
        )
        status_code = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = request_id
                security.add_security_headers(out, https=https)
            await send(message)

        length = headers.get("content-length")
        too_big = (
            length is not None and (not length.isdigit() or int(length) > self.max_bytes)
        ) or (length is None and "chunked" in headers.get("transfer-encoding", ""))
        if too_big:
            response = JSONResponse(
                {"detail": f"request bodies are limited to {self.max_bytes} bytes"},
                status_code=413,
            )
            await response(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
        route = scope.get("route")
        _log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": scope.get("method"),
                "route": route.path if isinstance(route, APIRoute) else "unmatched",
                "status": status_code,
                "ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )
