"""The lists: an intervention's cohort for the caller's PCNs (one PCN, one practice), each
person's latest mark, a form to mark them, "hide done", and the CSV and Excel downloads.

PCN teams and care coordinators see the lists of their own PCNs; every list shown or
downloaded is audited exactly like the API.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from riskstrat.cohorts.listing import (
    IDENTIFIER_LABELS,
    about_frame,
    about_rows,
    display_identifier,
    listed_for,
    listing_frame,
    practice_ranks,
    ranking_risks,
    reason_sentence,
    reasons_text,
    write_xlsx,
)
from riskstrat.service.auth import Caller
from riskstrat.service.common import (
    audit,
    capacity_yields,
    intervention_info,
    interventions_of,
    pcn_scope,
    ranked_by_model,
)
from riskstrat.service.deps import SettingsDep, StoreDep
from riskstrat.service.pages.session import (
    PageCaller,
    csrf_token,
    html,
    require_role,
    router,
)
from riskstrat.store import Store
from riskstrat.store.marks import DONE_STATUSES, MARK_STATUSES
from riskstrat.store.records import RunInfo

#: The roles that see lists on the pages (the API's cohort routes are the PCN team's).
LIST_ROLES = ("pcn_team", "care_coordinator")
#: Each mark status as people read it.
STATUS_LABELS = {
    "contacted": "Contacted",
    "reviewed": "Reviewed",
    "declined": "Declined",
    "not_appropriate": "Not appropriate",
}
DONE_WORDS = ", ".join(STATUS_LABELS[s].lower() for s in MARK_STATUSES if s in DONE_STATUSES)

InterventionQuery = Annotated[str | None, Query(pattern=r"^[a-z_]{1,50}$")]
PracticeQuery = Annotated[str | None, Query(pattern=r"^([A-Z][0-9]{5})?$")]
PcnQuery = Annotated[str | None, Query(pattern=r"^(U[0-9]{5})?$")]
CapacityQuery = Annotated[int, Query(ge=1, le=5000)]


def pcn_choices(run: RunInfo, caller: Caller) -> list[str]:
    """The PCNs a caller may pick from on a list: their own, or every PCN in the run for a
    caller who sees all. Empty when there is nothing to choose (one PCN)."""
    if caller.all_pcns:
        found = sorted(run.pcns or [])
    else:
        found = sorted(caller.pcns)
    return found if len(found) > 1 else []


def _cohort_rows(
    request: Request,
    store: Store,
    settings: Any,
    caller: Caller,
    *,
    intervention: str | None,
    pcn: str | None,
    practice: str | None,
    capacity: int,
    hide_done: bool,
    route: str,
) -> dict[str, Any]:
    run = store.runs.latest()
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run has been published yet.")
    interventions = interventions_of(run)
    key = intervention or next(iter(interventions), None)
    if key not in interventions:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "There is no such intervention.")
    scope = pcn_scope(store, run, caller, pcn or None)  # 404 for a PCN outside the scope
    where: dict[str, Any] = {
        "pcn_code": pcn or None, "practice_code": practice or None, "pcn_codes": scope,
        "identifier_kind": run.identifier_kind,
    }  # fmt: skip
    total, rows = store.cohorts.page(
        run.id, key, offset=0, limit=capacity, hide_done=hide_done, **where
    )
    hidden = store.cohorts.page(run.id, key, offset=0, limit=0, **where)[0] - total
    info = intervention_info(run, key)
    summary = {
        **capacity_yields(store, run, info, capacity=capacity, hide_done=hide_done, **where),
        "eligible": total,
    }
    audit(
        request, store, settings, caller, route, [m.nhs_number for m, _ in rows], None,
        identifier_kind=run.identifier_kind,
    )  # fmt: skip
    practices = sorted(
        {m.practice_code for m, _ in store.cohorts.page(
            run.id, key, pcn_code=pcn or None, offset=0, limit=100_000, pcn_codes=scope)[1]}
    )  # fmt: skip
    return {
        "run": run, "interventions": interventions, "info": info, "key": key, "rows": rows,
        "summary": summary, "practices": practices, "hidden": hidden if hide_done else 0,
    }  # fmt: skip


def ranking_view(ranking: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A membership's ranking by another model as the patient page shows it: the model, its
    risk, the expected bed days saved and its reasons in words (None for other lists)."""
    if not ranking:
        return None
    days = ranking.get("expected_bed_days")
    return {
        "model": ranking["model"], "version": ranking.get("version"),
        "label": ranking.get("label", "risk"),
        "percent": 100.0 * min(max(float(ranking["risk"]), 0.0), 1.0),
        "bed_days": None if days is None else float(days),
        "reasons": [reason_sentence(r) for r in ranking.get("reasons") or []],
    }  # fmt: skip


@router.get("/cohorts", response_class=HTMLResponse)
def cohort_page(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    intervention: InterventionQuery = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    capacity: CapacityQuery = 50,
    hide_done: bool = False,
) -> Response:
    require_role(caller, *LIST_ROLES)
    data = _cohort_rows(
        request, store, settings, caller, intervention=intervention, pcn=pcn,
        practice=practice, capacity=capacity, hide_done=hide_done, route="GET /cohorts (page)",
    )  # fmt: skip
    run, key = data["run"], data["key"]
    criteria = data["interventions"][key]["criteria"]
    kind = run.identifier_kind
    people = [m.nhs_number for m, _ in data["rows"]]
    marks = store.marks.latest(people, intervention=key, identifier_kind=kind) if people else {}
    rows = []
    ranks = practice_ranks(
        [m.practice_code for m, _ in data["rows"]], one_practice=bool(practice)
    ) if not hide_done else [None] * len(data["rows"])  # fmt: skip
    for (m, s), practice_rank in zip(data["rows"], ranks, strict=True):
        mark = marks.get((m.nhs_number, key))
        rows.append({
            "rank": m.rank, "practice_rank": practice_rank, "nhs_number": m.nhs_number,
            "nhs_display": display_identifier(m.nhs_number, kind),
            "practice_code": m.practice_code, "risk": m.risk, "benefit": m.expected_benefit,
            "because": "; ".join(criteria.get(k, k) for k in m.criteria),
            "reasons": reasons_text(s.reasons), "mark": mark,
            "done": mark is not None and mark.status in DONE_STATUSES,
            "ranking": ranking_view(m.ranking),
        })  # fmt: skip
    query = {"intervention": key, "pcn": pcn or "", "practice": practice or "",
             "capacity": capacity}  # fmt: skip
    here = "/cohorts?" + urlencode({**query, **({"hide_done": "true"} if hide_done else {})})
    ranking = data["info"].ranking
    return html(
        "cohorts.html", title=data["info"].title, caller=caller, run=run,
        interventions=data["interventions"], info=data["info"], practices=data["practices"],
        practice=practice, pcns=pcn_choices(run, caller), pcn=pcn, capacity=capacity,
        summary=data["summary"], rows=rows, query=urlencode(query),
        identifier_label=IDENTIFIER_LABELS[kind], hide_done=hide_done, hidden=data["hidden"],
        statuses=STATUS_LABELS, done_words=DONE_WORDS, csrf=csrf_token(request), here=here,
        downloads=caller.role == "pcn_team",
        ranking=ranking, ranked=ranked_by_model(ranking),
        by_days="expected_bed_days_saved" in data["summary"]["listed"],
    )  # fmt: skip


@router.get("/cohorts/download")
def cohort_download(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: PageCaller,
    intervention: InterventionQuery = None,
    pcn: PcnQuery = None,
    practice: PracticeQuery = None,
    capacity: CapacityQuery = 50,
    format: Annotated[str, Query(pattern=r"^(csv|xlsx)$")] = "csv",
) -> Response:
    require_role(caller, "pcn_team")
    data = _cohort_rows(
        request, store, settings, caller, intervention=intervention, pcn=pcn,
        practice=practice, capacity=capacity, hide_done=False,
        route=f"GET /cohorts/download ({format})",
    )  # fmt: skip
    kind = data["run"].identifier_kind
    frame = listing_frame(
        data["rows"], data["interventions"][data["key"]]["criteria"], identifier_kind=kind,
        one_practice=bool(practice),
    )  # fmt: skip
    name = f"{data['run'].month:%Y-%m}_{data['key']}_{practice or pcn or 'my-pcns'}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return Response(
            frame.to_csv(index=False).encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    buffer = io.BytesIO()
    about = about_rows(
        run=data["run"], intervention=data["key"], identifier_kind=kind,
        listed_for=listed_for(pcn=pcn, practice=practice, pcns=caller.pcns),
        risks=[m.risk for m, _ in data["rows"]],
        ranking_risks=ranking_risks(data["rows"]),
    )  # fmt: skip
    write_xlsx(frame, buffer, about_frame(about))
    return Response(
        buffer.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers=headers,
    )
