"""What every response and log line of the service keeps to: security headers (a
Content-Security-Policy, HSTS over https, ...), request ids that cannot carry an identifier,
the API docs served from local assets under a policy of their own, and server error logs
that name an exception's type, never its text."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from pathlib import Path

from fastapi import FastAPI, HTTPException, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import Scope

#: Sent with every response, whatever made it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
#: The policy of every response that brings none of its own: the API serves JSON, CSV and
#: FHIR, so nothing may load and nothing may frame it. Pages and /docs set their own.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: Strict-Transport-Security, sent only on a request that came over https (a year; not
#: includeSubDomains, which would bind other services on the same domain).
HSTS = "max-age=31536000"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
#: Ten digits in a row, alone or split by '.', '_' or '-' ("999-725-7952"): an NHS number's
#: shape, refused in a client's request id and never generated.
_DIGIT_RUN = re.compile(r"[0-9](?:[._-]?[0-9]){9}")


def new_request_id() -> str:
    """A random request id (32 hex digits) with no ten-digit run."""
    while True:
        candidate = uuid.uuid4().hex
        if _DIGIT_RUN.search(candidate) is None:
            return candidate


def request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` if it is safe to log and audit (8 to 64 of letters,
    digits, '.', '_' and '-', with no ten-digit run that could be an NHS number), else a new
    one. The id is logged and stored with audit records, so nothing else is taken verbatim."""
    if (
        offered is not None
        and _REQUEST_ID.fullmatch(offered) is not None
        and _DIGIT_RUN.search(offered) is None
    ):
        return offered
    return new_request_id()


def over_https(scope: Scope, headers: Headers, *, trust_forwarded_proto: bool) -> bool:
    """Whether the request came over https: its own scheme, or (only when the deployment says
    its proxy sets it, ``RISKSTRAT_TRUST_FORWARDED_PROTO``) the proxy's X-Forwarded-Proto."""
    if scope.get("scheme") == "https":
        return True
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return trust_forwarded_proto and forwarded == "https"


def add_security_headers(out: MutableHeaders, *, https: bool) -> None:
    """The headers every response carries; a Content-Security-Policy the response already has
    (a page's, the docs') is kept."""
    for name, value in SECURITY_HEADERS.items():
        out[name] = value
    if "content-security-policy" not in out:
        out["Content-Security-Policy"] = API_CSP
    if https:
        out["Strict-Transport-Security"] = HSTS


# --- the API docs, from local assets ---------------------------------------------------------

#: Where Swagger UI's own files are served from: the copy of Swagger UI 5 that the
#: fastapi-offline package ships (Swagger UI 4, as in swagger-ui-bundle, cannot draw the
#: OpenAPI 3.1 schema FastAPI writes). Only these files are served.
DOCS_ASSETS = "/docs-assets"
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def _asset_folder() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _script_hashes(html: str) -> str:
    """CSP sources for the page's inline scripts (Swagger UI's start-up call), by hash."""
    bodies = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in bodies
    )


def docs_csp(html: str) -> str:
    """The docs page's policy: its scripts, styles and images from this service only (plus
    the start-up script, by hash), and calls to this service's API only."""
    return (
        f"default-src 'none'; script-src 'self' {_script_hashes(html)}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) from assets this service serves itself, so the page works
    offline and under a policy that loads nothing from elsewhere. Build the app with
    ``docs_url=None``; ReDoc, whose bundle is not shipped, is left off."""
    html = bytes(
        get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        ).body
    ).decode()
    policy = docs_csp(html)
    folder = _asset_folder()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @app.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        media_type = _ASSET_TYPES.get(name)
        if media_type is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(folder / name, media_type=media_type)


# --- server error logs -------------------------------------------------------------------------


class ExceptionTypeOnly(logging.Filter):
    """Replaces a record's traceback by its exception's type: the text of an exception (a
    database error's statement and values, say) may hold an NHS number."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.getMessage().rstrip()} ({record.exc_info[0].__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


#: The server's own logger of unhandled exceptions ("Exception in ASGI application").
SERVER_ERROR_LOGGERS = ("uvicorn.error",)


def quiet_server_errors() -> None:
    """Put :class:`ExceptionTypeOnly` on the server's error logger (once)."""
    for name in SERVER_ERROR_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExceptionTypeOnly) for f in logger.filters):
            logger.addFilter(ExceptionTypeOnly())
