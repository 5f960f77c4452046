"""Server-rendered pages for people who do not write code, on the same identities and roles.

Signing in takes an API key once and sets a session cookie (HttpOnly, SameSite=Strict); the
cookie holds a random token whose hash is stored, never the key. Every page that shows a
patient is audited exactly like the API.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from riskstrat.cohorts.listing import (
    IDENTIFIER_COLUMNS,
    IDENTIFIER_LABELS,
    display_identifier,
    listing_frame,
    reasons_text,
)
from riskstrat.cohorts.select import capacity_summary, what_changed
from riskstrat.data.contract import PSEUDONYM_PATTERN
from riskstrat.explain.reasons import REASON_LABELS
from riskstrat.modelling.registry import CHAMPION, ModelNotFoundError
from riskstrat.nhs_number import is_valid_nhs_number
from riskstrat.service.auth import AuthError, Caller, caller_from_user, key_prefix
from riskstrat.service.common import audit, intervention_info, interventions_of
from riskstrat.service.deps import RegistryDep, SettingsDep, StoreDep

COOKIE = "riskstrat_session"
SESSION_HOURS = 8
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
pages = APIRouter(include_in_schema=False)


def _html(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    body = _templates.get_template(name).render(**context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignInRequired(Exception):
    """No live session: the handler redirects to the sign-in page."""


def page_caller(request: Request, store: StoreDep) -> Caller:
    token = request.cookies.get(COOKIE)
    session = store.users.session(_hash(token)) if token else None
    if session is None:
        raise SignInRequired
    return Caller(
        name=session["name"], role=session["role"], pcns=tuple(session["pcns"]), via="api_key"
    )


PageCaller = Annotated[Caller, Depends(page_caller)]


def _forbidden(caller: Caller, role: str) -> HTMLResponse | None:
    if caller.role != role:
        return _html(
            "login.html",
            403,
            title="Not for your role",
            caller=caller,
            error=f"This page is for the {role.replace('_', ' ')} role.",
        )
    return None


@pages.get("/", response_class=HTMLResponse)
def home(request: Request, store: StoreDep) -> Response:
    try:
        caller = page_caller(request, store)
    except SignInRequired:
        return RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    target = {"pcn_team": "/cohorts", "analyst": "/model"}.get(caller.role, "/login")
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@pages.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return _html("login.html", title="Sign in", caller=None, error=None)


@pages.post("/login", response_class=HTMLResponse)
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
        return _html(
            "login.html", 401, title="Sign in", caller=None,
            error="That key was not recognised, or it has expired or been revoked.",
        )  # fmt: skip
    token = secrets.token_urlsafe(32)
    store.users.add_session(
        token_hash=_hash(token),
        name=caller.name,
        role=caller.role,
        pcns=caller.pcns,
        expires_at=datetime.now(UTC) + timedelta(hours=SESSION_HOURS),
    )
    target = {"pcn_team": "/cohorts", "analyst": "/model"}.get(caller.role, "/")
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=settings.environment == "production",
        path="/",
    )
    return response


@pages.post("/logout")
def logout(request: Request, store: StoreDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        store.users.end_session(_hash(token))
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response


def _cohort_rows(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: Caller,
    intervention: str | None,
    practice: str | None,
    capacity: int,
    route: str,
) -> dict[str, Any]:
    run = store.runs.latest()
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no run has been published yet")
    interventions = interventions_of(run)
    key = intervention or next(iter(interventions), None)
    if key not in interventions:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such intervention")
    scope = None if caller.all_pcns else list(caller.pcns)
    total, rows = store.cohorts.page(
        run.id, key, practice_code=practice or None, offset=0, limit=capacity, pcn_codes=scope
    )
    risks = store.cohorts.risks(
        run.id, key, practice_code=practice or None, limit=2 * capacity, pcn_codes=scope
    )
    info = intervention_info(run, key)
    summary = {**capacity_summary(risks, capacity=capacity, effect=info.effect), "eligible": total}
    audit(
        request, store, settings, caller, route, [m.nhs_number for m, _ in rows], None,
        identifier_kind=run.identifier_kind,
    )  # fmt: skip
    practices = sorted(
        {m.practice_code for m, _ in store.cohorts.page(
            run.id, key, offset=0, limit=100_000, pcn_codes=scope)[1]}
    )  # fmt: skip
    return {
        "run": run, "interventions": interventions, "info": info, "key": key, "rows": rows,
        "summary": summary, "practices": practices,
    }  # fmt: skip


@pages.get("/cohorts", response_class=HTMLResponse)
def cohort_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    intervention: Annotated[str | None, Query(pattern=r"^[a-z_]{1,50}$")] = None,
    practice: Annotated[str | None, Query(pattern=r"^([A-Z][0-9]{5})?$")] = None,
    capacity: Annotated[int, Query(ge=1, le=5000)] = 50,
) -> Response:
    if (denied := _forbidden(caller, "pcn_team")) is not None:
        return denied
    data = _cohort_rows(
        request, store, settings, caller, intervention, practice, capacity, "GET /cohorts (page)"
    )
    criteria = data["interventions"][data["key"]]["criteria"]
    kind = data["run"].identifier_kind
    rows = [
        {
            "rank": m.rank, "nhs_number": m.nhs_number,
            "nhs_display": display_identifier(m.nhs_number, kind),
            "practice_code": m.practice_code, "risk": m.risk, "benefit": m.expected_benefit,
            "because": "; ".join(criteria.get(k, k) for k in m.criteria),
            "reasons": reasons_text(s.reasons),
        }
        for m, s in data["rows"]
    ]  # fmt: skip
    query = urlencode(
        {"intervention": data["key"], "practice": practice or "", "capacity": capacity}
    )
    return _html(
        "cohorts.html", title=data["info"].title, caller=caller, run=data["run"],
        interventions=data["interventions"], info=data["info"], practices=data["practices"],
        practice=practice, capacity=capacity, summary=data["summary"], rows=rows, query=query,
        identifier_label=IDENTIFIER_LABELS[kind],
    )  # fmt: skip


@pages.get("/cohorts/download")
def cohort_download(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    intervention: Annotated[str | None, Query(pattern=r"^[a-z_]{1,50}$")] = None,
    practice: Annotated[str | None, Query(pattern=r"^([A-Z][0-9]{5})?$")] = None,
    capacity: Annotated[int, Query(ge=1, le=5000)] = 50,
    format: Annotated[str, Query(pattern=r"^(csv|xlsx)$")] = "csv",
) -> Response:
    if (denied := _forbidden(caller, "pcn_team")) is not None:
        return denied
    data = _cohort_rows(
        request, store, settings, caller, intervention, practice, capacity,
        f"GET /cohorts/download ({format})",
    )  # fmt: skip
    kind = data["run"].identifier_kind
    frame = listing_frame(
        data["rows"], data["interventions"][data["key"]]["criteria"], identifier_kind=kind
    )
    name = f"{data['run'].month:%Y-%m}_{data['key']}_{practice or 'my-pcns'}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return Response(
            frame.to_csv(index=False).encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    import pandas as pd

    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="cohort", index=False)
        sheet = writer.sheets["cohort"]
        col = list(frame.columns).index(IDENTIFIER_COLUMNS[kind]) + 1
        for (cell,) in sheet.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = "@"
    return Response(
        buffer.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers=headers,
    )


@pages.get("/patients/{nhs_number}", response_class=HTMLResponse)
def patient_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    nhs_number: str,
) -> Response:
    if caller.role not in ("care_coordinator", "pcn_team"):
        return _html("login.html", 403, title="Not for your role", caller=caller,
                     error="Patient pages are for care coordinators and PCN teams.")  # fmt: skip
    run = store.runs.latest()
    kind = run.identifier_kind if run is not None else "nhs_number"
    # A run of NHS numbers is looked up by valid NHS numbers only; a pseudonymous run by
    # pseudonyms, never checked as NHS numbers.
    well_formed = (
        nhs_number.isdigit() and is_valid_nhs_number(nhs_number)
        if kind == "nhs_number"
        else re.fullmatch(PSEUDONYM_PATTERN, nhs_number) is not None
    )
    score = store.scores.patient(run.id, nhs_number) if run is not None and well_formed else None
    if run is None or score is None or not caller.sees_pcn(score.pcn_code):
        return _html("login.html", 404, title="Not found", caller=caller,
                     error="No risk is published for this patient.")  # fmt: skip
    audit(
        request, store, settings, caller, "GET /patients/{nhs_number} (page)", [nhs_number], None,
        identifier_kind=kind,
    )  # fmt: skip
    interventions = interventions_of(run)
    memberships = [
        {
            "title": interventions.get(m.intervention, {}).get("title", m.intervention),
            "rank": m.rank, "benefit": m.expected_benefit,
            "because": "; ".join(
                interventions.get(m.intervention, {}).get("criteria", {}).get(k, k)
                for k in m.criteria
            ),
        }
        for m in store.cohorts.memberships(run.id, nhs_number)
    ]  # fmt: skip
    changed = None
    previous = store.runs.previous(run.month)
    if previous is not None and previous.identifier_kind != kind:
        previous = None  # the same text names different people: nothing to compare with
    before = store.scores.patient(previous.id, nhs_number) if previous else None
    if previous is not None and before is not None:
        changed = what_changed(
            risk_now=score.risk, contributions_now=score.contributions,
            risk_then=before.risk, contributions_then=before.contributions,
        )  # fmt: skip
        texts = {r["group"]: r["text"] for r in score.reasons}
        for m in changed["reasons_moved"]:
            m["label"] = REASON_LABELS.get(m["group"], m["group"])
            m["text_now"] = texts.get(m["group"])
        changed["previous_month"] = previous.month
    biggest = max([abs(float(r["percentage_points"])) for r in score.reasons] or [1.0])
    return _html(
        "patient.html", title="Patient", caller=caller, run=run, score=score,
        nhs_display=display_identifier(nhs_number, kind), memberships=memberships,
        changed=changed, identifier_label=IDENTIFIER_LABELS[kind],
        bar_scale=200.0 / max(biggest, 1e-9),
    )  # fmt: skip


MEASURES = (
    ("AUROC", "validation_auroc"), ("AUPRC", "validation_auprc"),
    ("Brier score", "validation_brier"), ("Observed / expected", "validation_oe"),
    ("Calibration slope", "validation_calibration_slope"),
    ("Share flagged to catch 70% of admissions", "validation_share_flagged_for_70pct_recall"),
)  # fmt: skip
PLOTS = (
    ("calibration", "Calibration: observed against predicted risk, by tenth of risk"),
    ("subgroups", "Fairness: AUROC and observed/expected by subgroup"),
    ("roc", "ROC curve"),
    ("stability", "Stability across the held-out months"),
)


@pages.get("/model", response_class=HTMLResponse)
def model_page(registry: RegistryDep, settings: SettingsDep, caller: PageCaller) -> Response:
    if (denied := _forbidden(caller, "analyst")) is not None:
        return denied
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        return _html("login.html", 404, title="No model", caller=caller,
                     error="No champion model yet: run riskstrat train and promote.")  # fmt: skip
    return _html("model.html", title="Model", caller=caller, info=info, measures=MEASURES,
                 plots=PLOTS)  # fmt: skip


def _artifact(registry: RegistryDep, settings: SettingsDep, name: str) -> bytes:
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no champion model") from None
    if info.run_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no run")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = registry.download_artifacts(info.run_id, name, Path(tmp))
        except Exception:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such artefact") from None
        return Path(path).read_bytes()


@pages.get("/model/plots/{name}.png")
def model_plot(
    registry: RegistryDep,
    settings: SettingsDep,
    caller: PageCaller,
    name: str,
) -> Response:
    if caller.role != "analyst" or name not in {p for p, _ in PLOTS}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such plot")
    return Response(_artifact(registry, settings, f"plots/{name}.png"), media_type="image/png")


@pages.get("/model/card", response_class=HTMLResponse)
def model_card(registry: RegistryDep, settings: SettingsDep, caller: PageCaller) -> Response:
    if (denied := _forbidden(caller, "analyst")) is not None:
        return denied
    response = HTMLResponse(_artifact(registry, settings, "card/card.html"))
    response.headers["Content-Security-Policy"] = PAGE_CSP.replace(
        "img-src 'self'", "img-src 'self' data:"
    )
    return response
