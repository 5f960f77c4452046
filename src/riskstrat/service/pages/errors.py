"""Error pages: what a page answers when something is wrong, in the site's layout.

A page's 403, 404, 422 (a bad query parameter, said in words), 500 (no details, the request
id) and every other error answer as HTML in ``errors.html``, with the signed-in user's header:
never the sign-in form, never raw JSON. Signed-out users are still sent to sign in
(``SignInRequired``). The API (``/api/``), FHIR, ``/health`` and the API docs keep the answers
``riskstrat.service.problems`` gives them: ``install`` wraps those handlers and hands every
request that is not a page's back to them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException

from riskstrat.errors import RiskstratError
from riskstrat.service.auth import Caller
from riskstrat.service.pages.session import HOME_NAMES, home_of, html, session_caller
from riskstrat.service.security import SECURITY_HEADERS

Handler = Callable[[Request, Exception], Awaitable[Response] | Response]
#: Paths that are not pages: their errors keep the API's own answers.
NOT_PAGES = (
    "/api/", "/fhir", "/health", "/docs", "/docs-assets", "/redoc", "/openapi.json",
)  # fmt: skip
TITLES = {
    400: "That request could not be understood",
    401: "Not signed in",
    403: "This page is not open to you",
    404: "Page not found",
    405: "That cannot be done here",
    409: "That cannot be done now",
    413: "That request is too large",
    422: "Something in the request is not right",
    500: "Something went wrong",
    503: "The service cannot answer just now",
}
#: What each page parameter is called, and what it must be, in words.
FIELDS = {
    "capacity": ("Capacity", "a whole number from 1 to 5000"),
    "practice": ("Practice", "a practice ODS code: a capital and five digits, such as A81001"),
    "pcn": ("PCN", "a PCN code: U and five digits, such as U12345"),
    "intervention": ("Intervention", "an intervention's key, such as falls_review"),
    "format": ("Download format", "csv or xlsx"),
    "hide_done": ("Hide done", "true or false"),
    "q": ("Search", "at most 100 characters"),
}  # fmt: skip


def is_page(request: Request) -> bool:
    """True for a request to the pages (anything but the API, FHIR, health and docs)."""
    path = request.url.path
    return not any(path == p or path.startswith(p.rstrip("/") + "/") for p in NOT_PAGES)


def _caller(request: Request) -> Caller | None:
    """The signed-in user, for the page's header; None if there is none or it cannot be
    told (an error page must not fail in turn)."""
    try:
        return session_caller(request, request.app.state.store)
    except Exception:
        return None


def error_page(
    request: Request,
    status_code: int,
    message: str | None,
    *,
    hint: str | None = None,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    caller = _caller(request)
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    response = html(
        "errors.html", status_code, title=TITLES.get(status_code, phrase), caller=caller,
        code=status_code, message=message, hint=hint, problems=problems or [],
        request_id=getattr(request.state, "request_id", None),
        home=home_of(caller) if caller else None,
        home_name=HOME_NAMES.get(caller.role) if caller else None,
    )  # fmt: skip
    for name, value in (headers or {}).items():
        response.headers.setdefault(name, value)
    return response


def _in_words(error: dict[str, Any]) -> str:
    """One broken rule of a request, in words (never the value sent: it may identify
    someone)."""
    loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")]
    name = loc[-1] if loc else "the request"
    label, expected = FIELDS.get(name, (name.replace("_", " ").capitalize(), None))
    if error.get("type") == "string_pattern_mismatch" or (
        expected and "pattern" in str(error.get("msg", ""))
    ):
        return f"{label} is not in the right form: it must be {expected or 'as the form sets'}."
    said = str(error.get("msg", "is not allowed"))
    for prefix in ("Input ", "Value error, "):
        said = said.removeprefix(prefix)
    text = f"{label} {said[:1].lower()}{said[1:]}".rstrip(".") + "."
    return text + (f" It must be {expected}." if expected else "")


_DETAILS: dict[int, str | None] = {404: "There is no page at this address.", 405: None}


def _http_page(request: Request, exc: HTTPException) -> Response:
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == HTTPStatus(exc.status_code).phrase:  # Starlette's own words: say more
        detail = _DETAILS.get(exc.status_code, detail)
    return error_page(request, exc.status_code, detail, headers=getattr(exc, "headers", None))


def _validation_page(request: Request, exc: RequestValidationError) -> Response:
    problems = [_in_words(e) for e in exc.errors()]
    return error_page(
        request, 422, "The address of this page asks for something it cannot show:",
        problems=problems,
        hint="Change the choices on the page and try again, or go back to your home page.",
    )  # fmt: skip


def _riskstrat_page(request: Request, exc: RiskstratError) -> Response:
    if exc.http_status >= 500 and exc.http_status != 503:
        return _server_error_page(request, exc)
    # A class's default hint speaks to the command line (``--help``): pages show only a
    # hint given for this failure.
    hint = exc.hint if exc.hint != type(exc).default_hint else None
    return error_page(request, exc.http_status, str(exc.message), hint=hint)


def _server_error_page(request: Request, _exc: Exception) -> Response:
    response = error_page(
        request, 500, "The page could not be shown. Nothing about the error is shown here; "
        "give the request id below to your administrator.",
    )  # fmt: skip
    # Sent outside the request middleware: these come with the error page itself.
    response.headers.update(SECURITY_HEADERS)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


async def _plain_server_error(_request: Request, _exc: Exception) -> Response:
    """What Starlette answers for an unhandled error anywhere but the pages."""
    return PlainTextResponse("Internal Server Error", status_code=500)


def _page_or(previous: Handler | None, page: Callable[[Request, Any], Response]) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if is_page(request) or previous is None:
            return page(request, exc)
        answer = previous(request, exc)
        return await answer if isinstance(answer, Awaitable) else answer

    return handle


def install(app: FastAPI) -> None:
    """Answer the pages' errors with error pages; everything else as before. Call after
    ``problems.install``, whose handlers this keeps for every path that is not a page."""
    for cls, page in (
        (HTTPException, _http_page),
        (RequestValidationError, _validation_page),
        (RiskstratError, _riskstrat_page),
    ):
        app.add_exception_handler(cls, _page_or(app.exception_handlers.get(cls), page))
    app.add_exception_handler(Exception, _page_or(_plain_server_error, _server_error_page))
