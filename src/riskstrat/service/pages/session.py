"""Signing in and out of the pages, the session behind every page, and each role's home.

Signing in takes an API key once and sets a session cookie (HttpOnly, SameSite=Strict); the
cookie holds a random token whose hash is stored, never the key. A session ends after
``SESSION_HOURS``, at its key's expiry if that comes first, and as soon as its key is revoked
or expires (``store.users.session`` checks the key on every request). Forms that change
anything carry a per-session CSRF token derived from the session's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from riskstrat.errors import ConflictError
from riskstrat.service.auth import AuthError, Caller, caller_from_user, key_prefix
from riskstrat.service.deps import SettingsDep, StoreDep
from riskstrat.store import Store

COOKIE = "riskstrat_session"
SESSION_HOURS = 8
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Where each role lands after signing in (and at ``/``).
HOMES: dict[str, str] = {
    "care_coordinator": "/patients",
    "pcn_team": "/cohorts",
    "analyst": "/model",
    "admin": "/admin",
}
#: What each role's home is called, for links back to it.
HOME_NAMES: dict[str, str] = {
    "care_coordinator": "Find a patient",
    "pcn_team": "Lists",
    "analyst": "Model",
    "admin": "Home",
}
templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
    autoescape=select_autoescape(["html"]),
)
templates.globals["homes"] = HOMES
templates.globals["home_names"] = HOME_NAMES
router = APIRouter(include_in_schema=False)


def html(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/`` with the pages' Content-Security-Policy."""
    body = templates.get_template(name).render(**context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignInRequired(Exception):
    """No live session: the handler redirects to the sign-in page."""


def session_caller(request: Request, store: Store) -> Caller | None:
    """The caller of the request's session, or None: no cookie, an unknown or ended session,
    or a key that has since been revoked or has expired."""
    token = request.cookies.get(COOKIE)
    session = store.users.session(token_hash(token)) if token else None
    if session is None:
        return None
    return Caller(
        name=session["name"], role=session["role"], pcns=tuple(session["pcns"]), via="api_key"
    )


def page_caller(request: Request, store: StoreDep) -> Caller:
    caller = session_caller(request, store)
    if caller is None:
        raise SignInRequired
    return caller


PageCaller = Annotated[Caller, Depends(page_caller)]


def require_role(caller: Caller, *roles: str) -> None:
    """A 403 page for any role but ``roles``."""
    if caller.role not in roles:
        names = " or ".join(f"the {r.replace('_', ' ')} role" for r in roles)
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"This page is for {names}.")


def csrf_token(request: Request) -> str:
    """The session's CSRF token: a keyed hash of the session's own token, so it needs no
    storage, differs per session and cannot be computed without the (HttpOnly) cookie."""
    token = request.cookies.get(COOKIE, "")
    return hmac.new(token.encode(), b"riskstrat pages csrf", hashlib.sha256).hexdigest()


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse (403) a form whose CSRF token is not the session's."""
    if not sent or not secrets.compare_digest(sent, csrf_token(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "This form has expired or did not come from this site: open the page again and "
            "resend it.",
        )


def home_of(caller: Caller) -> str:
    return HOMES.get(caller.role, "/login")


@router.get("/", response_class=HTMLResponse)
def home(request: Request, store: StoreDep) -> Response:
    caller = session_caller(request, store)
    target = "/login" if caller is None else home_of(caller)
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, store: StoreDep) -> Response:
    caller = session_caller(request, store)
    if caller is not None:  # signed in already: never the sign-in form
        return RedirectResponse(home_of(caller), status.HTTP_303_SEE_OTHER)
    return html("login.html", title="Sign in", caller=None, error=None)


def _refused() -> HTMLResponse:
    return html(
        "login.html", 401, title="Sign in", caller=None,
        error="That key was not recognised, or it has expired or been revoked.",
    )  # fmt: skip


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    prefix = key_prefix(key)
    user = store.users.by_prefix(prefix) if prefix else None
    try:
        if user is None:
            raise AuthError("unknown API key")
        caller = caller_from_user(user, key)
    except AuthError:
        return _refused()
    token = secrets.token_urlsafe(32)
    try:
        # The session ends after SESSION_HOURS, or when the key does if that is sooner.
        ends = store.users.add_session(
            token_hash=token_hash(token),
            name=caller.name,
            role=caller.role,
            pcns=caller.pcns,
            expires_at=datetime.now(UTC) + timedelta(hours=SESSION_HOURS),
        )
    except ConflictError:  # revoked or expired between the check and now
        return _refused()
    response = RedirectResponse(home_of(caller), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(1, int((ends - datetime.now(UTC)).total_seconds())),
        httponly=True,
        samesite="strict",
        secure=settings.environment == "production",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request, store: StoreDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        store.users.end_session(token_hash(token))
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response
